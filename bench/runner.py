"""Runs the chosen scenarios one after the other, each against a fresh system, and writes the
results. A scenario that fails is recorded as ``failed`` (its service logs are kept under
``<out>/logs/<scenario>``) and the suite goes on; a system that cannot start at all (for
example ``STORE=cassandra`` without a usable backend) stops the run with the reason."""

import datetime
import os
import platform
import shlex
import sys
import time
import traceback
from typing import Any

from bench.cli import Options
from bench.plots import write_plots
from bench.report import build, scenario_object, write
from bench.scenario import Context, Outcome
from bench.scenarios import OWN_SYSTEMS, SCENARIOS
from bench.sizes import SMOKE, STANDARD
from bench.system import SystemUnavailable, SystemUnderTest, raise_file_limit


async def run_suite(options: Options) -> int:
    """Run, write ``latest.json``/``latest.md``/plots; 0 if no scenario failed."""
    raise_file_limit()
    started = time.monotonic()
    meta = _meta(options)
    outcomes: dict[str, Outcome] = {}
    entries: dict[str, dict[str, Any]] = {}
    for name in options.scenarios:
        _say(f"{name}: starting a fresh system (store {options.store})")
        scenario_started = time.monotonic()
        outcome = await _run_one(name, options)
        outcomes[name] = outcome
        entries[name] = scenario_object(outcome, time.monotonic() - scenario_started)
        _say(f"{name}: {_summary(entries[name])}")
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    result = build(meta, entries, judged=not options.quick)
    json_path, md_path = write(result, options.out)
    plots = write_plots(outcomes, options.out)
    _say(f"wrote {json_path}, {md_path} and {len(plots)} plots in {meta['elapsed_s']} s")
    return 1 if any(entry["status"] == "failed" for entry in entries.values()) else 0


async def _run_one(name: str, options: Options) -> Outcome:
    system = SystemUnderTest(options.store)
    try:
        if name not in OWN_SYSTEMS:
            system.start()
    except SystemUnavailable as exc:
        hint = "" if options.store == "sqlite" else (
            f"\n(STORE={options.store} sets COURIER_STORE_BACKEND={options.store}; the backend "
            "must exist and its COURIER_STORE_* settings point at a running node)")
        raise SystemExit(f"bench: {name}: {exc}{hint}") from None
    loadavg_1m = round(os.getloadavg()[0], 2)
    ctx = Context(name=name, system=system, sizes=SMOKE if options.quick else STANDARD,
                  workers=options.workers,
                  profile_dir=options.out / "profiles" if options.profile else None)
    try:
        outcome = await SCENARIOS[name](ctx)
    except Exception as exc:
        system.keep_logs(options.out / "logs" / name)
        _say(f"{name} failed:\n{traceback.format_exc()}")
        return Outcome({}, status="failed", reason=f"{type(exc).__name__}: {exc}")
    finally:
        system.stop()
    outcome.figures.update(ctx.measured)
    outcome.figures["loadavg_1m_before"] = loadavg_1m
    return outcome


def _meta(options: Options) -> dict[str, Any]:
    return {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "bench", *sys.argv[1:]]),
        "size": "smoke" if options.quick else "standard",
        "store": options.store,
        "workers": options.workers,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "loadavg_before": [round(x, 2) for x in os.getloadavg()]},
    }


def _summary(entry: dict[str, Any]) -> str:
    if entry["status"] != "ok":
        return f"{entry['status']}: {str(entry.get('reason', '')).splitlines()[0]}"
    shown = ("p50_ms", "p99_ms", "delivered_per_s", "max_per_s", "stored_to_delivered",
             "server_cpu_us_per_msg", "sent", "delivered", "lost",
             "duplicates", "out_of_order", "seconds", "connections", "kb_per_connection")
    return ", ".join(f"{key} {entry[key]}" for key in shown if entry.get(key) is not None)


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)
