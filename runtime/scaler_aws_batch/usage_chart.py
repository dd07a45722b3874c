"""``scaler-batch usage FILE --chart OUT.png``: a run's estimated cost over time, per compute kind and in total.

matplotlib is an optional dependency (``pip install 'scaler-aws-batch[chart]'``); everything else in the usage
report works without it.
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Sequence

from scaler_aws_batch.usage import PriceTable, UsageRecord

SECONDS_PER_MINUTE = 60.0


def cost_series(records: Sequence[UsageRecord], prices: PriceTable) -> dict[str, list[tuple[float, float]]]:
    """Cumulative estimated cost (USD) at each job's stop, in minutes since the run's first job was created; one
    series per compute kind plus ``total``. Records without a stop time are left out."""
    timed = sorted(
        (record for record in records if record.usage.stopped_at is not None), key=lambda r: r.usage.stopped_at or 0.0
    )
    if not timed:
        return {}
    origin = min(record.usage.created_at or record.usage.stopped_at or 0.0 for record in timed)
    series: dict[str, list[tuple[float, float]]] = {"total": [(0.0, 0.0)]}
    running: dict[str, float] = {"total": 0.0}
    for record in timed:
        minute = ((record.usage.stopped_at or origin) - origin) / SECONDS_PER_MINUTE
        cost = prices.cost(record)
        for name in ("total", record.usage.compute.value):
            if name not in series:
                series[name] = [(0.0, 0.0)]
                running[name] = 0.0
            running[name] += cost
            series[name].append((minute, running[name]))
    return series


def write_cost_chart(records: Sequence[UsageRecord], prices: PriceTable, path: str) -> None:
    """Write the PNG; ValueError with the install command when matplotlib is missing or there is nothing to plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ValueError(
            "--chart needs matplotlib: pip install 'scaler-aws-batch[chart]' (or pip install matplotlib)"
        ) from exc
    series = cost_series(records, prices)
    if not series:
        raise ValueError("--chart: no finished job with a stop time in the usage log, nothing to plot")
    figure, axes = plt.subplots(figsize=(8, 4.5))
    styles = itertools.cycle(["--", ":", "-."])
    for name, points in sorted(series.items(), key=lambda item: item[0] != "total"):
        xs, ys = zip(*points, strict=True)
        axes.step(xs, ys, where="post", label=name, linestyle="-" if name == "total" else next(styles))
    axes.set_xlabel("minutes since the first job was created")
    axes.set_ylabel("estimated cost (USD), cumulative")
    axes.set_title("Estimated cost over the run", fontsize=11)
    axes.legend(loc="upper left")
    figure.text(0.01, 0.01, textwrap.fill(prices.label, 170), fontsize=6)  # what the figures are: estimates
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    try:
        figure.savefig(path, format="png", dpi=100)
    except OSError as exc:
        raise ValueError(f"--chart {path}: cannot write the PNG ({exc.strerror})") from exc
    finally:
        plt.close(figure)
