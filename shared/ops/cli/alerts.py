"""`modelbus alerts`: alerts, acknowledgements and silences (the alerter's API)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from shared.ops.cli.app import app, call_api, cli_settings, run
from shared.ops.cli.render import console, err, say, table

alerts_app = typer.Typer(help="Alerts, acknowledgements and silences (the alerter's API).", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")


def _alerts_api(method: str, path: str, **kwargs: Any) -> Any:
    return call_api(method, path, service="alerter", **kwargs)


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

    chosen = None if every else status
    listed = run(lambda mb: mb.alerts(status=chosen, model=model, kind=kind, limit=limit))
    found = [a.model_dump(mode="json") for a in listed]
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
    table(["FINGERPRINT", "STATUS", "SEVERITY", "MODEL", "V", "KIND", "SINCE", "RAISED", "STATE", "SUMMARY"], rows)


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
    from shared.ops import tools

    settings = cli_settings()
    full = topic if topic.startswith(f"{settings.topic_prefix}.") else settings.topic(topic)
    asyncio.run(
        tools.tail(
            settings, full, from_beginning=from_beginning, limit=limit, idle=idle, out=console, render=_alert_line
        )
    )


def _alert_line(record: Any) -> str | None:
    import time

    from shared.contract.envelope import EnvelopeError, decode
    from shared.contract.events import AlertRaised, AlertResolved

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
    table(
        ["ID", "STATE", "MATCHERS", "ENDS", "BY", "COMMENT"],
        [[s["id"], s["state"], " ".join(s["matchers"]), s["ends_at"], s["created_by"], s["comment"]] for s in found],
    )
