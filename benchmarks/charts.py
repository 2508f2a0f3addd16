"""PNG charts of a seed_load_test.py run: one figure of four panels per family."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from seed_load_test import Row, median, row_numbers

COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]


def draw(
    family: str, rows: list[Row], runs: dict[str, list[dict[str, Any]]], results: dict[str, Any],
    out: Path,
) -> list[Path]:  # fmt: skip
    numbers = {row.label: row_numbers(runs[row.label]) for row in rows}
    labels = [row.label for row in rows]
    figure, axes = plt.subplots(2, 2, figsize=(14, 9.5))
    _throughput(axes[0][0], labels, numbers, "light requests/s" if family == "http" else "Ping/s")
    _latency(axes[0][1], labels, numbers)
    _lag_over_time(axes[1][0], rows, runs)
    _probes_over_time(axes[1][1], rows, runs)
    heavy = results["heavy_document"]
    settings = results["settings"]
    figure.suptitle(
        f"Seed load test, {family}: {settings['connections']} light connections, "
        f"{settings['heavy']} heavy validations in flight ({heavy['bytes'] / 1e6:.1f} MB, "
        f"{heavy['cpu_seconds'] * 1000:.0f} ms CPU each); medians of {settings['repeat']} runs\n"
        f"{results['machine']}",
        fontsize=10,
    )
    figure.tight_layout()
    path = out / f"seed-{family}.png"
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return [path]


def _short(label: str) -> str:
    return label.replace(" (", "\n(").replace(", ", ",\n", 1)


def _throughput(axis: Any, labels: list[str], numbers: dict[str, Any], unit: str) -> None:
    width = 0.38
    for offset, (key, name) in enumerate((("alone", "alone"), ("heavy", "with heavy load"))):
        values = [median(numbers[label][key]) for label in labels]
        low = [v - min(numbers[label][key]) for v, label in zip(values, labels, strict=True)]
        high = [max(numbers[label][key]) - v for v, label in zip(values, labels, strict=True)]
        positions = [i + (offset - 0.5) * width for i in range(len(labels))]
        bars = axis.bar(positions, values, width, yerr=[low, high], capsize=3, label=name,
                        color=COLOURS[offset])  # fmt: skip
        axis.bar_label(bars, fmt="{:,.0f}", fontsize=7, padding=2)
    axis.set_xticks(range(len(labels)), [_short(label) for label in labels], fontsize=7)
    axis.set_ylabel(unit)
    axis.set_title("Light throughput (bars: median; whiskers: min-max of runs)", fontsize=9)
    axis.legend(fontsize=8)


def _latency(axis: Any, labels: list[str], numbers: dict[str, Any]) -> None:
    series = [
        ("p50_alone", "p50 alone"),
        ("p90_alone", "p90 alone"),
        ("p50_heavy", "p50 with heavy"),
        ("p90_heavy", "p90 with heavy"),
    ]
    width = 0.2
    for offset, (key, name) in enumerate(series):
        values = [median(numbers[label][key]) for label in labels]
        positions = [i + (offset - 1.5) * width for i in range(len(labels))]
        bars = axis.bar(positions, values, width, label=name, color=COLOURS[offset])
        axis.bar_label(bars, fmt="{:.1f}", fontsize=6, padding=1)
    axis.set_xticks(range(len(labels)), [_short(label) for label in labels], fontsize=7)
    axis.set_ylabel("ms")
    axis.set_title("Light request latency, p50 and p90 (median of runs)", fontsize=9)
    axis.legend(fontsize=8)


def _lag_over_time(axis: Any, rows: list[Row], runs: dict[str, list[dict[str, Any]]]) -> None:
    drawn = False
    for index, row in enumerate(rows):
        series = runs[row.label][0]["with_heavy"]["lag"]["series"]
        if not series:
            continue
        axis.plot([s[0] for s in series], [s[2] for s in series], marker=".",
                  color=COLOURS[index % len(COLOURS)], label=row.label)  # fmt: skip
        drawn = True
    axis.set_xlabel("seconds into the phase with heavy load (first run)")
    axis.set_ylabel("ms (p90 of each second's heartbeats)")
    axis.set_yscale("symlog", linthresh=1)
    axis.axhline(100, color="grey", linestyle=":", linewidth=1)
    axis.text(0.01, 110, "stall threshold 100 ms", fontsize=7, color="grey",
              transform=axis.get_yaxis_transform())  # fmt: skip
    axis.set_title("Event-loop lag from the server's own histogram (sync gRPC has none)",
                   fontsize=9)  # fmt: skip
    if drawn:
        axis.legend(fontsize=7)


def _probes_over_time(axis: Any, rows: list[Row], runs: dict[str, list[dict[str, Any]]]) -> None:
    for index, row in enumerate(rows):
        samples = runs[row.label][0]["with_heavy"]["probes"]["series"]
        failed = sum(run["with_heavy"]["probes"]["failed"] for run in runs[row.label])
        sent = sum(run["with_heavy"]["probes"]["sent"] for run in runs[row.label])
        colour = COLOURS[index % len(COLOURS)]
        answered = [(t, took * 1000) for t, took in samples if took is not None]
        axis.plot([a[0] for a in answered], [a[1] for a in answered], ".", color=colour,
                  label=f"{row.label}: {failed} of {sent} failed (all runs)")  # fmt: skip
        lost = [t for t, took in samples if took is None]
        axis.plot(lost, [1000] * len(lost), "x", color=colour, markersize=8)
    axis.set_yscale("log")
    axis.set_xlabel("seconds into the phase with heavy load (first run)")
    axis.set_ylabel("probe answer time, ms (x at 1000: failed)")
    axis.set_title("Prober: one light request every 200 ms on a new connection, 1 s timeout",
                   fontsize=9)  # fmt: skip
    axis.legend(fontsize=7)
