"""Running what an untrusted file might do where it can do least harm: a short-lived child process
(`python -m <module>`) whose request and answer travel as JSON (never pickle), with no secret in
its environment (only what Python itself needs: no MODELBUS_* setting, no cloud credential), a
working folder of its own, and resource limits: address space, CPU seconds, the size of a file it
writes, no core dump, and a wall-clock timeout. The registry's import checks and the evaluator
open uploaded and registered model files there; the long-lived services load only what passed.

    answer = await run_child("services.evaluator.isolated", {"folder": "..."}, cwd=folder)

    # in the child's module: what it answers, and which errors are refusals
    HANDLE, REFUSALS = judged, (ImportRefused,)
    if __name__ == "__main__":
        serve_request(HANDLE, REFUSALS)

A `Warm` sandbox answers faster: one process of the sandbox (the same clean environment) imports
the module once, then forks a fresh child per request, which takes the limits, answers into a
file of its folder and exits; the warm process never opens a request's files nor reads an
answer, and it exits when its parent does (its stdin closes).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What the child inherits of the environment: how to find Python, its packages and a temporary
# folder, the locale, and how many threads the numeric libraries may start. Nothing else.
INHERITED = ("PATH", "LANG", "LC_ALL", "VIRTUAL_ENV", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
REFUSED = 3  # the child's exit status when its own code refused the request (the answer says why)


class SandboxError(RuntimeError):
    """The child did not answer: it was killed (a limit, the timeout) or crashed; the message says which."""


@dataclass(frozen=True)
class Limits:
    """What a child may use."""

    memory_bytes: int = 4 * 1024**3  # address space (RLIMIT_AS)
    cpu_seconds: int = 600  # CPU time (RLIMIT_CPU)
    file_bytes: int = 2 * 1024**3  # largest file it may write (RLIMIT_FSIZE)
    wall_seconds: float = 900.0  # then it is killed


def child_environment(folder: Path) -> dict[str, str]:
    """The child's whole environment."""
    kept = {name: os.environ[name] for name in INHERITED if name in os.environ}
    return {**kept, "HOME": str(folder), "TMPDIR": str(folder), "PYTHONDONTWRITEBYTECODE": "1"}


def _limit(limits: Limits) -> Callable[[], None]:
    def apply() -> None:  # runs in the child, between fork and exec
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


async def run_child(module: str, request: dict[str, Any], *, cwd: Path, limits: Limits | None = None) -> Any:
    """Run `python -m module` on `request` in a child process; its JSON answer (the caller validates
    it). SandboxError when it does not answer."""
    limits = limits or Limits()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",  # isolated: no user site, no PYTHON* variables, the working folder not on the path
        "-m",
        module,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_environment(cwd),
        cwd=cwd,
        preexec_fn=_limit(limits),
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(json.dumps(request).encode()), limits.wall_seconds)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise SandboxError(f"{module} did not answer within {limits.wall_seconds:.0f} s and was killed") from None
    if process.returncode not in (0, REFUSED):
        last = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1][:300]
        raise SandboxError(f"{module} exited with {process.returncode}: {last}")
    try:
        return json.loads(out)
    except ValueError:
        raise SandboxError(f"{module} answered something that is not JSON ({len(out)} bytes)") from None


def serve_request(handle: Callable[[dict[str, Any]], dict[str, Any]], refusals: tuple[type[Exception], ...]) -> None:
    """The child's side: read the request from stdin, answer on stdout; an exception of `refusals`
    becomes the answer {"refused": its message} (exit status 3)."""
    request = json.loads(sys.stdin.buffer.read())
    try:
        answer, status = handle(request), 0
    except refusals as exc:
        answer, status = {"refused": str(exc)}, REFUSED
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    sys.exit(status)


class Warm:
    """A sandbox whose imports are done: `python -I -m shared.runtime.sandbox MODULE` forks a
    child per request (see the module's docstring); one request at a time."""

    def __init__(self, module: str, *, limits: Limits | None = None) -> None:
        self.module = module
        self.limits = limits or Limits()
        self.process: asyncio.subprocess.Process | None = None
        self.home = Path(tempfile.mkdtemp(prefix="modelbus-sandbox-"))
        self.lock = asyncio.Lock()

    async def _started(self) -> asyncio.subprocess.Process:
        if self.process is None or self.process.returncode is not None:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-m", "shared.runtime.sandbox", self.module,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env=child_environment(self.home), cwd=self.home,
            )  # fmt: skip
        return self.process

    async def run(self, request: dict[str, Any], *, cwd: Path) -> Any:
        """The child's JSON answer to `request` (the caller validates it); SandboxError when it
        does not answer."""
        async with self.lock:
            process = await self._started()
            assert process.stdin is not None and process.stdout is not None
            answer = cwd / ".sandbox-answer.json"
            order = {"request": request, "cwd": str(cwd), "answer": str(answer), "limits": vars(self.limits)}
            process.stdin.write(json.dumps(order).encode() + b"\n")
            try:
                await process.stdin.drain()
                line = await asyncio.wait_for(process.stdout.readline(), self.limits.wall_seconds + 30)
            except (TimeoutError, ConnectionError):
                line = b""
            if not line:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                raise SandboxError(f"the warm sandbox of {self.module} stopped answering; it starts again")
            status = int(json.loads(line)["status"])
            if status not in (0, REFUSED) or not answer.exists():
                raise SandboxError(f"{self.module} exited with {status} (killed, out of a limit, or crashed)")
            try:
                return json.loads(answer.read_bytes())
            except ValueError:
                raise SandboxError(f"{self.module} answered something that is not JSON") from None

    async def close(self) -> None:
        """Stop the warm process."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


def _forked(order: dict[str, Any], handle: Callable[[dict[str, Any]], dict[str, Any]], refusals: Any) -> int:
    """In the forked child: take the limits and the folder, answer into the answer file."""
    cwd = Path(order["cwd"])
    os.chdir(cwd)
    os.environ.update({"HOME": str(cwd), "TMPDIR": str(cwd)})
    _limit(Limits(**order["limits"]))()
    try:
        answer, status = handle(order["request"]), 0
    except refusals as exc:
        answer, status = {"refused": str(exc)}, REFUSED
    Path(order["answer"]).write_text(json.dumps(answer))
    return status


def _serve_warm(module_name: str) -> None:
    """The warm process: import the module, then fork a child per order line on stdin, wait for
    it (killing it past the wall time) and say its exit status on stdout."""
    module = importlib.import_module(module_name)
    handle, refusals = module.HANDLE, module.REFUSALS
    for line in sys.stdin:
        order = json.loads(line)
        Path(order["answer"]).unlink(missing_ok=True)
        pid = os.fork()
        if pid == 0:  # the child
            status = 70
            try:
                status = _forked(order, handle, refusals)
            finally:
                os._exit(status)
        deadline = time.monotonic() + float(order["limits"]["wall_seconds"])
        while True:
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(code)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = -signal.SIGKILL
                break
            time.sleep(0.02)
        sys.stdout.write(json.dumps({"status": status}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve_warm(sys.argv[1])
