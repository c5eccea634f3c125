"""``python -m bench``: run the benchmark suite (see ``bench`` and ``bench.cli``)."""

import sys

import uvloop

from bench.cli import parse_args
from bench.runner import run_suite


def main(argv: list[str] | None = None) -> int:
    return uvloop.run(run_suite(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
