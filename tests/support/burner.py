"""A bounded CPU burner: the machine deliberately loaded while a scenario runs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def burning(seconds: float, cores: int | None = None) -> Iterator[list[subprocess.Popen[bytes]]]:
    """One process spinning on each core (or `cores` of them) for the block: each stops by itself
    after `seconds` at most, and all are stopped when the block ends."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=float(seconds))])
        for _ in range(cores or os.cpu_count() or 1)
    ]
    try:
        yield spinners
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()
