"""PNG plots of a run (matplotlib, Agg): the latency distribution of each scenario and the
delivered rate over time of each scenario that has one."""

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the backend is chosen first
import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench.scenario import Outcome

BINS = 80
DPI = 110


def write_plots(outcomes: Mapping[str, Outcome], out_dir: Path) -> list[Path]:
    """``latency-<scenario>.png`` and ``throughput-<scenario>.png`` where there is data."""
    written = []
    for name, outcome in outcomes.items():
        if outcome.latencies_ms is not None and len(outcome.latencies_ms):
            written.append(_latency(name, outcome, out_dir / f"latency-{name}.png"))
        if outcome.timeline is not None and len(outcome.timeline[0]):
            written.append(_throughput(name, outcome, out_dir / f"throughput-{name}.png"))
    return written


def _latency(name: str, outcome: Outcome, path: Path) -> Path:
    assert outcome.latencies_ms is not None
    samples = np.clip(outcome.latencies_ms, 1e-3, None)
    fig, ax = plt.subplots(figsize=(7, 4))
    edges = np.logspace(np.log10(samples.min()), np.log10(samples.max() * 1.01), BINS)
    ax.hist(samples, bins=edges.tolist(), color="#3b75af")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    for q, style in ((50, "-"), (95, "--"), (99, ":")):
        value = float(np.percentile(samples, q))
        ax.axvline(value, color="#c03d3e", linestyle=style, label=f"p{q} {value:.2f} ms")
    ax.set_xlabel(f"{outcome.latency_label} (ms, log scale)")
    ax.set_ylabel("messages" if name != "connections" else "connections")
    ax.set_title(f"{name}: latency distribution ({len(samples):,} samples)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _throughput(name: str, outcome: Outcome, path: Path) -> Path:
    assert outcome.timeline is not None
    seconds, rate = outcome.timeline
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.step(seconds, rate, where="post", color="#3b75af")
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("delivered per second")
    ax.set_title(f"{name}: throughput over time")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
