"""Command line of ``python -m chaos``: every option validated up front, errors name the flag."""

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.cli import choose_names
from chaos.faults import FAULTS
from chaos.run import Settings

DEFAULT_OUT: Final = Path("docs/reliability.md")
#: Inclusive bounds of the numeric flags: (low, high).
RATE_BOUNDS: Final = (1.0, 500.0)
DURATION_BOUNDS: Final = (3.0, 600.0)
SENDERS_BOUNDS: Final = (1, 32)
SETTLE_BOUNDS: Final = (5.0, 600.0)


@dataclass(frozen=True)
class Options:
    faults: tuple[str, ...]
    settings: Settings
    out: Path
    work_dir: Path | None
    keep_logs: bool


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description="Inject faults into a fresh Courier system each while senders stream "
                    "messages to online and offline recipients; write the table of accepted, "
                    "delivered, lost, duplicated and out-of-order messages.",
        epilog="faults: " + ", ".join(FAULTS))
    parser.add_argument("--faults", default=None,
                        help="names separated by commas or spaces (default: all, in order)")
    parser.add_argument("--rate", default="40",
                        help=f"messages per second from all senders together, "
                             f"{RATE_BOUNDS[0]:g}-{RATE_BOUNDS[1]:g} (default: 40)")
    parser.add_argument("--duration", default="30",
                        help=f"seconds of traffic per fault, {DURATION_BOUNDS[0]:g}-"
                             f"{DURATION_BOUNDS[1]:g} (default: 30; the fault's own time is "
                             "added)")
    parser.add_argument("--senders", default="4",
                        help=f"sender users, each with a recipient user, {SENDERS_BOUNDS[0]}-"
                             f"{SENDERS_BOUNDS[1]} (default: 4)")
    parser.add_argument("--settle", default="90",
                        help=f"seconds the recipients get to sync everything after the "
                             f"traffic, {SETTLE_BOUNDS[0]:g}-{SETTLE_BOUNDS[1]:g} (default: 90)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="markdown file whose results block is rewritten "
                             "(default: docs/reliability.md)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where each fault's system lives (default: a temporary directory)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep every fault's logs (kept anyway for a fault that lost, "
                             "duplicated or reordered)")
    args = parser.parse_args(argv)
    settings = Settings(
        rate_per_s=_number(parser, "--rate", args.rate, RATE_BOUNDS),
        duration_s=_number(parser, "--duration", args.duration, DURATION_BOUNDS),
        senders=int(_number(parser, "--senders", args.senders, SENDERS_BOUNDS, integer=True)),
        settle_s=_number(parser, "--settle", args.settle, SETTLE_BOUNDS),
    )
    return Options(faults=choose_names(parser, "--faults", args.faults, tuple(FAULTS)),
                   settings=settings, out=_out(parser, args.out),
                   work_dir=_work_dir(parser, args.work_dir), keep_logs=args.keep_logs)


def _number(parser: argparse.ArgumentParser, flag: str, raw: str,
            bounds: tuple[float, float], integer: bool = False) -> float:
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        parser.error(f"{flag}: not {'an integer' if integer else 'a number'}: {raw!r}")
    low, high = bounds
    if not low <= value <= high:  # NaN fails this too
        parser.error(f"{flag}: must be within {low:g}-{high:g}, got {raw}")
    return value


def _out(parser: argparse.ArgumentParser, out: Path) -> Path:
    if out.is_dir():
        parser.error(f"--out: {out} is a directory")
    if not out.parent.is_dir():
        parser.error(f"--out: directory {out.parent} does not exist")
    return out


def _work_dir(parser: argparse.ArgumentParser, work_dir: Path | None) -> Path | None:
    if work_dir is not None and work_dir.exists() and not work_dir.is_dir():
        parser.error(f"--work-dir: {work_dir} exists and is not a directory")
    return work_dir
