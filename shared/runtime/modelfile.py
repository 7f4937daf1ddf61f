"""Opening model files safely: skops with a type allowlist, never pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


class UntrustedArtifact(ValueError):
    """A model file that names types outside the trusted libraries; it is not loaded."""


def load_model(path: Path) -> Any:
    """Load a skops file, refusing any type outside scikit-learn, NumPy and SciPy."""
    import skops.io as sio

    types = sio.get_untrusted_types(file=path)
    foreign = [t for t in types if not t.startswith(TRUSTED_PREFIXES)]
    if foreign:
        raise UntrustedArtifact(f"the model names types outside the trusted libraries: {', '.join(foreign[:5])}")
    return sio.load(path, trusted=types)
