"""``python -m chaos`` (``make chaos``): run the fault-injection suite (see ``chaos``)."""

import shlex
import sys
import tempfile
from pathlib import Path

import uvloop

from chaos import report
from chaos.cli import Options, parse_args
from chaos.faults import FAULTS
from chaos.run import FaultResult, run_fault


async def run_suite(options: Options, command: str) -> int:
    """Every chosen fault on a fresh system, in turn; 0 when none lost, duplicated or
    reordered a message."""
    base = options.work_dir or Path(tempfile.mkdtemp(prefix="courier-chaos-"))
    base.mkdir(parents=True, exist_ok=True)
    results: list[FaultResult] = []
    for name in options.faults:
        _say(f"{name}: starting")
        result = await run_fault(FAULTS[name], options.settings, base / name,
                                 keep_logs=options.keep_logs)
        results.append(result)
        t = result.tally
        _say(f"{name}: accepted {t.accepted} (unanswered {t.unanswered}), "
             f"delivered {t.delivered}/{t.expected}, lost {t.lost}, "
             f"duplicates {t.duplicates}, out of order {t.out_of_order}, "
             f"recovery {t.recovery_s if t.recovery_s is None else round(t.recovery_s, 2)} s"
             + "".join(f"\n    {note}" for note in result.notes))
    report.write(options.out, report.block(results, options.settings, command))
    _say(f"wrote {options.out}")
    return 0 if all(result.clean for result in results) else 1


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    command = shlex.join(["python", "-m", "chaos", *(sys.argv[1:] if argv is None else argv)])
    return uvloop.run(run_suite(options, command))


def _say(text: str) -> None:
    print(f"[chaos] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
