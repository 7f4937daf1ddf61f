"""`modelbus`: the command line of producers and ops."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from shared.settings import Settings, get_settings

app = typer.Typer(help="modelbus: a model's whole life as durable, traced Kafka events.", no_args_is_help=True)
stack_app = typer.Typer(help="The local stack: Kafka, PostgreSQL, S3 server, trace receiver.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
schemas_app = typer.Typer(help="JSON Schemas and the AsyncAPI document in schemas/.", no_args_is_help=True)
publish_app = typer.Typer(help="Publish events, validated before sending.", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter topic.", no_args_is_help=True)
models_app = typer.Typer(help="Models and versions in the registry.", no_args_is_help=True)
rollout_app = typer.Typer(help="Command a model's rollout (operator).", no_args_is_help=True)
alerts_app = typer.Typer(help="Alerts, acknowledgements and silences (the alerter's API).", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(db_app, name="db")
app.add_typer(schemas_app, name="schemas")
app.add_typer(publish_app, name="publish")
app.add_typer(dlq_app, name="dlq")
app.add_typer(models_app, name="models")
app.add_typer(rollout_app, name="rollout")
app.add_typer(alerts_app, name="alerts")
# Piped output (grep, files, tests) is never squeezed to 80 columns: tables and trees keep whole values.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def say(line: str) -> None:
    """Print a progress line as it is (no markup: component names are in brackets)."""
    console.print(line, markup=False)


def _settings() -> Settings:
    try:
        return get_settings()
    except Exception as exc:
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None


@stack_app.command("up")
def stack_up() -> None:
    """Start the local stack (idempotent), create topics and bring the schema up to date."""
    from shared import stack

    try:
        stack.up(_settings(), say=say)
    except stack.StackError as exc:
        err.print(f"[red]stack up failed:[/red] {exc}")
        raise typer.Exit(1) from None


@stack_app.command("down")
def stack_down() -> None:
    """Stop what `stack up` started."""
    from shared import stack

    stack.down(_settings(), say=say)


@stack_app.command("status")
def stack_status() -> None:
    """Show each component, its pid and address; exit 1 unless all run."""
    from shared import stack

    if not stack.status(_settings(), say=say):
        raise typer.Exit(1)


@app.command("up")
def up() -> None:
    """Start the local stack and the platform (six services and serving, one process each), show
    their status and follow the lifecycle events; Ctrl-C stops what it started."""
    from shared.platform import run_up

    raise typer.Exit(asyncio.run(run_up(_settings(), say)))


@app.command("demo")
def demo(
    rows_per_second: Annotated[float | None, typer.Option(help="Labelled traffic sent to serving.")] = None,
    training_timeout: Annotated[float | None, typer.Option(help="Longest wait for a training, in seconds.")] = None,
) -> None:
    """The whole loop, hands-free: train, evaluate, roll out; drift, alert, retrain, canary, promote
    or roll back; a summary at the end (exit 1 naming the stage that stalled)."""
    from shared.demo import run_demo, timings_from

    timings = timings_from({"rows_per_second": rows_per_second, "training": training_timeout})
    raise typer.Exit(asyncio.run(run_demo(_settings(), say, timings)))


@app.command("config")
def config_table() -> None:
    """Print every setting (environment variable, default, meaning) as a Markdown table."""
    from shared.settings import markdown_table

    console.print(markdown_table(), markup=False)


@app.command("topics")
def topics_create() -> None:
    """Create the catalog's topics that are missing (what `stack up` does; for a broker of your own)."""
    from shared.bus import ensure_topics

    settings = _settings()
    created, existing = asyncio.run(ensure_topics(settings))
    say(f"[topics] {len(created)} created, {len(existing)} already there (prefix {settings.topic_prefix})")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations up to REVISION."""
    from alembic import command

    from shared.db import alembic_config

    command.upgrade(alembic_config(_settings()), revision)
    console.print(f"database at {revision}")


@db_app.command("wait")
def db_wait(
    timeout: Annotated[float, typer.Option(help="Longest wait, in seconds.")] = 300.0,
) -> None:
    """Wait until the database answers and is at this code's newest migration (a pod's init step)."""
    import time

    from sqlalchemy.exc import SQLAlchemyError

    from shared.db import current_revision, head_revision

    settings = _settings()
    head = head_revision(settings)
    deadline = time.monotonic() + timeout
    while True:
        try:
            found: str | None = asyncio.run(current_revision(settings))
            problem = f"database at {found or 'no migration'}, this code needs {head}"
        except (OSError, SQLAlchemyError) as exc:
            found, problem = None, f"database not reachable: {type(exc).__name__}: {exc}"
        if found == head:
            say(f"[db] at {head}")
            return
        if time.monotonic() >= deadline:
            say(f"[db] gave up after {timeout:.0f} s: {problem}")
            raise typer.Exit(1)
        say(f"[db] waiting: {problem}")
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


@schemas_app.command("generate")
def schemas_generate(
    folder: Annotated[Path, typer.Option(help="Where schemas/ lives.")] = Path("schemas"),
    check: Annotated[bool, typer.Option("--check", help="Only report stale files; exit 1 if any.")] = False,
) -> None:
    """Write the JSON Schema of every event, the envelope and the AsyncAPI document."""
    from shared import contract

    if check:
        stale = contract.stale(folder)
        for path in stale:
            console.print(f"stale: {folder / path}", markup=False)
        if stale:
            err.print("run `modelbus schemas generate` and commit the result")
            raise typer.Exit(1)
        console.print(f"{folder} is up to date", markup=False)
        return
    written = contract.write(folder)
    console.print(f"wrote {len(written)} files to {folder}", markup=False)


@publish_app.command("data-arrived")
def publish_data_arrived(
    dataset: Annotated[str, typer.Option(help="Dataset name (the Kafka key).")],
    version: Annotated[str, typer.Option(help="Version label of this dataset version.")],
    uri: Annotated[str, typer.Option(help="s3://bucket/key or file:///path of the data.")],
    sha256: Annotated[str | None, typer.Option(help="SHA-256 of the file; computed for local files.")] = None,
    data_format: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    rows: Annotated[int | None, typer.Option(help="Row count, if known.")] = None,
) -> None:
    """Validate and publish a DataArrived event; prints its ce_id."""
    from pydantic import ValidationError

    from shared.envelope import describe_validation_error
    from shared.events import DataArrived

    settings = _settings()
    size = None
    if sha256 is None and uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        from shared.artifacts import sha256_file

        local = Path(unquote(urlparse(uri).path))
        if not local.is_file():
            err.print(f"no file at {local}")
            raise typer.Exit(2)
        sha256, size = sha256_file(local), local.stat().st_size
    try:
        event = DataArrived(
            dataset=dataset,
            version=version,
            uri=uri,
            sha256=sha256,
            format=data_format,
            row_count=rows,
            size_bytes=size,
            producer="modelbus-cli",
        )
    except ValidationError as exc:
        err.print(f"not published: {describe_validation_error(exc)}", markup=False)
        raise typer.Exit(2) from None
    event_id = asyncio.run(_publish(settings, event))
    console.print(
        f"published DataArrived {dataset}@{version} to {settings.topic(event.topic)} ce_id={event_id}", markup=False
    )


async def _publish(settings: Settings, event: object) -> str:
    from shared.bus import Bus
    from shared.events import Event
    from shared.telemetry import make_tracer_provider

    assert isinstance(event, Event)
    provider = make_tracer_provider(settings.model_copy(update={"service_name": "modelbus-cli"}))
    bus = Bus(settings.model_copy(update={"service_name": "cli"}), tracer_provider=provider)
    await bus.broker.start()
    try:
        tracer = provider.get_tracer("modelbus.cli")
        with tracer.start_as_current_span(f"publish {event.event_type}"):
            return await bus.publish(event)
    finally:
        await bus.broker.stop()
        provider.shutdown()


@app.command("tail")
def tail(
    topic: Annotated[str, typer.Argument(help="Catalog name (data-arrived) or full topic name.")],
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Start at the oldest message.")] = False,
    limit: Annotated[int | None, typer.Option("--max", help="Stop after this many messages.")] = None,
    idle: Annotated[float | None, typer.Option(help="Stop after this many seconds without a message.")] = None,
) -> None:
    """Follow a topic, pretty-printing each event with its headers."""
    from shared import tools

    asyncio.run(tools.tail(_settings(), topic, from_beginning=from_beginning, limit=limit, idle=idle, out=console))


@dlq_app.command("ls")
def dlq_ls(
    consumer: Annotated[str | None, typer.Option(help="Only letters from this consumer group.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List the dead letters: id (partition:offset), consumer, origin and reason."""
    from shared import tools

    letters = asyncio.run(tools.read_dead_letters(_settings()))
    if consumer:
        letters = [item for item in letters if item.letter.consumer.endswith(consumer)]
    tools.print_dead_letters(letters, out=console, as_json=as_json)


@dlq_app.command("show")
def dlq_show(letter_id: Annotated[str, typer.Argument(help="Dead letter id, partition:offset.")]) -> None:
    """Print a dead letter's original message body as it was received."""
    from shared import tools

    item = tools.find_letter(asyncio.run(tools.read_dead_letters(_settings())), letter_id)
    console.print(tools.original_value(item.letter).decode("utf-8", "replace"), markup=False)


@dlq_app.command("replay")
def dlq_replay(
    letter_ids: Annotated[list[str] | None, typer.Argument(help="Dead letter ids (partition:offset).")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    consumer: Annotated[str | None, typer.Option(help="With --all: only this consumer's letters.")] = None,
    value_file: Annotated[Path | None, typer.Option(help="Replace the body with this file (a fixed message).")] = None,
) -> None:
    """Re-publish dead letters to their original topic, with their original key and headers."""
    from shared import tools

    settings = _settings()
    letters = asyncio.run(tools.read_dead_letters(settings))
    if replay_all:
        chosen = [item for item in letters if not consumer or item.letter.consumer.endswith(consumer)]
    elif letter_ids:
        chosen = [tools.find_letter(letters, letter_id) for letter_id in letter_ids]
    else:
        err.print("name dead letter ids (see `modelbus dlq ls`) or pass --all")
        raise typer.Exit(2)
    if value_file is not None and len(chosen) != 1:
        err.print("--value-file replaces one message's body: name exactly one dead letter")
        raise typer.Exit(2)
    body = value_file.read_bytes() if value_file else None
    try:
        replayed_to = asyncio.run(tools.replay(settings, [item.letter for item in chosen], value=body))
    except ValueError as exc:
        err.print(str(exc))
        raise typer.Exit(2) from None
    for item, topic in zip(chosen, replayed_to, strict=True):
        console.print(f"replayed {item.id} to {topic}", markup=False)
    console.print(f"{len(chosen)} message(s) replayed", markup=False)


# ---------------------------------------------------------------- the registry API


def _api(
    method: str, path: str, *, json: object = None, params: dict[str, object] | None = None, service: str = "registry"
) -> Any:
    from shared.client import ApiError, RegistryClient

    try:
        with RegistryClient(_settings(), service=service) as client:
            return client.call(method, path, json=json, params=params)
    except ApiError as exc:
        err.print(str(exc), markup=False)
        for issue in exc.errors:
            line = f" (line {issue['line']})" if issue.get("line") else ""
            err.print(f"  - {issue['path']}{line}: {issue['message']}", markup=False)
        raise typer.Exit(2 if exc.status and 400 <= exc.status < 500 else 1) from None


def _ref(text: str) -> Any:
    from services.registry.domain import parse_ref

    try:
        return parse_ref(text)
    except ValueError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None


Reason = Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit log).")]


@app.command("apply")
def apply(
    file: Annotated[Path, typer.Option("--file", "-f", help="Spec YAML file, or - for stdin.")],
    reason: Reason = "",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only validate, locally.")] = False,
) -> None:
    """Validate a model spec and apply it (admin): a changed spec becomes a new revision."""

    from shared.spec import SpecError, load_spec

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
    result = _api("POST", "/v1/specs", json={"spec_yaml": text, "reason": reason})
    if result["changed"]:
        say(f"{result['model']}: revision {result['revision']} applied (sha256 {result['sha256'][:12]})")
    else:
        say(f"{result['model']}: unchanged (revision {result['revision']} is the same spec)")


def _table(columns: list[str], rows: list[list[object]]) -> None:
    from rich.table import Table

    table = Table(*columns, box=None, pad_edge=False, highlight=False)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)


def _metrics(metrics: dict[str, float]) -> str:
    return " ".join(f"{name}={value:.4g}" for name, value in sorted(metrics.items()))


@models_app.command("ls")
def models_ls(
    contains: Annotated[str | None, typer.Argument(help="Only models whose name contains this.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List models: latest version, aliases, versions per status, spec revision."""
    import json

    models = _api("GET", "/v1/models", params={"q": contains})
    if as_json:
        say(json.dumps(models, indent=2))
        return
    _table(
        ["MODEL", "LATEST", "ALIASES", "STATUSES", "SPEC", "DATASET", "UPDATED"],
        [
            [
                m["name"],
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

    parsed = _ref(ref)
    if parsed.version is None and parsed.alias is None:
        model = _api("GET", f"/v1/models/{parsed.model}")
        versions = _api(
            "GET", f"/v1/models/{parsed.model}/versions", params={"status": status, "tag": tag, "metric": metric}
        )
        if as_json:
            say(json.dumps({"model": model, "versions": versions}, indent=2))
            return
        aliases = " ".join(f"{a}={v}" for a, v in sorted(model["aliases"].items())) or "none"
        say(f"{model['name']}  spec revision {model['spec_revision'] or '-'}  dataset {model['dataset'] or '-'}")
        say(f"aliases: {aliases}")
        _table(
            ["VERSION", "STATUS", "ALIASES", "ESTIMATOR", "METRICS", "DATASET", "CREATED"],
            [
                [
                    v["version"],
                    v["status"],
                    ",".join(v["aliases"]) or "-",
                    v["estimator"].rsplit(".", 1)[-1],
                    _metrics(v["metrics"]),
                    v["dataset_version"],
                    v["created_at"][:19],
                ]
                for v in versions
            ],
        )
        return
    version = _api("GET", f"/v1/models/{parsed.model}/versions/{parsed.version or parsed.alias}")
    if as_json:
        say(json.dumps(version, indent=2))
        return
    say(f"{version['model']}@{version['version']}  {version['status']}: {version['status_reason']}")
    for label, value in (
        ("aliases", ", ".join(version["aliases"]) or "-"),
        ("estimator", version["estimator"]),
        ("params", json.dumps(version["params"], sort_keys=True)),
        ("metrics", _metrics(version["metrics"])),
        ("dataset", f"{version['dataset']}@{version['dataset_version']}"),
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
    parsed = _ref(ref)
    done = _api("POST", f"/v1/models/{parsed.model}/versions/{parsed.version}/approve", json={"reason": reason})
    say(f"approved {done['target']} (RolloutCommanded {done['event_id']})")


@models_app.command("reject")
def models_reject(ref: Annotated[str, typer.Argument(help="NAME@VERSION.")], reason: Reason = "") -> None:
    """Reject a version that is not serving (operator)."""
    parsed = _ref(ref)
    done = _api("POST", f"/v1/models/{parsed.model}/versions/{parsed.version}/reject", json={"reason": reason})
    say(f"rejected {done['target']}")


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
        _api("DELETE", f"/v1/models/{model}/aliases/{alias}", params={"reason": reason})
        say(f"removed {model}@{alias}")
    else:
        _api("PUT", f"/v1/models/{model}/aliases/{alias}", json={"version": version, "reason": reason})
        say(f"{model}@{alias} -> {version}")


@models_app.command("tag")
def models_tag(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION.")],
    tag: Annotated[str, typer.Argument(help="KEY=VALUE to set, or KEY with --delete.")],
    delete: Annotated[bool, typer.Option("--delete", help="Remove the tag.")] = False,
    reason: Reason = "",
) -> None:
    """Set or remove a tag on a version (operator)."""
    parsed = _ref(ref)
    key, sep, value = tag.partition("=")
    path = f"/v1/models/{parsed.model}/versions/{parsed.version}/tags/{key}"
    if delete:
        _api("DELETE", path, params={"reason": reason})
        say(f"removed tag {key} from {parsed}")
    elif not sep:
        err.print("a tag to set looks like KEY=VALUE")
        raise typer.Exit(2)
    else:
        _api("PUT", path, json={"value": value, "reason": reason})
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

    parsed = _ref(ref)
    found = _api("GET", f"/v1/models/{parsed.model}/versions/{parsed.version or parsed.alias or 'latest'}/lineage")
    if as_json:
        say(json.dumps(found, indent=2))
        return
    v, data, run, spec = found["version"], found["dataset"], found["run"], found["spec"]
    root = Tree(Text(f"{v['model']}@{v['version']}  [{v['status']}] {v['status_reason']}"))
    if data:
        node = root.add(Text(f"dataset {data['name']}@{data['version']}  {data['uri']}"))
        node.add(Text(f"sha256 {data['sha256'] or '-'}  rows {data['row_count'] or '-'}  from {data['producer']}"))
    else:
        root.add(Text(f"dataset {v['dataset']}@{v['dataset_version']} (not recorded)"))
    if spec:
        root.add(Text(f"spec revision {spec['revision']}  sha256 {spec['sha256'][:12]}  by {spec['applied_by']}"))
    if run:
        node = root.add(Text(f"training run {run['run_id']}  {run['status']}  trigger {run['trigger'] or '-'}"))
        if run["training_seconds"] is not None:
            node.add(Text(f"fit {run['training_seconds']:.1f} s  code {run['code_version'] or '-'}"))
        for candidate in run["candidates"]:
            if isinstance(candidate, dict):
                node.add(Text(f"candidate {candidate['estimator'].rsplit('.', 1)[-1]}  score {candidate['score']:.4g}"))
    node = root.add(Text(f"version {v['version']}  {v['estimator'].rsplit('.', 1)[-1]}  {_metrics(v['metrics'])}"))
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
        done = _api("POST", f"/v1/models/{name}/rollout/{command}", json=body)
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
    done = _api("POST", f"/v1/models/{name}/retrain", json={"dataset_version": dataset_version, "reason": reason})
    say(f"retrain of {name} requested: RetrainRequested {done['event_id']}")


@app.command("audit")
def audit(
    target: Annotated[str | None, typer.Option(help="A model (with its versions) or NAME@VERSION.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action.")] = None,
    limit: Annotated[int, typer.Option(help="Most entries shown.")] = 50,
) -> None:
    """The audit log, newest first."""
    entries = _api("GET", "/v1/audit", params={"target": target, "actor": actor, "action": action, "limit": limit})
    _table(
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


def _alerts_api(method: str, path: str, **kwargs: Any) -> Any:
    return _api(method, path, service="alerter", **kwargs)


def _since(stamp: str | None) -> str:
    if not stamp:
        return ""
    from datetime import UTC, datetime

    seconds = (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


@alerts_app.command("ls")
def alerts_ls(
    status: Annotated[str | None, typer.Option(help="firing or resolved.")] = "firing",
    model: Annotated[str | None, typer.Option(help="Only this model's alerts ('-': the platform's).")] = None,
    kind: Annotated[str | None, typer.Option(help="drift, performance, training-failed, rollback, ...")] = None,
    every: Annotated[bool, typer.Option("--all", help="Firing and resolved.")] = False,
    limit: Annotated[int, typer.Option("--max", help="Most alerts shown.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List alerts, most recently raised first (firing ones unless --all or --status)."""
    import json

    params = {"status": None if every else status, "model": model, "kind": kind, "limit": limit}
    found = _alerts_api("GET", "/v1/alerts", params=params)
    if as_json:
        for alert in found:
            say(json.dumps(alert))
        return
    rows = []
    for a in found:
        muted = "silenced" if a["silenced_by"] else ("inhibited" if a["inhibited_by"] else "")
        acked = f"acked by {a['acked_by']}" if a["acked_by"] else ""
        rows.append(
            [
                a["fingerprint"],
                a["status"],
                a["severity"],
                a["model"],
                a["labels"].get("version", ""),
                a["kind"],
                _since(a["starts_at"]),
                a["times_raised"],
                " ".join(x for x in (muted, acked) if x),
                a["annotations"].get("summary", ""),
            ]
        )
    _table(["FINGERPRINT", "STATUS", "SEVERITY", "MODEL", "V", "KIND", "SINCE", "RAISED", "STATE", "SUMMARY"], rows)


@alerts_app.command("show")
def alerts_show(fingerprint: Annotated[str, typer.Argument(help="The alert's fingerprint.")]) -> None:
    """One alert: labels, annotations (evidence, links), history and the notifications that carried it."""
    import json

    alert = _alerts_api("GET", f"/v1/alerts/{fingerprint}")
    summary = alert["annotations"].get("summary", "")
    say(f"{alert['fingerprint']}  {alert['status'].upper()}  {alert['severity']}  {summary}")
    say(f"  labels:      {' '.join(f'{k}={v}' for k, v in sorted(alert['labels'].items()))}")
    say(f"  started:     {alert['starts_at']} ({_since(alert['starts_at'])}), raised {alert['times_raised']} time(s)")
    say(f"  last raised: {alert['updated_at']} by {alert['source_event_type']} {alert['source_event_id']}")
    if alert["ends_at"]:
        say(f"  resolved:    {alert['ends_at']}: {alert['resolved_reason']}")
    if alert["acked_by"]:
        say(f"  acked:       by {alert['acked_by']} at {alert['acked_at']}: {alert['ack_comment']}")
    for name, value in sorted(alert["annotations"].items()):
        if name == "summary":
            continue
        if name == "evidence":
            value = json.dumps(json.loads(value), indent=2).replace("\n", "\n    ")
        say(f"  {name}: {value}")
    for n in alert["notifications"]:
        error = f" last error: {n['last_error']}" if n["last_error"] else ""
        say(f"  notification {n['id']} to {n['receiver']}: {n['status']} after {n['attempts']} attempt(s){error}")


@alerts_app.command("ack")
def alerts_ack(
    fingerprint: Annotated[str, typer.Argument(help="The alert's fingerprint.")],
    comment: Annotated[str, typer.Option("--comment", "-c", help="What is being done about it.")] = "",
) -> None:
    """Acknowledge an alert (operator): audited; it keeps notifying until resolved or silenced."""
    alert = _alerts_api("POST", f"/v1/alerts/{fingerprint}/ack", json={"comment": comment})
    say(f"{fingerprint} acknowledged by {alert['acked_by']}")


@alerts_app.command("tail")
def alerts_tail(
    topic: Annotated[
        str, typer.Option(help="A receiver's topic as the alerter config names it (the prefix is added).")
    ] = "alerts",
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Start at the oldest alert.")] = False,
    limit: Annotated[int | None, typer.Option("--max", help="Stop after this many alerts.")] = None,
    idle: Annotated[float | None, typer.Option(help="Stop after this many seconds without one.")] = None,
) -> None:
    """Follow the alerts topic: one line per AlertRaised / AlertResolved."""
    from shared import tools

    settings = _settings()
    full = topic if topic.startswith(f"{settings.topic_prefix}.") else settings.topic(topic)
    asyncio.run(
        tools.tail(
            settings, full, from_beginning=from_beginning, limit=limit, idle=idle, out=console, render=_alert_line
        )
    )


def _alert_line(record: Any) -> str | None:
    import time

    from shared.envelope import EnvelopeError, decode
    from shared.events import AlertRaised, AlertResolved

    try:
        event = decode(record.value, list(record.headers or ()))
    except EnvelopeError as exc:
        return f"(unreadable message at {record.partition}:{record.offset}: {exc.reason})"
    alert = event.event
    stamp = time.strftime("%H:%M:%S", time.localtime(record.timestamp / 1000))
    labels = " ".join(f"{k}={v}" for k, v in sorted(getattr(alert, "labels", {}).items()) if k not in ("model", "kind"))
    if isinstance(alert, AlertRaised):
        state, why = "FIRING  ", alert.annotations.get("summary", "")
    elif isinstance(alert, AlertResolved):
        state, why = "RESOLVED", alert.reason
    else:
        return None
    return f"{stamp} {state} {alert.fingerprint} {alert.labels.get('kind', '')} {alert.model} {labels}: {why}"


@alerts_app.command("silence")
def alerts_silence(
    matchers: Annotated[
        list[str] | None, typer.Argument(help="Matchers, e.g. model=churn 'kind=~\"drift|performance\"'.")
    ] = None,
    duration: Annotated[str, typer.Option("--for", help="How long: 30m, 2h, 1d.")] = "2h",
    comment: Annotated[str, typer.Option("--comment", "-c", help="Why (required to create).")] = "",
    expire: Annotated[str | None, typer.Option("--expire", help="End this silence (by id) now instead.")] = None,
) -> None:
    """Create a silence (operator): alerts matching every matcher are not notified; or --expire one."""
    if expire:
        ended = _alerts_api("DELETE", f"/v1/silences/{expire}")
        say(f"silence {ended['id']} {ended['state']} (ended {ended['ends_at']})")
        return
    if not matchers or not comment:
        err.print("give at least one matcher and --comment (or --expire ID)", markup=False)
        raise typer.Exit(2)
    made = _alerts_api("POST", "/v1/silences", json={"matchers": matchers, "duration": duration, "comment": comment})
    say(f"silence {made['id']} {made['state']} until {made['ends_at']}: {', '.join(made['matchers'])}")


@alerts_app.command("silences")
def alerts_silences(
    expired: Annotated[bool, typer.Option("--expired", help="Also the ones that ended.")] = False,
) -> None:
    """List silences: id, state, matchers, until when, by whom and why."""
    found = _alerts_api("GET", "/v1/silences", params={"expired": expired})
    _table(
        ["ID", "STATE", "MATCHERS", "ENDS", "BY", "COMMENT"],
        [[s["id"], s["state"], " ".join(s["matchers"]), s["ends_at"], s["created_by"], s["comment"]] for s in found],
    )


@app.command("example-data")
def example_data(
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write: .csv or .parquet.")],
    rows: Annotated[int, typer.Option(help="Customers.")] = 5000,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same file.")] = 7,
    shift: Annotated[float, typer.Option(help="How far the world has moved (0: not at all), for drift.")] = 0.0,
) -> None:
    """Write the example churn dataset (the one schemas/examples/model-spec.yaml trains on)."""
    from shared.artifacts import sha256_file
    from shared.example_data import write_churn

    path = write_churn(out, rows=rows, seed=seed, shift=shift)
    say(f"wrote {rows} rows to {path} (sha256 {sha256_file(path)})")


def main() -> None:
    """Entry point of the `modelbus` console script."""
    try:
        app()
    except LookupError as exc:
        err.print(str(exc).strip("'\""), markup=False)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
