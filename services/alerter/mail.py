"""E-mail notifications: one message per notification, plain text and HTML, over SMTP with
STARTTLS, implicit TLS or neither, with optional AUTH.

A group's messages thread: each has its own Message-ID, and `In-Reply-To` / `References` name the
group's thread id (derived from the receiver and the group's labels), under one subject per group,
so mail clients show a group's firing, repeats and resolution as one conversation.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from services.alerter.config import EmailReceiver
from shared.runtime.settings import secret_variable

DOMAIN = "modelbus"
LINKS = (("console", "console"), ("trace", "trace"), ("lineage", "lineage"))
EVIDENCE_CHARS = 600


class EmailError(Exception):
    """The SMTP server did not take the message; the message says why."""


def thread_id(receiver: str, group: dict[str, str]) -> str:
    """The Message-ID every message of a group refers to."""
    digest = hashlib.sha256(json.dumps([receiver, sorted(group.items())]).encode()).hexdigest()[:24]
    return f"<group-{digest}@{DOMAIN}>"


def _evidence(annotations: dict[str, str]) -> str:
    text = annotations.get("evidence", "")
    try:
        text = json.dumps(json.loads(text), separators=(", ", ": "), default=str)
    except ValueError:
        pass
    return text if len(text) <= EVIDENCE_CHARS else text[: EVIDENCE_CHARS - 1] + "…"


def message(target: EmailReceiver, notification_id: str, payload: dict[str, Any], alerts_page: str) -> EmailMessage:
    """The e-mail of a notification."""
    body = payload["modelbus"]
    group: dict[str, str] = body["group_labels"]
    title = " ".join(f"{k}={v}" for k, v in group.items() if v) or "all alerts"
    head = payload["text"].splitlines()[0]
    text_lines = [head, ""]
    html_items = []
    for alert in body["alerts"]:
        notes = alert["annotations"]
        links = [(label, notes[key]) for key, label in LINKS if notes.get(key)]
        labels = ", ".join(f"{k}={v}" for k, v in sorted(alert["labels"].items()))
        text_lines += [
            f"[{alert['status'].upper()}] {notes.get('summary', alert['fingerprint'])}",
            f"  labels: {labels}",
            f"  evidence: {_evidence(notes)}",
            *(f"  {label}: {url}" for label, url in links),
            "",
        ]
        summary = html.escape(notes.get("summary", alert["fingerprint"]))
        html_items.append(
            f"<li><b>{html.escape(alert['status'].upper())}</b> {summary}"
            f"<br><small>{html.escape(labels)}</small>"
            f'<pre style="white-space:pre-wrap">{html.escape(_evidence(notes))}</pre>'
            + " · ".join(f'<a href="{html.escape(url)}">{html.escape(label)}</a>' for label, url in links)
            + "</li>"
        )
    text_lines.append(f"All alerts: {alerts_page}")
    root = thread_id(body["receiver"], group)
    mail = EmailMessage()
    mail["Subject"] = f"[modelbus] {title}"
    mail["From"] = target.from_
    mail["To"] = ", ".join(target.to)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = f"<{notification_id}@{DOMAIN}>"
    mail["In-Reply-To"] = root
    mail["References"] = root
    mail["X-Modelbus-Notification"] = notification_id
    mail["X-Modelbus-Status"] = body["status"]
    mail.set_content("\n".join(text_lines))
    mail.add_alternative(
        f"<html><body><h3>{html.escape(head)}</h3><ul>{''.join(html_items)}</ul>"
        f'<p><a href="{html.escape(alerts_page)}">All alerts</a></p></body></html>',
        subtype="html",
    )
    return mail


def _deliver(target: EmailReceiver, mail: EmailMessage) -> None:
    host, port = target.smarthost.rsplit(":", 1)
    context = ssl.create_default_context(cafile=target.ca_file)
    smtp: smtplib.SMTP
    if target.tls == "implicit":
        smtp = smtplib.SMTP_SSL(host, int(port), local_hostname=target.hello, timeout=target.timeout, context=context)
    else:
        smtp = smtplib.SMTP(host, int(port), local_hostname=target.hello, timeout=target.timeout)
    with smtp:
        if target.tls == "starttls":
            smtp.starttls(context=context)
            smtp.ehlo(target.hello)
        if target.username:
            password = secret_variable(target.password_env) if target.password_env else ""
            smtp.login(target.username, password or "")
        smtp.send_message(mail)


async def send(target: EmailReceiver, notification_id: str, payload: dict[str, Any], alerts_page: str) -> None:
    """Send a notification's e-mail; EmailError naming the server and the reason if it is refused."""
    mail = message(target, notification_id, payload, alerts_page)
    try:
        await asyncio.to_thread(_deliver, target, mail)
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        raise EmailError(f"{target.smarthost}: {type(exc).__name__}: {exc}") from None
