"""The e-mail receiver against aiosmtpd on loopback: STARTTLS with AUTH, implicit TLS, the
parsed message (multipart text and HTML, the group's alerts with their evidence and links, the
threading headers), and a refused login that leaves the notification to be retried."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.alerter import domain
from services.alerter.config import parse_config
from services.alerter.receivers import DeliveryError, Receivers
from shared.contract.events import DriftDetected, FeatureDrift
from shared.runtime.settings import Settings
from tests.integration.conftest import free_port

LINKS = domain.Links(api_url="http://registry:8080", console_url="http://console:8087/ui")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass
class Mailbox:
    """aiosmtpd's handler: keeps each message with the envelope and whether it came over TLS."""

    messages: list[tuple[Envelope, EmailMessage, bool]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        parsed = email.message_from_bytes(envelope.original_content or b"", policy=email.policy.default)
        encrypted = server.transport.get_extra_info("ssl_object") is not None
        self.messages.append((envelope, parsed, encrypted))
        return "250 OK"


def authenticator(_: Any, __: Any, ___: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"alerts", b"s3cret!")
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA)."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, certificate))
    return context


@pytest.fixture
def starttls(certificate: tuple[Path, Path]) -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(
        box, hostname="127.0.0.1", port=port, tls_context=server_context(certificate), require_starttls=True,
        authenticator=authenticator, auth_required=True, auth_require_tls=True,
    )  # fmt: skip
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def implicit_tls(certificate: tuple[Path, Path]) -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, ssl_context=server_context(certificate))
    controller.start()
    yield box, port
    controller.stop()


def receivers(text: str) -> Receivers:
    config = parse_config(text)
    return Receivers(config, SimpleNamespace(settings=Settings(console_url="http://console:8087/ui")))  # type: ignore[arg-type]


def notification(notification_id: str, status: str) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    event = DriftDetected(
        model="churn", version=3, window_id="w", window_start=now, window_end=now, rows=500,
        features=[FeatureDrift(feature="tenure", test="ks", statistic=0.4, p_value=1e-9, threshold=0.05, drifted=True)],
        drifted_share=1.0, dataset_drift=True, severity="warning",
    )  # fmt: skip
    alert = domain.raised_by(event, "ev-1", TRACEPARENT, None, LINKS)
    assert alert is not None
    member = domain.Member(
        fingerprint=alert.fingerprint, labels=alert.labels, annotations=alert.annotations, status=status,  # type: ignore[arg-type]
        starts_at=now - dt.timedelta(minutes=3), ends_at=now if status == "resolved" else None,
    )  # fmt: skip
    return domain.payload(notification_id, "mail", {"model": "churn", "kind": "drift"}, [member], now)


def config(port: int, tls: str, ca: Path, *, auth: bool) -> str:
    login = "      username: alerts\n      password_env: SMTP_PASSWORD\n" if auth else ""
    return (
        "route:\n  receiver: mail\nreceivers:\n  - name: mail\n    email:\n"
        "      to: [oncall@example.com, ml-team@example.com]\n      from: modelbus@example.com\n"
        f"      smarthost: 127.0.0.1:{port}\n      tls: {tls}\n      ca_file: {ca}\n{login}"
    )


async def test_a_group_mails_over_starttls_with_auth_and_its_messages_thread(
    starttls: tuple[Mailbox, int], certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    box, port = starttls
    (tmp_path / "smtp-password").write_text("s3cret!\n")
    monkeypatch.setenv("SMTP_PASSWORD_FILE", str(tmp_path / "smtp-password"))  # as a mounted Secret
    sender = receivers(config(port, "starttls", certificate[0], auth=True))
    try:
        await sender.deliver("mail", "n-1", notification("n-1", "firing"))
        await sender.deliver("mail", "n-2", notification("n-2", "resolved"))
    finally:
        await sender.close()
    (envelope, first, tls), (_, second, _) = box.messages
    assert tls and envelope.rcpt_tos == ["oncall@example.com", "ml-team@example.com"]
    assert envelope.mail_from == "modelbus@example.com"
    assert first["Subject"] == second["Subject"] == "[modelbus] model=churn kind=drift"
    assert (first["Message-ID"], second["Message-ID"]) == ("<n-1@modelbus>", "<n-2@modelbus>")
    assert first["In-Reply-To"] == second["In-Reply-To"] == first["References"] == second["References"]
    assert (first["X-Modelbus-Status"], second["X-Modelbus-Status"]) == ("firing", "resolved")
    text = first.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = first.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "[FIRING] churn v3: drift in tenure (500 rows)" in text and '"dataset_drift": true' in text
    assert "console: http://console:8087/ui/models/churn/versions/3" in text
    assert "trace: http://console:8087/ui/traces/4bf92f3577b34da6a3ce929d0e0e4736" in text
    assert '<a href="http://console:8087/ui/models/churn/versions/3">console</a>' in html
    assert "[RESOLVED]" in second.get_body(("plain",)).get_content()  # type: ignore[union-attr]


async def test_implicit_tls_delivers_and_a_refused_login_fails_the_delivery(
    implicit_tls: tuple[Mailbox, int],
    starttls: tuple[Mailbox, int],
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    box, port = implicit_tls
    sender = receivers(config(port, "implicit", certificate[0], auth=False))
    try:
        await sender.deliver("mail", "n-3", notification("n-3", "firing"))
    finally:
        await sender.close()
    [(_, message, tls)] = box.messages
    assert tls and message["Message-ID"] == "<n-3@modelbus>"

    monkeypatch.setenv("SMTP_PASSWORD", "wrong")
    refused_box, refused_port = starttls
    sender = receivers(config(refused_port, "starttls", certificate[0], auth=True))
    try:
        with pytest.raises(DeliveryError, match=r"email: EmailError: 127\.0\.0\.1:\d+: SMTPAuthenticationError"):
            await sender.deliver("mail", "n-4", notification("n-4", "firing"))
    finally:
        await sender.close()
    assert refused_box.messages == []
