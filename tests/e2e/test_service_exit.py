"""A service run alone (``python -m <service>``) says what is wrong and exits with a status a
supervisor can act on: 2 with the key for configuration (no traceback), 1 with
``service_start_failed`` after a start that failed half-way, having stopped what it started."""

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from nats.js.errors import KeyNotFoundError

from infra.nats_server import NatsServer
from runtime.config import NatsConfig
from runtime.natsconn import close, connect
from schemas.presence import GATEWAYS_BUCKET
from tests.harness import System

SECRET = "s" * 32
SERVICES = ("gateway", "router", "storage_worker", "push_worker", "balancer")
REPO = Path(__file__).resolve().parents[2]


def run_service(module: str, env: dict[str, str],
                data: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module`` from this checkout (its code, not an installed copy)."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("COURIER_")}
    env = {"COURIER_STORE_SQLITE_PATH": str(data / "courier.db"), **env}
    return subprocess.run([sys.executable, "-m", module], env={**base, **env}, cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_gateway_without_a_secret_exits_2_naming_the_key(tmp_path: Path) -> None:
    result = run_service("gateway", {"COURIER_NATS_URL": "nats://127.0.0.1:1"}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "configuration error: COURIER_AUTH_SECRET:" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_balancer_without_a_ticket_secret_exits_2_naming_the_key(tmp_path: Path) -> None:
    result = run_service("balancer", {"COURIER_NATS_URL": "nats://127.0.0.1:1",
                                      "COURIER_AUTH_SECRET": SECRET}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "configuration error: COURIER_AUTH_TICKET_SECRET:" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("drain_s", ["5", "6"])
def test_a_gateway_drain_longer_than_its_shutdown_exits_2(tmp_path: Path, drain_s: str) -> None:
    result = run_service("gateway", {"COURIER_NATS_URL": "nats://127.0.0.1:1",
                                     "COURIER_AUTH_SECRET": SECRET,
                                     "COURIER_PROCESS_SHUTDOWN_TIMEOUT_S": "5",
                                     "COURIER_GATEWAY_DRAIN_S": drain_s}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "configuration error: COURIER_GATEWAY_DRAIN_S:" in result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_an_unknown_variable_exits_2_naming_it(tmp_path: Path, service: str) -> None:
    result = run_service(service, {"COURIER_ROUTER_SPEED": "9"}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        "configuration error: COURIER_ROUTER_SPEED: unknown configuration key")


@pytest.mark.parametrize(("service", "key"), [
    ("router", "COURIER_METRICS_ROUTER_PORT"),
    ("storage_worker", "COURIER_METRICS_STORAGE_PORT"),
    ("push_worker", "COURIER_METRICS_PUSH_PORT"),
])
def test_a_taken_metrics_port_exits_2_naming_the_key(tmp_path: Path, service: str,
                                                      key: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_service(service, {key: str(port)}, tmp_path)
    assert result.returncode == 2
    assert f"configuration error: {key}: cannot serve metrics on 127.0.0.1:{port}" in (
        result.stderr)
    assert "Traceback" not in result.stderr


async def test_a_start_that_fails_half_way_stops_what_started_and_exits_1(
        tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats") as nats, socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {"COURIER_NATS_URL": nats.url, "COURIER_AUTH_SECRET": SECRET,
               "COURIER_GATEWAY_ID": "gw-half", "COURIER_GATEWAY_PRESENCE_TTL_S": "300",
               # everything starts (NATS, presence beat, watchers), then the port is taken
               "COURIER_GATEWAY_PORT": str(taken.getsockname()[1])}
        result = await asyncio.to_thread(run_service, "gateway", env, tmp_path)
        assert result.returncode == 1, result.stderr
        assert '"event": "service_start_failed"' in result.stderr
        assert "start failed:" in result.stderr.splitlines()[-1]
        nc = await connect(NatsConfig(url=nats.url), "test", "gateway")
        try:
            gateways = await nc.jetstream().key_value(GATEWAYS_BUCKET)
            with pytest.raises(KeyNotFoundError):  # the writer was stopped: beat deleted
                await gateways.get("gw-half")
        finally:
            await close(nc)



def test_a_test_system_that_fails_to_start_stops_what_it_started(tmp_path: Path) -> None:
    system = System(tmp_path, {"COURIER_GATEWAY_PROT": "1"})  # every service refuses it
    with pytest.raises(RuntimeError, match="storage_worker exited with 2"), system:
        raise AssertionError("the body must not run")
    assert not system.nats.running()  # nats-server started first, and was stopped
    assert system.storage is not None and not system.storage.running()


@pytest.mark.parametrize("service", ["gateway", "router", "storage_worker"])
def test_another_partition_count_than_the_deployments_exits_2_naming_the_key(
        tmp_path: Path, service: str) -> None:
    """The first process records the deployment's partition count; one configured with
    another would hash conversations to other partitions (stored positions depend on it)."""
    with NatsServer(tmp_path / "nats") as nats:
        env = {"COURIER_NATS_URL": nats.url, "COURIER_AUTH_SECRET": SECRET,
               "COURIER_METRICS_ROUTER_PORT": "0", "COURIER_METRICS_STORAGE_PORT": "0"}
        with subprocess.Popen(  # a storage worker with the default count, kept running
                [sys.executable, "-m", "storage_worker"], cwd=REPO, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True,
                env={**{k: v for k, v in os.environ.items() if not k.startswith("COURIER_")},
                     **env, "COURIER_STORE_SQLITE_PATH": str(tmp_path / "first.db")}) as first:
            try:
                assert first.stderr is not None
                for line in first.stderr:  # started: the count is recorded
                    if '"event": "service_started"' in line:
                        break
                result = run_service(service, {**env, "COURIER_PARTITIONS_COUNT": "8"},
                                     tmp_path)
            finally:
                first.terminate()
                first.communicate(timeout=30)
        assert result.returncode == 2, result.stderr
        assert "COURIER_PARTITIONS_COUNT" in result.stderr and "runs 4" in result.stderr
