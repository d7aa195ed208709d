"""Capacity: where a growing database is heading, from its measured sizes."""

from datetime import datetime, timedelta

import polars as pl

GIB = 1024**3
# The maintenance guide's storage thresholds: at 8 GB plan (WARN), at 15 GB act (ERROR), 25 GB is the disk's limit.
THRESHOLDS_GB = (3, 8, 15, 25)
WARN_AT_GB, ERROR_AT_GB = 8, 15


def growth_per_day(sizes: pl.DataFrame) -> float | None:
    """Bytes a day by least squares over (measured_at, bytes); None with fewer than two days apart."""
    if sizes.height < 2:
        return None
    days = (sizes["measured_at"] - sizes["measured_at"].min()).dt.total_seconds() / 86_400
    if days.max() < 1:
        return None
    x, y = days.to_numpy(), sizes["bytes"].cast(pl.Float64).to_numpy()
    x_mean, y_mean = x.mean(), y.mean()
    return float(((x - x_mean) * (y - y_mean)).sum() / ((x - x_mean) ** 2).sum())


def next_threshold(size: int, growth: float | None, now: datetime) -> tuple[int | None, datetime | None]:
    """(the next threshold in GB above `size`, when growth reaches it; None if it does not grow)."""
    above = [t for t in THRESHOLDS_GB if t * GIB > size]
    if not above:
        return None, None
    if not growth or growth <= 0:
        return above[0], None
    return above[0], now + timedelta(days=(above[0] * GIB - size) / growth)


def projected(size: int, growth: float | None, months: int) -> int:
    return int(size + (growth or 0) * 30.44 * months)
