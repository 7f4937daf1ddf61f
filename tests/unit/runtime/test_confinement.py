from __future__ import annotations

from pathlib import Path

import pytest

from shared.runtime.artifacts import ArtifactAccessDenied, ArtifactStore
from shared.runtime.settings import Settings


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    settings = Settings(artifact_url=(tmp_path / "artifacts").as_uri(), file_roots=[tmp_path / "data"])
    return ArtifactStore(settings)


def test_a_file_inside_a_root_is_read(store: ArtifactStore, tmp_path: Path) -> None:
    stored = store.put_bytes("m/model.bin", b"weights")
    assert store.get_bytes(stored.uri, sha256=stored.sha256) == b"weights"
    (tmp_path / "data" / "d.csv").write_text("a,b\n")
    assert store.files.confine((tmp_path / "data" / "d.csv").as_uri()) == (tmp_path / "data" / "d.csv")


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/passwd",
        "file://{root}/artifacts/../secret.txt",
        "file://{root}/data/../../etc/passwd",
        "file://otherhost/etc/passwd",
    ],
)
def test_paths_outside_the_roots_are_refused(store: ArtifactStore, tmp_path: Path, uri: str) -> None:
    with pytest.raises(ArtifactAccessDenied):
        store.get_bytes(uri.format(root=tmp_path), sha256="0" * 64)


def test_a_symlink_pointing_out_of_a_root_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    link = tmp_path / "data" / "innocent.csv"
    link.symlink_to(tmp_path / "secret.txt")
    with pytest.raises(ArtifactAccessDenied, match="outside the allowed roots"):
        store.get_bytes(link.as_uri(), sha256="0" * 64)


@pytest.mark.parametrize("key", ["../x", "/abs/x", "a/../../x", ""])
def test_keys_that_climb_out_are_refused(store: ArtifactStore, key: str) -> None:
    with pytest.raises(ArtifactAccessDenied):
        store.put_bytes(key, b"x")
