"""Call a V2 (Open Inference Protocol) server with the ecosystem's own clients, unmodified:
Triton's `tritonclient.http` and KServe's `InferenceRESTClient`. Runs in the clients' virtualenv
(tests.support.venvs.clients_python); prints what each client got, as JSON, for the test to judge.

    python v2clients.py URL MODEL ROWS.json OUT.json

ROWS.json: {"numeric": [names], "categorical": [names], "rows": [{feature: value}, ...],
"version": "1", "sticky_key": "customer_id"}.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np


def columns(spec: dict[str, Any]) -> list[tuple[str, str, np.ndarray]]:
    """One (name, datatype, array) per feature, as a user would build them from a DataFrame."""
    rows = spec["rows"]
    found = []
    for name in spec["numeric"]:
        found.append((name, "FP64", np.array([r[name] for r in rows], dtype=np.float64)))
    for name in spec["categorical"]:
        found.append((name, "BYTES", np.array([str(r[name]) for r in rows], dtype=np.object_)))
    return found


def with_triton(url: str, model: str, spec: dict[str, Any]) -> dict[str, Any]:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url=url.removeprefix("http://"))
    got: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "server": client.get_server_metadata(),
        "model_ready": client.is_model_ready(model),
        "version_ready": client.is_model_ready(model, spec["version"]),
        "unknown_ready": client.is_model_ready("nobody-here"),
        "metadata": client.get_model_metadata(model),
        "version_metadata": client.get_model_metadata(model, spec["version"]),
    }

    def inputs(binary: bool, shape_1: bool = False) -> list[Any]:
        made = []
        for name, datatype, array in columns(spec):
            shaped = array.reshape(-1, 1) if shape_1 else array
            tensor = httpclient.InferInput(name, list(shaped.shape), datatype)
            tensor.set_data_from_numpy(shaped, binary_data=binary)
            made.append(tensor)
        return made

    def result(answer: Any) -> dict[str, Any]:
        response = answer.get_response()
        return {
            "predict": answer.as_numpy("predict").tolist(),
            "predict_proba": answer.as_numpy("predict_proba").tolist(),
            "parameters": response.get("parameters"),
            "model_version": response.get("model_version"),
            "outputs": [{k: v for k, v in o.items() if k != "data"} for o in response["outputs"]],
        }

    # The client's defaults: binary tensors both ways.
    got["binary"] = result(client.infer(model, inputs(binary=True), request_id="triton-binary"))
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in ("predict", "predict_proba")]
    got["json"] = result(
        client.infer(model, inputs(binary=False, shape_1=True), outputs=outputs, request_id="triton-json")
    )
    got["pinned"] = result(client.infer(model, inputs(binary=False), model_version=spec["version"]))
    try:
        broken = inputs(binary=False)[1:]  # the first feature left out
        client.infer(model, broken)
        got["missing"] = None
    except InferenceServerException as exc:
        got["missing"] = {"status": exc.status(), "message": exc.message()}
    client.close()
    return got


async def with_kserve(url: str, model: str, spec: dict[str, Any]) -> dict[str, Any]:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    got: dict[str, Any] = {
        "live": await client.is_server_live(url),
        "ready": await client.is_server_ready(url),
        "model_ready": await client.is_model_ready(url, model),
    }
    tensors = []
    for name, datatype, array in columns(spec):
        tensor = InferInput(name=name, shape=list(array.shape), datatype=datatype)
        tensor.set_data_from_numpy(array, binary_data=False)
        tensors.append(tensor)
    request = InferRequest(model_name=model, infer_inputs=tensors, request_id="kserve-1")
    response = await client.infer(url, request, model_name=model)
    by_name = {o.name: o for o in response.outputs}
    got["infer"] = {
        "id": response.id,
        "parameters": {k: v for k, v in (response.parameters or {}).items()},
        "predict": by_name["predict"].as_numpy().tolist(),
        "predict_proba": by_name["predict_proba"].as_numpy().tolist(),
    }
    await client.close()
    return got


def main() -> None:
    url, model, rows_file, out = sys.argv[1:5]
    spec = json.loads(open(rows_file).read())
    got = {"triton": with_triton(url, model, spec), "kserve": asyncio.run(with_kserve(url, model, spec))}
    with open(out, "w") as handle:
        json.dump(got, handle, default=str)


if __name__ == "__main__":
    main()
