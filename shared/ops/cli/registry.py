"""`modelbus apply`, `models`, `lineage`, `rollout`, `retrain`, `audit`: the registry's API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from shared.ops.cli.app import Reason, app, call_api, ref_or_exit, run
from shared.ops.cli.render import console, err, metrics_line, say, table

models_app = typer.Typer(help="Models and versions in the registry.", no_args_is_help=True)
rollout_app = typer.Typer(help="Command a model's rollout (operator).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(rollout_app, name="rollout")


@app.command("apply")
def apply(
    file: Annotated[Path, typer.Option("--file", "-f", help="Spec YAML file, or - for stdin.")],
    reason: Reason = "",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only validate, locally.")] = False,
) -> None:
    """Validate a model spec and apply it (admin): a changed spec becomes a new revision."""

    from shared.contract.specparse import SpecError
    from shared.runtime.specfile import load_spec

    text = sys.stdin.read() if str(file) == "-" else file.read_text() if file.is_file() else None
    if text is None:
        err.print(f"no file at {file}", markup=False)
        raise typer.Exit(2)
    try:
        spec = load_spec(text)
    except SpecError as exc:
        err.print(f"{file}: {exc}", markup=False)
        raise typer.Exit(2) from None
    if dry_run:
        say(f"{file}: valid spec for model {spec.model} (sha256 {spec.sha256()[:12]})")
        return
    result = call_api("POST", "/v1/specs", json={"spec_yaml": text, "reason": reason})
    if result["changed"]:
        say(f"{result['model']}: revision {result['revision']} applied (sha256 {result['sha256'][:12]})")
    else:
        say(f"{result['model']}: unchanged (revision {result['revision']} is the same spec)")


@models_app.command("ls")
def models_ls(
    contains: Annotated[str | None, typer.Argument(help="Only models whose name contains this.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List models: latest version, aliases, versions per status, spec revision."""
    import json

    models = [m.model_dump(mode="json") for m in run(lambda mb: mb.models(contains))]
    if as_json:
        say(json.dumps(models, indent=2))
        return
    table(
        ["MODEL", "WORKSPACE", "LATEST", "ALIASES", "STATUSES", "SPEC", "DATASET", "UPDATED"],
        [
            [
                m["name"],
                m.get("workspace", "default"),
                m["latest_version"] or "-",
                " ".join(f"{a}={v}" for a, v in sorted(m["aliases"].items())) or "-",
                " ".join(f"{s}:{n}" for s, n in sorted(m["statuses"].items())) or "-",
                m["spec_revision"] or "-",
                m["dataset"] or "-",
                m["updated_at"][:19],
            ]
            for m in models
        ],
    )


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@VERSION or NAME@ALIAS.")],
    status: Annotated[str | None, typer.Option(help="With NAME: only versions with this status.")] = None,
    tag: Annotated[str | None, typer.Option(help="With NAME: only versions with tag KEY or KEY=VALUE.")] = None,
    metric: Annotated[str | None, typer.Option(help="With NAME: e.g. accuracy>=0.8.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a model and its versions, or one version in full."""
    import json

    parsed = ref_or_exit(ref)
    if parsed.version is None and parsed.alias is None:
        model = call_api("GET", f"/v1/models/{parsed.model}")
        versions = call_api(
            "GET", f"/v1/models/{parsed.model}/versions", params={"status": status, "tag": tag, "metric": metric}
        )
        if as_json:
            say(json.dumps({"model": model, "versions": versions}, indent=2))
            return
        aliases = " ".join(f"{a}={v}" for a, v in sorted(model["aliases"].items())) or "none"
        say(f"{model['name']}  spec revision {model['spec_revision'] or '-'}  dataset {model['dataset'] or '-'}")
        say(f"aliases: {aliases}")
        table(
            ["VERSION", "STATUS", "ALIASES", "ESTIMATOR", "METRICS", "DATASET", "CREATED"],
            [
                [
                    v["version"],
                    v["status"],
                    ",".join(v["aliases"]) or "-",
                    v["estimator"].rsplit(".", 1)[-1],
                    metrics_line(v["metrics"]),
                    trained_on(v),
                    v["created_at"][:19],
                ]
                for v in versions
            ],
        )
        return
    version = call_api("GET", f"/v1/models/{parsed.model}/versions/{parsed.version or parsed.alias}")
    if as_json:
        say(json.dumps(version, indent=2))
        return
    say(f"{version['model']}@{version['version']}  {version['status']}: {version['status_reason']}")
    for label, value in (
        ("aliases", ", ".join(version["aliases"]) or "-"),
        ("estimator", version["estimator"]),
        ("params", json.dumps(version["params"], sort_keys=True)),
        ("metrics", metrics_line(version["metrics"])),
        ("dataset", f"{version['dataset']}@{trained_on(version)}"),
        ("run", version["run_id"]),
        ("code", version["code_version"]),
        ("spec", f"revision {version['spec_revision']}"),
        ("tags", " ".join(f"{k}={v}" for k, v in sorted(version["tags"].items())) or "-"),
        ("registered", version["created_at"]),
    ):
        say(f"  {label:<11}{value}")
    for artifact in version["artifacts"]:
        say(f"  artifact   {artifact['name']}: {artifact['uri']} sha256 {artifact['sha256'][:16]}…")


@models_app.command("approve")
def models_approve(ref: Annotated[str, typer.Argument(help="NAME@VERSION.")], reason: Reason = "") -> None:
    """Approve a version held for review (operator); its rollout starts."""
    parsed = ref_or_exit(ref)
    done = run(lambda mb: mb.approve(f"{parsed.model}@{parsed.version}", reason))
    say(f"approved {done.target} (RolloutCommanded {done.event_id})")


@models_app.command("reject")
def models_reject(ref: Annotated[str, typer.Argument(help="NAME@VERSION.")], reason: Reason = "") -> None:
    """Reject a version that is not serving (operator)."""
    parsed = ref_or_exit(ref)
    done = run(lambda mb: mb.reject(f"{parsed.model}@{parsed.version}", reason))
    say(f"rejected {done.target}")


@models_app.command("alias")
def models_alias(
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS.")],
    version: Annotated[int | None, typer.Argument(help="Version to point at; omit with --delete.")] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
    reason: Reason = "",
) -> None:
    """Set or remove an alias of your own (operator); champion and challenger move with rollouts."""
    model, _, alias = ref.partition("@")
    if not alias or (version is None) != delete:
        err.print("usage: modelbus models alias NAME@ALIAS VERSION | NAME@ALIAS --delete")
        raise typer.Exit(2)
    if delete:
        call_api("DELETE", f"/v1/models/{model}/aliases/{alias}", params={"reason": reason})
        say(f"removed {model}@{alias}")
    else:
        call_api("PUT", f"/v1/models/{model}/aliases/{alias}", json={"version": version, "reason": reason})
        say(f"{model}@{alias} -> {version}")


@models_app.command("tag")
def models_tag(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION.")],
    tag: Annotated[str, typer.Argument(help="KEY=VALUE to set, or KEY with --delete.")],
    delete: Annotated[bool, typer.Option("--delete", help="Remove the tag.")] = False,
    reason: Reason = "",
) -> None:
    """Set or remove a tag on a version (operator)."""
    parsed = ref_or_exit(ref)
    key, sep, value = tag.partition("=")
    path = f"/v1/models/{parsed.model}/versions/{parsed.version}/tags/{key}"
    if delete:
        call_api("DELETE", path, params={"reason": reason})
        say(f"removed tag {key} from {parsed}")
    elif not sep:
        err.print("a tag to set looks like KEY=VALUE")
        raise typer.Exit(2)
    else:
        call_api("PUT", path, json={"value": value, "reason": reason})
        say(f"{parsed} tagged {key}={value}")


@app.command("lineage")
def lineage(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION or NAME@ALIAS.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a version's lineage as a tree: data, run, version, evaluations, rollouts, drift and alerts."""
    import json

    from rich.text import Text
    from rich.tree import Tree

    parsed = ref_or_exit(ref)
    found = call_api("GET", f"/v1/models/{parsed.model}/versions/{parsed.version or parsed.alias or 'latest'}/lineage")
    if as_json:
        say(json.dumps(found, indent=2))
        return
    v, data, run, spec = found["version"], found["dataset"], found["run"], found["spec"]
    root = Tree(Text(f"{v['model']}@{v['version']}  [{v['status']}] {v['status_reason']}"))
    if data:
        node = root.add(Text(f"dataset {data['name']}@{data['version']}  {data['uri']}"))
        node.add(Text(f"sha256 {data['sha256'] or '-'}  rows {data['row_count'] or '-'}  from {data['producer']}"))
        feedback = data.get("lineage")
        if feedback:
            node.add(
                Text(
                    f"production feedback: {feedback['feedback_rows']} labelled rows served by "
                    f"v{', v'.join(str(n) for n in feedback['versions'])} from {feedback['served_from'][:19]} "
                    f"to {feedback['served_to'][:19]}, {len(feedback['windows'])} windows, "
                    f"{len(feedback['label_batches'])} label batches"
                    + (
                        f", +{feedback['mixed_rows']} rows of {feedback['base_version']}"
                        if feedback["mixed_rows"]
                        else ""
                    )
                )
            )
    else:
        root.add(Text(f"dataset {v['dataset']}@{v['dataset_version']} (not recorded)"))
    features = (v.get("manifest") or {}).get("features_from")
    if features:
        node = root.add(
            Text(
                f"features from {features['store']}: {len(features['features'])} by {features['entity']} "
                f"as of {features['event_timestamp']} (missing entity: {features['on_missing']})"
            )
        )
        node.add(Text(f"registry sha256 {features['registry_sha256'][:12]}"))
        for view in features["views"]:
            node.add(Text(f"view {view}  offline source sha256 {features['sources'][view][:12]}"))
    if spec:
        root.add(Text(f"spec revision {spec['revision']}  sha256 {spec['sha256'][:12]}  by {spec['applied_by']}"))
    if run:
        node = root.add(Text(f"training run {run['run_id']}  {run['status']}  trigger {run['trigger'] or '-'}"))
        if run["training_seconds"] is not None:
            node.add(Text(f"fit {run['training_seconds']:.1f} s  code {run['code_version'] or '-'}"))
        for candidate in run["candidates"]:
            if isinstance(candidate, dict):
                node.add(Text(f"candidate {candidate['estimator'].rsplit('.', 1)[-1]}  score {candidate['score']:.4g}"))
    node = root.add(Text(f"version {v['version']}  {v['estimator'].rsplit('.', 1)[-1]}  {metrics_line(v['metrics'])}"))
    for artifact in v["artifacts"]:
        node.add(Text(f"{artifact['name']}  {artifact['uri']}  sha256 {artifact['sha256'][:12]}"))
    for evaluation in found["evaluations"]:
        node = root.add(
            Text(
                f"evaluation {evaluation['decision']}  vs champion {evaluation['champion_version'] or '-'}  "
                f"{evaluation['test_rows']} test rows"
            )
        )
        for gate in evaluation["gates"]:
            mark = "pass" if gate["passed"] else "FAIL"
            node.add(
                Text(
                    f"{mark} {gate['name']}: {gate['metric']} {gate['value']} {gate['comparator']} {gate['threshold']}"
                )
            )
    if found["rollouts"]:
        node = root.add(Text(f"rollout {found['rollouts'][0]['rollout_id']}"))
        for step in found["rollouts"]:
            split = " ".join(f"v{t['version']}={t['percent']:g}%" for t in step["traffic"])
            node.add(
                Text(
                    f"{step['occurred_at'][11:19]} {step['from_state']} -> {step['to_state']}"
                    f"  {split}  {step['reason']}"
                )
            )
    for item in found["history"]:
        root.add(Text(f"{item['kind']}  {item['occurred_at'][:19]}  {item['summary']}"))
    console.print(root)


Version = Annotated[int | None, typer.Option("--version", "-v", help="Version concerned (required to start).")]
ROLLOUT_COMMANDS = {
    "start": "Start rolling out an approved version (--version).",
    "promote": "Send all traffic to the candidate now.",
    "pause": "Hold the rollout at its current step.",
    "resume": "Resume a paused rollout.",
    "rollback": "Put all traffic back on the previous champion.",
}


def _rollout_command(command: str) -> None:
    def run(
        name: Annotated[str, typer.Argument(help="Model name.")], version: Version = None, reason: Reason = ""
    ) -> None:
        if command == "start" and version is None:
            err.print("starting a rollout needs --version")
            raise typer.Exit(2)
        body = {"version": version, "reason": reason}
        done = call_api("POST", f"/v1/models/{name}/rollout/{command}", json=body)
        say(f"{command} {name}{f'@{version}' if version else ''}: RolloutCommanded {done['event_id']}")

    rollout_app.command(command, help=ROLLOUT_COMMANDS[command])(run)


for _command in ROLLOUT_COMMANDS:
    _rollout_command(_command)


@app.command("retrain")
def retrain(
    name: Annotated[str, typer.Argument(help="Model name.")],
    dataset_version: Annotated[str | None, typer.Option(help="Dataset version; the latest if absent.")] = None,
    reason: Reason = "",
) -> None:
    """Ask for the model to be trained again (operator)."""
    done = run(lambda mb: mb.retrain(name, dataset_version=dataset_version, reason=reason)).model_dump(mode="json")
    say(f"retrain of {name} requested: RetrainRequested {done['event_id']}")


@app.command("audit")
def audit(
    target: Annotated[str | None, typer.Option(help="A model (with its versions) or NAME@VERSION.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action.")] = None,
    limit: Annotated[int, typer.Option(help="Most entries shown.")] = 50,
) -> None:
    """The audit log, newest first."""
    found = run(lambda mb: mb.audit(target=target, actor=actor, action=action, limit=limit))
    entries = [e.model_dump(mode="json") for e in found]
    table(
        ["#", "AT", "ACTOR", "ROLE", "ACTION", "TARGET", "OUTCOME", "REASON"],
        [
            [
                e["id"],
                e["at"][:19],
                e["actor"],
                e["role"],
                e["action"],
                e["target"],
                e["outcome"] if e["outcome"] == "ok" else "refused: " + e["detail"].get("error", "").splitlines()[0],
                e["reason"],
            ]
            for e in entries
        ],
    )


def trained_on(version: dict[str, Any]) -> str:
    """The dataset version a model version was trained on, marked when it is production feedback."""
    feedback = (version.get("manifest") or {}).get("trigger") == "feedback"
    return str(version["dataset_version"]) + (" (feedback)" if feedback else "")
