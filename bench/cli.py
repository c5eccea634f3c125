"""Command line of ``python -m bench``: every option validated up front, errors name the flag."""

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.scenarios import SCENARIOS

DEFAULT_OUT: Final = Path(__file__).resolve().parent / "results"
STORES: Final = ("sqlite", "cassandra")
MAX_WORKERS: Final = 16


@dataclass(frozen=True)
class Options:
    scenarios: tuple[str, ...]
    out: Path
    quick: bool
    store: str
    workers: int
    profile: bool


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run Courier's benchmark scenarios against a fresh embedded system each "
                    "and write latest.json, latest.md and PNG plots.",
        epilog="scenarios: " + ", ".join(SCENARIOS))
    parser.add_argument("--scenarios", default=None,
                        help="names separated by commas or spaces (default: all, in order)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="results directory (default: bench/results)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke sizes: checks the harness end to end in seconds")
    parser.add_argument("--store", default=None,
                        help="message store backend: sqlite or cassandra (default: $STORE, "
                             "else sqlite)")
    parser.add_argument("--workers", default="2",
                        help=f"load generator processes, 1-{MAX_WORKERS} (default: 2)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the gateway, router and storage worker during each load "
                             "(writes <out>/profiles; costs CPU, so figures are not comparable)")
    args = parser.parse_args(argv)
    return Options(
        scenarios=_scenarios(parser, args.scenarios),
        out=_out_dir(parser, args.out),
        quick=args.quick,
        store=_store(parser, args.store),
        workers=_workers(parser, args.workers),
        profile=args.profile,
    )


def _scenarios(parser: argparse.ArgumentParser, raw: str | None) -> tuple[str, ...]:
    return choose_names(parser, "--scenarios", raw, tuple(SCENARIOS))


def choose_names(parser: argparse.ArgumentParser, flag: str, raw: str | None,
                 known: tuple[str, ...]) -> tuple[str, ...]:
    """Names from ``raw`` (separated by commas or spaces; None: all) in ``known``'s order;
    a usage error naming ``flag`` for none or an unknown one."""
    if raw is None:
        return known
    names = [name for name in raw.replace(",", " ").split() if name]
    if not names:
        parser.error(f"{flag}: give at least one name")
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"{flag}: unknown {', '.join(map(repr, unknown))}; "
                     f"choose from {', '.join(known)}")
    return tuple(name for name in known if name in names)


def _out_dir(parser: argparse.ArgumentParser, out: Path) -> Path:
    if out.exists() and not out.is_dir():
        parser.error(f"--out: {out} exists and is not a directory")
    return out


def _store(parser: argparse.ArgumentParser, raw: str | None) -> str:
    flag = "--store"
    if raw is None:
        raw, flag = os.environ.get("STORE") or "sqlite", "STORE"
    if raw not in STORES:
        parser.error(f"{flag}: unknown store {raw!r}; choose from {', '.join(STORES)}")
    return raw


def _workers(parser: argparse.ArgumentParser, raw: str) -> int:
    try:
        workers = int(raw)
    except ValueError:
        parser.error(f"--workers: not a number: {raw!r}")
    if not 1 <= workers <= MAX_WORKERS:
        parser.error(f"--workers: must be within 1-{MAX_WORKERS}, got {workers}")
    return workers
