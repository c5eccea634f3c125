"""Command-line entry points refuse bad flags with a usage error (exit code 2)."""

import pytest

from client.cli import parse_args as client_args
from infra.embedded import parse_args as embedded_args


@pytest.mark.parametrize("argv", [
    ["--port", "abc"], ["--port", "0"], ["--port", "65536"], ["--nats-port", "70000"],
    ["--nats-port", "0"], ["--metrics-port-base", "0"], ["--metrics-port-base", "65533"],
    ["--metrics-port-base", "x"], ["--unknown"],
    ["--storage-workers", "0"], ["--storage-workers", "9"], ["--storage-workers", "x"],
    ["--storage-workers", "-1"], ["--routers", "0"], ["--routers", "9"], ["--routers", "x"],
    ["--routers", ""], ["--balancer-port", "0"], ["--balancer-port", "65536"],
    ["--balancer-port", "x"],
])
def test_embedded_bad_flags(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        embedded_args(argv)
    assert info.value.code == 2


@pytest.mark.parametrize("argv", [
    [], ["chat"], ["chat", "--user", "a"], ["send", "--user", "a", "--to", "b"],
    ["--url", "ftp://x", "listen", "--user", "a"], ["fly"],
    ["chat", "--user", "a", "--to", "b", "--device", "two words"],
    ["chat", "--user", "a", "--to", "b", "--device", "x" * 33],
    ["chat", "--user", "a", "--to", "b", "--device", ""],
    ["listen", "--user", "a", "--fresh", "--device", "tablet"],
    ["send", "--user", "a", "--to", "b", "--files-dir", "x", "hi"],
    ["listen", "--user", "a", "--files-dir"],
    ["--balancer", "ws://x", "listen", "--user", "a"], ["--balancer", "", "listen", "--user", "a"],
    ["--balancer", "listen", "--user", "a"],
])
def test_client_bad_flags(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        client_args(argv)
    assert info.value.code == 2


def test_embedded_flags_at_the_bounds() -> None:
    args = embedded_args(["--port", "65535", "--nats-port", "1", "--metrics-port-base", "65532",
                          "--balancer-port", "1"])
    assert args.balancer_port == 1 and embedded_args(["--balancer-port", "65535"]).balancer_port \
        == 65535
    assert (args.port, args.nats_port, args.metrics_port_base) == (65535, 1, 65532)
    assert embedded_args([]).metrics_port_base is None


def test_embedded_replica_flags_at_the_bounds() -> None:
    defaults = embedded_args([])
    assert (defaults.storage_workers, defaults.routers) == (1, 1)
    args = embedded_args(["--storage-workers", "1", "--routers", "8"])
    assert (args.storage_workers, args.routers) == (1, 8)
    args = embedded_args(["--storage-workers", "8", "--routers", "1"])
    assert (args.storage_workers, args.routers) == (8, 1)


def test_client_good_flags() -> None:
    args = client_args(["send", "--user", "a", "--to", "b", "hello"])
    assert (args.command, args.user, args.to, args.text) == ("send", "a", "b", "hello")


def test_client_device_label_at_the_bound() -> None:
    assert client_args(["listen", "--user", "a", "--device", "x" * 32]).device == "x" * 32


def test_client_files_dir() -> None:
    assert str(client_args(["listen", "--user", "a"]).files_dir) == "courier-files"
    args = client_args(["chat", "--user", "a", "--to", "b", "--files-dir", "/tmp/in"])
    assert str(args.files_dir) == "/tmp/in"
