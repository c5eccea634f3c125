"""Every flag of ``python -m bench`` refuses bad input with a usage error naming the flag."""

from pathlib import Path

import pytest

from bench.cli import DEFAULT_OUT, parse_args
from bench.scenarios import SCENARIOS


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_defaults_run_every_scenario_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORE", raising=False)
    options = parse_args([])
    assert options.scenarios == tuple(SCENARIOS)
    assert (options.out, options.quick, options.store, options.workers, options.profile) == (
        DEFAULT_OUT, False, "sqlite", 2, False)


def test_scenarios_accept_commas_and_spaces_and_keep_suite_order() -> None:
    assert parse_args(["--scenarios", "connections,floor-nats"]).scenarios == (
        "floor-nats", "connections")
    assert parse_args(["--scenarios", "direct-latency  offline-catchup"]).scenarios == (
        "direct-latency", "offline-catchup")


@pytest.mark.parametrize("value", ["nope", "floor-nats,nope", "", " , "])
def test_bad_scenarios(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert "--scenarios" in _usage_error(["--scenarios", value], capsys)


def test_out_must_be_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "results"
    a_file.write_text("")
    assert "--out" in _usage_error(["--out", str(a_file)], capsys)


def test_quick_takes_no_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--quick" in _usage_error(["--quick=yes"], capsys)


def test_profile_takes_no_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--profile" in _usage_error(["--profile=yes"], capsys)


def test_unknown_store(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--store" in _usage_error(["--store", "mongo"], capsys)


def test_unknown_store_from_environment(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STORE", "mongo")
    assert "STORE" in _usage_error([], capsys)


def test_store_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORE", "cassandra")
    assert parse_args([]).store == "cassandra"
    assert parse_args(["--store", "sqlite"]).store == "sqlite"


@pytest.mark.parametrize("value", ["0", "17", "two", "-1"])
def test_bad_workers(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert "--workers" in _usage_error(["--workers", value], capsys)


def test_unknown_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert "unrecognized arguments" in _usage_error(["--size", "huge"], capsys)
