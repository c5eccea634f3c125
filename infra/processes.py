"""Service processes (``python -m <service>``) started and stopped by PID.

Used by the embedded runner (``make run``) and by the end-to-end test fixtures, so both start
the system the same way.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path


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


class ServiceProcess:
    """One service child process with its own environment and log file."""

    def __init__(self, module: str, env: Mapping[str, str], log_file: Path | None = None,
                 name: str | None = None) -> None:
        self.module = module
        self.name = name or module
        self.env = dict(env)
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        out = self.log_file.open("ab") if self.log_file else None
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env={**os.environ, **self.env},
                stdout=out, stderr=subprocess.STDOUT if out else None,
            )
        finally:
            if out is not None:
                out.close()  # the child has its own descriptor

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

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


def wait_http_ok(url: str, timeout: float, process: ServiceProcess | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``process`` died."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if process is not None and not process.running():
            raise RuntimeError(f"{process.name} exited with {process.returncode()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.1)
    raise TimeoutError(f"{url} not healthy after {timeout}s: {last_error}")
