"""``latest.json`` and ``latest.md`` of a run: every scenario's figures, the ratios to the
floor, and the targets met or missed."""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from bench.scenario import Outcome
from bench.targets import judge, ratios

#: Fields every scenario object carries (None where a figure does not apply).
COMMON_FIELDS: Final = ("p50_ms", "p95_ms", "p99_ms", "delivered_per_s", "sent", "delivered",
                        "lost", "duplicates", "out_of_order")
#: Scenario-specific fields shown in the Markdown table.
EXTRA_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "floor-nats": ("max_per_s",),
    "direct-latency": ("offered_per_s", "server_cpu_us_per_msg"),
    "direct-throughput": ("stored_per_s", "storage_lag_s", "stored_to_delivered",
                          "server_cpu_us_per_msg"),
    "group-fanout": ("members",),
    "group-paced": ("members", "offered_per_s"),
    "offline-catchup": ("seconds", "synced_s"),
    "media": ("courier_up_mb_s_1mb", "courier_down_mb_s_1mb", "seaweedfs_up_mb_s_1mb",
              "seaweedfs_down_mb_s_1mb", "courier_up_mb_s_20mb", "courier_down_mb_s_20mb",
              "seaweedfs_up_mb_s_20mb", "seaweedfs_down_mb_s_20mb"),
    "history": ("hot_p50_ms", "hot_p99_ms", "archive_p50_ms", "archive_p99_ms",
                "archive_cold_ms", "archived"),
    "connections": ("connections", "rss_mb", "kb_per_connection", "heartbeat_cpu_pct",
                    "connects_per_s"),
    "e2ee-cost": ("olm_1to1_us", "megolm_group_us", "group_members", "group_setup_ms"),
    "partition-scaling": ("summary",),
}


def scenario_object(outcome: Outcome, elapsed_s: float) -> dict[str, Any]:
    """One entry of ``"scenarios"``: status, the common fields, then the rest."""
    entry: dict[str, Any] = {"status": outcome.status}
    if outcome.reason is not None:
        entry["reason"] = outcome.reason
    entry.update({name: outcome.figures.get(name) for name in COMMON_FIELDS})
    entry.update({k: v for k, v in outcome.figures.items() if k not in entry})
    entry["latency"] = outcome.latency_label
    entry["elapsed_s"] = round(elapsed_s, 1)
    return entry


def build(meta: Mapping[str, Any], scenarios: Mapping[str, dict[str, Any]],
          judged: bool) -> dict[str, Any]:
    ok = {name: entry for name, entry in scenarios.items() if entry["status"] == "ok"}
    return {**meta, "scenarios": dict(scenarios), "ratios_to_floor": ratios(ok),
            "targets": judge(ok) if judged else []}


def write(result: Mapping[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``latest.json`` and ``latest.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "latest.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path = out_dir / "latest.md"
    md_path.write_text(markdown(result))
    return json_path, md_path


def markdown(result: Mapping[str, Any]) -> str:
    lines = [
        f"# Benchmark results ({result['size']} sizes, store {result['store']})",
        "",
        f"`{result['command']}` at {result['generated_at']} on {result['machine']['cpus']} "
        f"cores; load average before the run {result['machine']['loadavg_before']}.",
        "",
        "| scenario | status | p50 ms | p95 ms | p99 ms | delivered/s | sent | delivered "
        "| lost | dup | ooo | other |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, entry in result["scenarios"].items():
        cells = [_cell(entry.get(field)) for field in COMMON_FIELDS]
        other = ", ".join(f"{field} {_cell(entry.get(field))}"
                          for field in EXTRA_FIELDS.get(name, ()) if field in entry)
        if entry["status"] != "ok":
            other = entry.get("reason", "").splitlines()[0] if entry.get("reason") else ""
        lines.append(f"| {name} | {entry['status']} | " + " | ".join(cells) + f" | {other} |")
    if result["ratios_to_floor"]:
        lines += ["", "| ratio to the floor | value |", "|---|---:|"]
        lines += [f"| {name} | {_cell(value)} |"
                  for name, value in result["ratios_to_floor"].items()]
    if result["targets"]:
        lines += ["", "| scenario | target | measured | bound | met |", "|---|---|---:|---:|---|"]
        lines += [f"| {t['scenario']} | {t['target']} | {_cell(t['measured'])} | "
                  f"{_cell(t['bound'])} | {t.get('note') or _verdict(t['met'])} |"
                  for t in result["targets"]]
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _verdict(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "-"}[met]
