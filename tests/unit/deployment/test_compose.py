"""docker-compose.yml and the Dockerfile, checked the way Docker would read them (no Docker here):
the Compose Specification's JSON schema, and every setting, command and port they name."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from shared.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
# The Compose Specification's schema, from github.com/compose-spec/compose-go/v2 v2.16.2 (schema/).
COMPOSE_SCHEMA = json.loads((ROOT / "tests/schemas/compose-spec.json").read_text())
MODELBUS_SERVICES = {
    "registry": ("services.registry", 8080),
    "trainer": ("services.trainer", 9000),
    "evaluator": ("services.evaluator", 9000),
    "deployer": ("services.deployer", 9000),
    "serving": ("services.deployer.serving", 8081),
    "monitor": ("services.monitor", 9000),
    "alerter": ("services.alerter", 8082),
}
IMAGE_ONLY = {"MODELBUS_HEALTHCHECK_PORT"}  # read by the image's HEALTHCHECK, not by the settings


def compose() -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return found


def problems(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.validators.validator_for(COMPOSE_SCHEMA)(COMPOSE_SCHEMA)
    return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in validator.iter_errors(document)]


def dockerfile_env() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    final = text.split("\nFROM ")[-1]
    pairs: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            pairs.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return pairs


def test_the_compose_file_follows_the_compose_specification() -> None:
    assert problems(compose()) == []


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda d: d["services"]["registry"].update(ports=8080), "services.registry.ports"),
        (lambda d: d["services"]["trainer"]["depends_on"]["topics"].update(condition="service_ready"), "condition"),
        (lambda d: d.update(servics={}), "servics"),
    ],
)
def test_a_broken_compose_file_is_refused(breakage: Any, expected: str) -> None:
    broken = copy.deepcopy(compose())
    breakage(broken)
    found = problems(broken)
    assert found and any(expected in p for p in found), found


def test_every_modelbus_container_runs_a_real_entrypoint_with_settings_that_exist() -> None:
    services = compose()["services"]
    fields = {f"MODELBUS_{name.upper()}" for name in Settings.model_fields}
    for name, (module, port) in MODELBUS_SERVICES.items():
        service = services[name]
        assert service["command"] == [module]
        assert importlib.util.find_spec(module) is not None, module
        environment = {**dockerfile_env(), **service["environment"]}
        unknown = {k for k in environment if k.startswith("MODELBUS_")} - fields - IMAGE_ONLY
        assert unknown == set(), f"{name}: not settings: {unknown}"
        assert int(environment["MODELBUS_HEALTHCHECK_PORT"]) == port, name
        for other, condition in service["depends_on"].items():
            assert other in services, f"{name} depends on {other}, which is not a service"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[other], other
    one_shot = {name: services[name]["command"] for name in ("migrations", "topics")}
    assert one_shot == {"migrations": ["shared.ops.cli", "db", "upgrade"], "topics": ["shared.ops.cli", "topics"]}
    assert importlib.util.find_spec("shared.ops.cli") is not None


def test_the_settings_ports_and_the_images_health_ports_agree() -> None:
    defaults = Settings()
    image = dockerfile_env()
    assert (defaults.registry_port, defaults.serving_port, defaults.alerter_port) == (8080, 8081, 8082)
    assert image["MODELBUS_HEALTH_PORT"] == image["MODELBUS_HEALTHCHECK_PORT"] == "9000"
    hosts = {image[f"MODELBUS_{n}_HOST"] for n in ("REGISTRY", "SERVING", "ALERTER", "HEALTH")}
    assert hosts == {"0.0.0.0"}  # noqa: S104 - inside a container, reachable from its network
    scraped = yaml.safe_load(compose()["configs"]["prometheus"]["content"])["scrape_configs"][0]["static_configs"]
    targets = set(scraped[0]["targets"])
    assert targets == {f"{name}:{port}" for name, (_, port) in MODELBUS_SERVICES.items()}


def test_grafana_is_provisioned_with_the_dashboard_and_prometheus_scrapes_only_the_platform() -> None:
    document = compose()
    configs = document["configs"]
    mounted = {c["source"]: c["target"] for c in document["services"]["grafana"]["configs"]}
    dashboard = ROOT / configs["grafana-dashboard"]["file"]
    assert json.loads(dashboard.read_text())["uid"] == "modelbus"
    providers = yaml.safe_load(configs["grafana-dashboards"]["content"])["providers"]
    assert Path(mounted["grafana-dashboard"]).parent == Path(providers[0]["options"]["path"])
    assert mounted["grafana-dashboards"].startswith("/etc/grafana/provisioning/dashboards/")
    jobs = yaml.safe_load(configs["prometheus"]["content"])["scrape_configs"]
    # The consumer lag comes from the services themselves (modelbus_consumer_lag), no exporter.
    assert [j["job_name"] for j in jobs] == ["modelbus"]


def test_the_image_is_multi_stage_pinned_and_runs_as_a_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    assert len(bases) == 2 and all(re.search(r":\d+\.\d+\.\d+-", b) for b in bases), bases
    final = text.split("\nFROM ")[-1]
    assert re.search(r"^USER 10001:10001$", final, flags=re.MULTILINE)
    assert "HEALTHCHECK" in final and 'ENTRYPOINT ["python", "-m"]' in final
    assert "apt-get" not in final and "gcc" not in final, "no build tools in the final stage"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".modelbus", "tests"} <= set(ignored)


def test_the_feast_repo_is_mounted_where_the_services_read_it_and_feast_accepts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feast.repo_config import load_repo_config

    found = compose()
    configs = found["configs"]
    folder = found["x-modelbus-env"]["MODELBUS_FEAST_REPO"]
    for name in ("registry", "trainer", "deployer", "serving", "feast-apply"):
        targets = {c["target"]: c["source"] for c in found["services"][name]["configs"]}
        assert targets[f"{folder}/feature_store.yaml"] == "feast-store", name
        for target, source in targets.items():
            (tmp_path / Path(target).name).write_text((ROOT / configs[source]["file"]).read_text())
    assert found["services"]["feast-apply"]["command"] == ["shared.ops.cli", "feast", "apply", "--no-example"]
    monkeypatch.setenv("MODELBUS_FEAST_POSTGRES_PASSWORD", "pw")
    config = load_repo_config(tmp_path, tmp_path / "feature_store.yaml")
    assert (config.online_store.type, config.offline_store.type, config.registry.registry_type) == (
        "postgres", "postgres", "sql",
    )  # fmt: skip
    assert config.online_store.host == "postgres" == found["services"]["postgres"].get("hostname", "postgres")
