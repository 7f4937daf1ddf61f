"""A bounded CPU burner: the machine deliberately loaded while a scenario runs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@dataclass
class Burner:
    """The spinning processes, and once they are stopped, how much CPU they burned."""

    spinners: list[subprocess.Popen[bytes]]
    began: float = field(default_factory=time.monotonic)
    seconds: float = 0.0  # wall time from start to stop
    cpu_seconds: float = 0.0  # CPU time the spinners used together

    @property
    def cores_busy(self) -> float:
        """Cores the spinners kept busy on average (CPU seconds over wall seconds)."""
        return self.cpu_seconds / self.seconds if self.seconds else 0.0


@contextlib.contextmanager
def burning(seconds: float, cores: int | None = None) -> Iterator[Burner]:
    """One process spinning on each core (or `cores` of them) for the block: each stops by itself
    after `seconds` at most, and all are stopped when the block ends."""
    burner = Burner(
        [
            subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=float(seconds))])
            for _ in range(cores or os.cpu_count() or 1)
        ]
    )
    try:
        yield burner
    finally:
        burner.seconds = time.monotonic() - burner.began
        for spinner in burner.spinners:
            spinner.kill()
        for spinner in burner.spinners:
            if spinner.returncode is None:
                _, status, usage = os.wait4(spinner.pid, 0)  # reaped here: its CPU time comes with it
                spinner.returncode = os.waitstatus_to_exitcode(status)
                burner.cpu_seconds += usage.ru_utime + usage.ru_stime
