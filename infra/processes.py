"""Service processes (``python -m <service>``) started and stopped by PID.

Used by the embedded runner (``make run``) and by the end-to-end test fixtures, so both start
the system the same way.
"""

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Linux: SIGTERM this child when the process that started it dies (even by SIGKILL)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def venv_binary(name: str, package: str) -> str:
    """The executable ``name`` next to this interpreter (installed into the venv by the pip
    ``package``), else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: pip install {package}")
    return found


def supervised_popen_options() -> dict[str, Any]:
    """``Popen`` options for a child of the ``make run`` supervisor: its own process group, so
    Ctrl-C reaches only the supervisor (which stops the children in order), and on Linux a
    SIGTERM when the supervisor dies, so no child outlives it."""
    preexec: Callable[[], None] | None = _die_with_parent if sys.platform == "linux" else None
    return {"process_group": 0, "preexec_fn": preexec}


def log_tail(path: Path, lines: int = 5, max_bytes: int = 16 * 1024) -> list[str]:
    """The last ``lines`` non-empty lines of a log file (empty if it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(path.stat().st_size - max_bytes, 0))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def terminate(process: "subprocess.Popen[bytes]", grace: float) -> bool:
    """SIGTERM a child we started, SIGKILL it if it is still running after ``grace`` seconds;
    True when it had to be killed."""
    if process.poll() is not None:
        return False
    process.terminate()
    try:
        process.wait(timeout=grace)
        return False
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return True


class ServerProcess:
    """A dependency server run as one child process (nats-server, SeaweedFS): subclasses
    start it into ``_process``; this stops it by PID, on ``stop`` or on leaving ``with``."""

    #: Stop grace before SIGKILL.
    grace_s: float = 10.0

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def kill(self) -> None:
        """SIGKILL (a crash, or a server that stopped answering)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def stop(self) -> None:
        """Terminate the process this object started (and only it)."""
        if self._process is not None:
            terminate(self._process, grace=self.grace_s)
        self._process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class ServiceProcess:
    """One service child process with its own environment and log file."""

    def __init__(self, module: str, env: Mapping[str, str], log_file: Path | None = None,
                 name: str | None = None, *, supervised: bool = False) -> None:
        self.module = module
        self.name = name or module
        self.env = dict(env)
        self.log_file = log_file
        self.supervised = supervised
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        out = self.log_file.open("ab") if self.log_file else None
        self._log_offset = out.tell() if out is not None else 0
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env={**os.environ, **self.env},
                stdout=out, stderr=subprocess.STDOUT if out else None,
                **(supervised_popen_options() if self.supervised else {}),
            )
        finally:
            if out is not None:
                out.close()  # the child has its own descriptor

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait_started(self, timeout: float) -> None:
        """Until this start's log says ``service_started`` (its subscriptions are up, e.g. the
        storage worker's RPC answers); RuntimeError with the log's tail if it exits first or
        the time runs out."""
        assert self.log_file is not None, "wait_started reads the service's log"
        deadline = time.monotonic() + timeout
        while True:
            with self.log_file.open("rb") as fh:
                fh.seek(self._log_offset)
                if b'"service_started"' in fh.read():
                    return
            code = None if self._process is None else self._process.poll()
            if code is not None or time.monotonic() > deadline:
                state = "timed out" if code is None else f"exited with {code}"
                tail = "\n".join(log_tail(self.log_file, 20))
                raise RuntimeError(f"{self.name} {state} before it started:\n{tail}")
            time.sleep(0.1)

    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def answering(self) -> bool:
        """Health probe for a supervisor: a service process is healthy while it runs (it
        reconnects to NATS by itself)."""
        return self.running()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the service drains), then SIGKILL after ``timeout``."""
        if self._process is not None:
            terminate(self._process, timeout)

    def restart(self) -> None:
        self.stop()
        self.start()


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """Whether ``url`` answers 200 within ``timeout``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:  # holds the response: close it, or its socket leaks
        exc.close()
        return False
    except OSError:
        return False


def wait_http_ok(url: str, timeout: float, process: ServiceProcess | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``process`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.running():
            raise RuntimeError(f"{process.name} exited with {process.returncode()}")
        if http_ok(url):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{url} not healthy after {timeout}s")
