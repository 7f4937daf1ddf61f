"""The local stack's OpenID Connect provider: Keycloak (its distribution from Maven Central, run on
the JVM Kafka already needs), with one realm, `modelbus`, holding two people in two groups (`ann`
in `team-a`, `bob` in `team-b`, their passwords generated once per installation under the
credentials folder) and one client, `modelbus`: public, authorization code with PKCE (S256) for
the console, the password grant for scripts and tests, access tokens for the audience `modelbus`
carrying a `groups` claim.

`modelbus stack up --oidc` starts it; the platform's processes then accept its tokens
(`MODELBUS_OIDC_ISSUER`, with `team-a` and `team-b` granted roles by `MODELBUS_OIDC_ROLES`). The
realm is imported afresh at every start (Keycloak's development database is wiped first), so the
realm always matches this file.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx

from shared.ops.components import Component, StackError, port_open, wait_until

KEYCLOAK_VERSION = "26.5.6"
PORT = 8180
MANAGEMENT_PORT = 9190  # Keycloak's default 9000 is the S3 server's
REALM = "modelbus"
CLIENT = "modelbus"
ISSUER = f"http://127.0.0.1:{PORT}/realms/{REALM}"
PEOPLE = {"ann": ("Ann Archer", "team-a"), "bob": ("Bob Baker", "team-b")}
ROLES = "team-a=operator,team-b=operator"


def password_file(credentials_dir: Path, person: str) -> Path:
    return credentials_dir.resolve() / "oidc" / person


def password(credentials_dir: Path, person: str) -> str:
    """A person's password at the local provider, made once (never a default)."""
    path = password_file(credentials_dir, person)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        path.touch(0o600)
        path.write_text(secrets.token_urlsafe(18) + "\n")
    return path.read_text().strip()


def realm(credentials_dir: Path) -> dict[str, Any]:
    """The realm Keycloak imports: the groups, the people, the console's client and its mappers."""
    mappers = [
        {
            "name": "audience",
            "protocol": "openid-connect",
            "protocolMapper": "oidc-audience-mapper",
            "config": {"included.client.audience": CLIENT, "access.token.claim": "true", "id.token.claim": "false"},
        },
        {
            "name": "groups",
            "protocol": "openid-connect",
            "protocolMapper": "oidc-group-membership-mapper",
            "config": {
                "claim.name": "groups",
                "full.path": "false",
                "access.token.claim": "true",
                "id.token.claim": "true",
                "userinfo.token.claim": "true",
            },
        },
    ]
    return {
        "realm": REALM,
        "enabled": True,
        "accessTokenLifespan": 900,
        "groups": [{"name": group} for group in sorted({g for _, g in PEOPLE.values()})],
        "users": [
            {
                "username": person,
                "enabled": True,
                "email": f"{person}@example.com",
                "emailVerified": True,
                "firstName": name.split()[0],
                "lastName": name.split()[1],
                "groups": [f"/{group}"],
                "credentials": [{"type": "password", "value": password(credentials_dir, person), "temporary": False}],
            }
            for person, (name, group) in PEOPLE.items()
        ],
        "clients": [
            {
                "clientId": CLIENT,
                "enabled": True,
                "publicClient": True,
                "standardFlowEnabled": True,
                "directAccessGrantsEnabled": True,
                # Any console on this machine: the local stack's consoles run on many ports.
                "redirectUris": ["http://127.0.0.1*", "http://localhost*"],
                "webOrigins": ["+"],
                "attributes": {"pkce.code.challenge.method": "S256"},
                "protocolMappers": mappers,
            }
        ],
    }


def token(person: str, credentials_dir: Path, *, issuer: str = ISSUER) -> str:
    """An access token for one of the local people (the password grant), as a script gets one."""
    answer = httpx.post(
        f"{issuer}/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": CLIENT,
            "username": person,
            "password": password(credentials_dir, person),
            "scope": "openid",
        },
        timeout=30,
    )
    answer.raise_for_status()
    found: str = answer.json()["access_token"]
    return found


class Identity(Component):
    """Keycloak on 127.0.0.1:8180 (its management port 9190), the `modelbus` realm imported at start."""

    marker = "keycloak"

    @property
    def distribution(self) -> Path:
        return self.home / f"keycloak-{KEYCLOAK_VERSION}"

    def host_port(self) -> tuple[str, int]:
        return "127.0.0.1", PORT

    def address(self) -> str:
        return f"{ISSUER} (Keycloak {KEYCLOAK_VERSION}; people {', '.join(PEOPLE)})"

    def install(self) -> Path:
        """The distribution, fetched from Maven Central and unpacked once."""
        script = self.distribution / "bin" / "kc.sh"
        if script.exists():
            return script
        mvn = shutil.which("mvn")
        if not mvn:
            raise StackError("Maven is needed to fetch Keycloak: apt-get install maven")
        self.say(f"[oidc] fetching Keycloak {KEYCLOAK_VERSION} from Maven Central (first run only, ~165 MB)…")
        began = time.monotonic()
        download = self.home / "download"
        artifact = f"org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:zip"
        fetched = subprocess.run(
            [mvn, "-B", "-q", "dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={download}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if fetched.returncode != 0:
            raise StackError(f"Maven could not fetch Keycloak {KEYCLOAK_VERSION}:\n{fetched.stdout[-3000:]}")
        archive = download / f"keycloak-quarkus-dist-{KEYCLOAK_VERSION}.zip"
        with zipfile.ZipFile(archive) as packed:
            packed.extractall(self.home)
        for tool in (self.distribution / "bin").glob("*.sh"):
            tool.chmod(0o755)
        archive.unlink()
        self.say(f"[oidc] Keycloak unpacked in {time.monotonic() - began:.0f} s")
        return script

    def start(self) -> None:
        script = self.install()
        self.check_port_free()
        if port_open("127.0.0.1", MANAGEMENT_PORT):
            raise StackError(f"oidc: 127.0.0.1:{MANAGEMENT_PORT} (Keycloak's management port) is taken")
        data = self.distribution / "data"
        shutil.rmtree(data / "h2", ignore_errors=True)  # the realm is imported afresh
        (data / "import").mkdir(parents=True, exist_ok=True)
        realm_file = data / "import" / f"{REALM}-realm.json"
        realm_file.touch(0o600)
        realm_file.write_text(json.dumps(realm(self.settings.credentials_dir), indent=1))
        self.say(f"[oidc] starting Keycloak {KEYCLOAK_VERSION} on 127.0.0.1:{PORT} (realm {REALM})")
        self.spawn(
            [str(script), "start-dev", "--http-host=127.0.0.1", f"--http-port={PORT}",
             f"--http-management-port={MANAGEMENT_PORT}", "--import-realm"],
            env={"JAVA_OPTS_KC_HEAP": "-Xms64m -Xmx512m"},
        )  # fmt: skip
        wait_until("Keycloak", self.ready, timeout=240, say=self.say, log=self.log_file)

    def ready(self) -> bool:
        if self.exited_early():
            raise StackError(f"Keycloak exited during start-up; see {self.log_file}")
        try:
            return httpx.get(f"{ISSUER}/.well-known/openid-configuration", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
