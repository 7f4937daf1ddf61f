"""One contract, two backends: the file:// store and the S3 server behave the same."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from shared.runtime.artifacts import (
    ArtifactAccessDenied,
    ArtifactIntegrityError,
    ArtifactNotFound,
    ArtifactStore,
    StoredArtifact,
)
from shared.runtime.settings import Settings


class ArtifactStoreContract:
    """Behaviour every backend must have; subclasses provide `store` and `tamper`."""

    @pytest.fixture
    def store(self, base_settings: Settings, tmp_path: Path) -> ArtifactStore:
        raise NotImplementedError

    def tamper(self, store: ArtifactStore, stored: StoredArtifact) -> None:
        raise NotImplementedError

    def key(self) -> str:
        return f"contract/{uuid.uuid4().hex}/model.skops"

    def test_bytes_round_trip_with_their_digest(self, store: ArtifactStore) -> None:
        stored = store.put_bytes(self.key(), b"model bytes")
        assert stored.sha256 == hashlib.sha256(b"model bytes").hexdigest()
        assert stored.size_bytes == len(b"model bytes")
        assert store.get_bytes(stored.uri, sha256=stored.sha256) == b"model bytes"

    def test_a_large_file_round_trips(self, store: ArtifactStore, tmp_path: Path) -> None:
        source = tmp_path / "big.bin"
        source.write_bytes(os.urandom(20 * 1024 * 1024))  # above the multipart threshold
        stored = store.put_file(self.key(), source)
        target = store.get_file(stored.uri, tmp_path / "back.bin", sha256=stored.sha256)
        assert target.read_bytes() == source.read_bytes()

    def test_a_tampered_artifact_is_refused_and_not_left_behind(self, store: ArtifactStore, tmp_path: Path) -> None:
        stored = store.put_bytes(self.key(), b"trusted weights")
        self.tamper(store, stored)
        with pytest.raises(ArtifactIntegrityError, match="SHA-256 mismatch"):
            store.get_file(stored.uri, tmp_path / "model", sha256=stored.sha256)
        assert not (tmp_path / "model").exists()
        assert not list(tmp_path.glob("model*"))

    def test_a_wrong_recorded_digest_is_refused(self, store: ArtifactStore) -> None:
        stored = store.put_bytes(self.key(), b"abc")
        with pytest.raises(ArtifactIntegrityError):
            store.get_bytes(stored.uri, sha256="0" * 64)

    def test_a_missing_artifact_says_so(self, store: ArtifactStore) -> None:
        stored = store.put_bytes(self.key(), b"abc")
        missing = stored.uri.replace("model.skops", "nothing.skops")
        with pytest.raises(ArtifactNotFound, match="no artifact at"):
            store.get_bytes(missing, sha256=stored.sha256)

    def test_keys_that_climb_out_are_refused(self, store: ArtifactStore) -> None:
        with pytest.raises(ArtifactAccessDenied):
            store.put_bytes("../outside", b"x")

    def test_other_schemes_are_refused(self, store: ArtifactStore) -> None:
        with pytest.raises(ArtifactAccessDenied, match="only s3:// and file://"):
            store.get_bytes("http://example.invalid/model", sha256="0" * 64)


class TestFileArtifacts(ArtifactStoreContract):
    @pytest.fixture
    def store(self, base_settings: Settings, tmp_path: Path) -> ArtifactStore:
        root = tmp_path / "artifacts"
        root.mkdir()
        return ArtifactStore(base_settings.model_copy(update={"artifact_url": root.as_uri()}))

    def tamper(self, store: ArtifactStore, stored: StoredArtifact) -> None:
        Path(stored.uri.removeprefix("file://")).write_bytes(b"evil weights")


class TestS3Artifacts(ArtifactStoreContract):
    @pytest.fixture
    def store(self, base_settings: Settings, tmp_path: Path) -> ArtifactStore:
        return ArtifactStore(base_settings)

    def tamper(self, store: ArtifactStore, stored: StoredArtifact) -> None:
        assert store.s3 is not None
        bucket, _, key = stored.uri.removeprefix("s3://").partition("/")
        store.s3.client.put_object(Bucket=bucket, Key=key, Body=b"evil weights")

    def test_a_bucket_that_is_not_allowed_is_refused(self, store: ArtifactStore) -> None:
        with pytest.raises(ArtifactAccessDenied, match="not allowed"):
            store.get_bytes("s3://someone-elses-bucket/model.skops", sha256="0" * 64)

    def test_objects_are_written_to_the_configured_bucket_and_prefix(
        self, store: ArtifactStore, base_settings: Settings
    ) -> None:
        stored = store.put_bytes(self.key(), b"abc")
        assert stored.uri.startswith(base_settings.artifact_url.rstrip("/") + "/contract/")
