"""Artifact storage: write once with a SHA-256, verify the digest before every read.

Writes go under `Settings.artifact_url` (`s3://bucket/prefix` or `file:///root`); reads accept
any `s3://` URI in an allowed bucket and any `file://` URI inside a configured root. Both
backends behave the same (tests/integration/test_artifacts.py runs one contract on both).
Blocking I/O: call from async code through `asyncio.to_thread`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote, urlparse

from shared.runtime.settings import Settings

CHUNK = 1024 * 1024
MULTIPART_THRESHOLD = 8 * 1024 * 1024


class ArtifactError(Exception):
    """An artifact could not be stored or read; the message says which and why."""


class ArtifactAccessDenied(ArtifactError):
    """A URI points outside what the settings allow (path escape, foreign bucket)."""


class ArtifactIntegrityError(ArtifactError):
    """The bytes read do not have the recorded SHA-256."""


class ArtifactNotFound(ArtifactError):
    """Nothing is stored at the URI."""


class ArtifactUnavailable(ArtifactError):
    """The store could not be reached or answered with a server error: worth trying again."""


def _unavailable(action: str, uri: str, exc: Exception) -> ArtifactUnavailable | None:
    """An S3 failure that is the store's (unreachable, timing out, 5xx), as ArtifactUnavailable."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status < 500:
            return None
    elif not isinstance(exc, (BotoCoreError, OSError)):
        return None
    return ArtifactUnavailable(f"could not {action} {uri}: {type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    """Where an artifact was written, its digest and size."""

    uri: str
    sha256: str
    size_bytes: int


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _clean_key(key: str) -> str:
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or any(part in ("..", ".", "") for part in parts):
        raise ArtifactAccessDenied(f"artifact key {key!r} must be a relative path without '..'")
    return "/".join(parts)


class FileBackend:
    """Artifacts as files under confined roots."""

    def __init__(self, root: Path | None, extra_roots: list[Path]) -> None:
        self.root = root
        self.roots = [r.resolve() for r in ([root] if root else []) + extra_roots]

    def confine(self, uri: str) -> Path:
        """The real path of a file:// URI, refused unless it stays inside a configured root."""
        parsed = urlparse(uri)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise ArtifactAccessDenied(f"{uri!r} is not a local file:// URI")
        raw = unquote(parsed.path)
        if ".." in PurePosixPath(raw).parts:
            raise ArtifactAccessDenied(f"{uri!r} contains '..'; paths must not climb out of their root")
        real = Path(raw).resolve()  # follows symlinks: a link pointing out is caught below
        if not any(real == root or real.is_relative_to(root) for root in self.roots):
            allowed = ", ".join(str(r) for r in self.roots)
            raise ArtifactAccessDenied(f"{uri!r} resolves to {real}, outside the allowed roots ({allowed})")
        return real

    def write(self, key: str, source: Path) -> str:
        if self.root is None:
            raise ArtifactError("no file:// artifact root is configured")
        target = self.root.resolve() / key
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(source, partial)
        os.replace(partial, target)
        return target.as_uri()

    def read(self, uri: str, target: IO[bytes]) -> None:
        path = self.confine(uri)
        if not path.is_file():
            raise ArtifactNotFound(f"no artifact at {uri}")
        with path.open("rb") as handle:
            shutil.copyfileobj(handle, target, CHUNK)


class S3Backend:
    """Artifacts as objects in allowed buckets of an S3-compatible server."""

    def __init__(self, settings: Settings, bucket: str, prefix: str, client: Any = None) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.allowed = {bucket, *settings.s3_allowed_buckets}
        self.transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD)
        secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
        self.client = client or boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}),
        )

    def _locate(self, uri: str) -> tuple[str, str]:
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ArtifactAccessDenied(f"{uri!r} is not an s3://bucket/key URI")
        if parsed.netloc not in self.allowed:
            raise ArtifactAccessDenied(
                f"bucket {parsed.netloc!r} is not allowed (allowed: {', '.join(sorted(self.allowed))})"
            )
        return parsed.netloc, _clean_key(unquote(parsed.path.lstrip("/")))

    def write(self, key: str, source: Path) -> str:
        object_key = f"{self.prefix}/{key}" if self.prefix else key
        uri = f"s3://{self.bucket}/{object_key}"
        try:
            self.client.upload_file(str(source), self.bucket, object_key, Config=self.transfer)
        except Exception as exc:
            raise (_unavailable("write", uri, exc) or exc) from exc
        return uri

    def read(self, uri: str, target: IO[bytes]) -> None:
        from botocore.exceptions import ClientError

        bucket, key = self._locate(uri)
        try:
            self.client.download_fileobj(bucket, key, target, Config=self.transfer)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise ArtifactNotFound(f"no artifact at {uri}") from None
            raise (_unavailable("read", uri, exc) or exc) from exc
        except Exception as exc:
            raise (_unavailable("read", uri, exc) or exc) from exc


class ArtifactStore:
    """Writes to the configured artifact location, reads file:// and s3:// with digest checks."""

    def __init__(self, settings: Settings, *, s3_client: Any = None) -> None:
        self.settings = settings
        parsed = urlparse(settings.artifact_url)
        is_s3 = parsed.scheme == "s3"
        self.s3 = S3Backend(settings, parsed.netloc, parsed.path, s3_client) if is_s3 else None
        self.files = FileBackend(None if is_s3 else Path(unquote(parsed.path)), settings.file_roots)
        self._writer: FileBackend | S3Backend = self.s3 or self.files

    def put_file(self, key: str, source: Path) -> StoredArtifact:
        """Store a file under KEY (relative to the artifact location)."""
        key = _clean_key(key)
        digest = sha256_file(source)
        uri = self._writer.write(key, source)
        return StoredArtifact(uri=uri, sha256=digest, size_bytes=source.stat().st_size)

    def put_bytes(self, key: str, data: bytes) -> StoredArtifact:
        """Store bytes under KEY."""
        with tempfile.NamedTemporaryFile() as handle:
            handle.write(data)
            handle.flush()
            return self.put_file(key, Path(handle.name))

    def get_file(self, uri: str, target: Path, *, sha256: str | None) -> Path:
        """Download URI to TARGET, verifying its SHA-256; nothing is left at TARGET on mismatch.

        `sha256=None` (a producer that announced no digest) skips the check; the caller records
        the digest of what it read (sha256_file).
        """
        backend = self._backend(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        try:
            with partial.open("wb") as handle:
                backend.read(uri, handle)
            actual = sha256_file(partial)
            if sha256 is not None and actual != sha256.lower():
                raise ArtifactIntegrityError(
                    f"SHA-256 mismatch for {uri}: recorded {sha256}, read {actual}; refusing to use it"
                )
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    def get_bytes(self, uri: str, *, sha256: str) -> bytes:
        """Read URI into memory, verifying its SHA-256."""
        with tempfile.TemporaryDirectory() as folder:
            return self.get_file(uri, Path(folder) / "artifact", sha256=sha256).read_bytes()

    def _backend(self, uri: str) -> FileBackend | S3Backend:
        scheme = urlparse(uri).scheme
        if scheme == "file":
            return self.files
        if scheme == "s3":
            if self.s3 is None:
                raise ArtifactAccessDenied(f"{uri!r}: s3:// reads need artifact_url to be an s3:// location")
            return self.s3
        raise ArtifactAccessDenied(f"{uri!r}: only s3:// and file:// URIs are read")
