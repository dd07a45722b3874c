"""``scaler-batch usage FILE``: read a usage log back, print its summary table and (optionally) write the chart."""

from __future__ import annotations

import json
import pathlib
from typing import IO

from scaler_aws_batch.usage import UsageRecord, UsageSummary, load_price_table, summarize
from scaler_aws_batch.usage_chart import write_cost_chart


def format_summary(summary: UsageSummary) -> str:
    """The table ``scaler-batch usage`` prints."""
    total = summary.total
    counts = sorted((outcome.value, count) for outcome, count in summary.by_outcome.items())
    outcomes = ", ".join(f"{name} {count}" for name, count in counts)
    lines = [
        f"tasks: {total.tasks} in {total.jobs} job(s) ({outcomes or 'none'})",
        f"vCPU-hours: {total.vcpu_hours:.4f}   GiB-hours: {total.gib_hours:.4f}   GPU-hours: {total.gpu_hours:.4f}",
        f"estimated cost: ${total.cost:.6f}",
        f"prices: {summary.prices.label}",
        "",
    ]
    header = f"{'':<28} {'tasks':>7} {'vCPU-h':>10} {'GiB-h':>10} {'GPU-h':>8} {'est. USD':>11}"
    for title, rows in (
        ("by queue", sorted(summary.by_queue.items())),
        ("by compute kind", sorted(((k.value, t) for k, t in summary.by_compute.items()))),
    ):
        lines.append(title)
        lines.append(header)
        for name, t in rows:
            lines.append(
                f"  {name:<26} {t.tasks:>7} {t.vcpu_hours:>10.4f} {t.gib_hours:>10.4f} {t.gpu_hours:>8.4f}"
                f" {t.cost:>11.6f}"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def read_usage_log(path: str) -> list[UsageRecord]:
    """Every record in a usage log; ValueError naming the file and line for one that is not a record."""
    records: list[UsageRecord] = []
    try:
        text = pathlib.Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"cannot read usage log {path}: {exc.strerror or exc}") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(UsageRecord.from_json(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{number}: not a usage record written by --usage-log ({exc!r})") from exc
    return records


def run_usage_report(path: str, *, prices_path: str | None, chart_path: str | None, out: IO[str]) -> None:
    """``scaler-batch usage FILE``: print the summary of a usage log (and write the chart). ValueError on bad input."""
    records = read_usage_log(path)
    prices = load_price_table(prices_path)
    out.write(format_summary(summarize(records, prices)))
    if chart_path is not None:
        write_cost_chart(records, prices, chart_path)
        out.write(f"chart: {chart_path}\n")
