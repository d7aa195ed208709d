"""Throughput of the pure bar compute on synthetic GBM prices (no database, no Dagster)."""

import resource
import time
from datetime import date, timedelta

import numpy as np
import polars as pl

from trading_assets.compute.bars import calendar_bars, multi_tf_bars, validate_daily
from trading_assets.compute.calendars import EVERY_DAY, Timeframe, session_table

FAMILIES = {
    "multi_tf": ["7D", "14D", "30D", "90D", "365D"],
    "cal_iso": ["1W_CAL_ISO", "2W_CAL_ISO", "1M_CAL", "3M_CAL", "6M_CAL", "1Y_CAL"],
    "cal_us": ["1W_CAL_US", "2W_CAL_US", "1M_CAL", "3M_CAL", "6M_CAL", "1Y_CAL"],
    "cal_anchor_iso": [
        "1W_CAL_ANCHOR_ISO",
        "2W_CAL_ANCHOR_ISO",
        "1M_CAL_ANCHOR",
        "3M_CAL_ANCHOR",
        "6M_CAL_ANCHOR",
        "1Y_CAL_ANCHOR",
    ],
    "cal_anchor_us": [
        "1W_CAL_ANCHOR_US",
        "2W_CAL_ANCHOR_US",
        "1M_CAL_ANCHOR",
        "3M_CAL_ANCHOR",
        "6M_CAL_ANCHOR",
        "1Y_CAL_ANCHOR",
    ],
}


def peak_mib() -> float:
    """Peak resident memory of this process (each bench stage runs in its own process)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_prices(assets: int, days: int, seed: int = 7, first: date = date(2015, 1, 1)) -> pl.DataFrame:
    """Geometric Brownian motion closes with plausible open/high/low/volume, every calendar day."""
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0003, 0.02, size=(assets, days))
    close = 100 * np.exp(np.cumsum(returns, axis=1))
    open_ = np.concatenate([np.full((assets, 1), 100.0), close[:, :-1]], axis=1)
    spread = np.abs(rng.normal(0, 0.01, size=(assets, days)))
    dates = pl.date_range(first, first + timedelta(days=days - 1), eager=True)
    return pl.DataFrame(
        {
            "asset_id": np.repeat(np.arange(1, assets + 1), days),
            "trade_date": pl.concat([dates] * assets),
            "open": open_.ravel(),
            "high": (np.maximum(open_, close) * (1 + spread)).ravel(),
            "low": (np.minimum(open_, close) * (1 - spread)).ravel(),
            "close": close.ravel(),
            "volume": rng.integers(1_000, 1_000_000, size=assets * days).astype(float),
        }
    )


def compute_throughput(assets: int, days: int) -> None:
    raw = synthetic_prices(assets, days)
    started = time.perf_counter()
    daily, rejects = validate_daily(raw)
    timings = [("price_bars_1d (validate)", daily.height, time.perf_counter() - started)]
    daily = daily.with_columns(
        calendar=pl.lit(EVERY_DAY),
        row_index=pl.int_range(pl.len(), dtype=pl.Int64).over("asset_id"),
        first_trade_date=pl.col("trade_date").min().over("asset_id"),
    )
    first_year, last_year = daily["trade_date"].min().year, daily["trade_date"].max().year
    sessions = session_table([EVERY_DAY], date(first_year - 1, 1, 1), date(last_year + 1, 12, 31))
    for family, labels in FAMILIES.items():
        started = time.perf_counter()
        rows = 0
        for label in labels:
            timeframe = Timeframe.parse(label)
            build = multi_tf_bars if timeframe.unit == "D" else calendar_bars
            rows += build(daily, timeframe, sessions).height
        timings.append(
            (
                f"price_bars_multi_tf_{family}".replace("multi_tf_multi_tf", "multi_tf"),
                rows,
                time.perf_counter() - started,
            )
        )

    print(f"\nbar compute, {assets} assets x {days} days ({raw.height:,} daily rows, {rejects.height} rejects)")
    print(f"{'family':<40} {'rows':>12} {'seconds':>9} {'rows/s':>12}")
    for name, rows, seconds in timings:
        print(f"{name:<40} {rows:>12,} {seconds:>9.2f} {rows / seconds:>12,.0f}")
    total_rows = sum(r for _, r, _ in timings)
    total_seconds = sum(s for _, _, s in timings)
    print(f"{'total':<40} {total_rows:>12,} {total_seconds:>9.2f} {total_rows / total_seconds:>12,.0f}")
    print(f"peak resident memory of the process: {peak_mib():,.0f} MiB")
