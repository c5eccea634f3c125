"""Every flag of ``python -m chaos`` refuses bad input with a usage error naming the flag,
and accepts the values at its bounds."""

from pathlib import Path

import pytest

from chaos.cli import (
    DEFAULT_OUT,
    DURATION_BOUNDS,
    RATE_BOUNDS,
    SENDERS_BOUNDS,
    SETTLE_BOUNDS,
    parse_args,
)
from chaos.faults import FAULTS


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_defaults_run_every_fault_in_order() -> None:
    options = parse_args([])
    assert options.faults == tuple(FAULTS)
    assert (options.out, options.work_dir, options.keep_logs) == (DEFAULT_OUT, None, False)
    settings = options.settings
    assert (settings.rate_per_s, settings.duration_s, settings.senders, settings.settle_s) == (
        40.0, 30.0, 4, 90.0)


def test_faults_accept_commas_and_spaces_and_keep_suite_order() -> None:
    assert parse_args(["--faults", "nats-kill,router-kill"]).faults == ("router-kill",
                                                                       "nats-kill")
    assert parse_args(["--faults", "store-outage  push-kill"]).faults == ("push-kill",
                                                                         "store-outage")


@pytest.mark.parametrize("value", ["nope", "router-kill,nope", "", " , ", "ROUTER-KILL"])
def test_bad_faults(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert "--faults" in _usage_error(["--faults", value], capsys)


BOUNDS = [("--rate", RATE_BOUNDS), ("--duration", DURATION_BOUNDS),
          ("--senders", SENDERS_BOUNDS), ("--settle", SETTLE_BOUNDS)]


@pytest.mark.parametrize(("flag", "bounds"), BOUNDS)
def test_numbers_at_their_bounds_are_accepted(flag: str, bounds: tuple[float, float]) -> None:
    for value in bounds:
        settings = parse_args([flag, f"{value:g}"]).settings
        field = {"--rate": settings.rate_per_s, "--duration": settings.duration_s,
                 "--senders": settings.senders, "--settle": settings.settle_s}[flag]
        assert field == value


@pytest.mark.parametrize(("flag", "bounds"), BOUNDS)
def test_numbers_past_their_bounds_are_refused(flag: str, bounds: tuple[float, float],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    low, high = bounds
    step = 1 if flag == "--senders" else 0.5
    for value in (low - step, high + step, 0, -1, 10**20):
        assert flag in _usage_error([flag, f"{value:g}"], capsys)


@pytest.mark.parametrize("flag", ["--rate", "--duration", "--senders", "--settle"])
@pytest.mark.parametrize("value", ["abc", "", "nan", "inf", "-inf", "1e999", "0x10"])
def test_numbers_that_are_not_numbers_are_refused(flag: str, value: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert flag in _usage_error([flag, value], capsys)


def test_senders_must_be_whole(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--senders" in _usage_error(["--senders", "2.5"], capsys)


def test_out_must_be_a_file_in_an_existing_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "--out" in _usage_error(["--out", str(tmp_path)], capsys)
    assert "--out" in _usage_error(["--out", str(tmp_path / "missing" / "r.md")], capsys)
    assert parse_args(["--out", str(tmp_path / "r.md")]).out == tmp_path / "r.md"


def test_work_dir_must_not_be_a_file(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "f"
    a_file.write_text("")
    assert "--work-dir" in _usage_error(["--work-dir", str(a_file)], capsys)
    assert parse_args(["--work-dir", str(tmp_path / "new")]).work_dir == tmp_path / "new"
