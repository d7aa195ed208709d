"""Intraday: a trading day of minute files for many instruments ingested and rolled through Dagster, and a year of
one instrument's minutes rolled to every resolution against polars' group_by_dynamic."""

import tempfile
import time
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl

from bench.compute import peak_mib
from bench.pipeline import bench_platform
from trading_assets.compute import intraday
from trading_assets.defs.partitions import key_range_for_dates, monthly_partitions, range_tags
from trading_assets.defs.trading.intraday import INTRADAY_JOB, intraday_folder
from trading_assets.orchestration import run_job


def _session_minutes(symbols: int, days: list[date], seed: int = 11) -> pl.DataFrame:
    """Random-walk minute bars (MINUTE_SCHEMA) of `symbols` US instruments over the XNYS sessions from the first
    to the last of `days`, every minute of each session."""
    rng = np.random.default_rng(seed)
    calendar = intraday.sessions(["US"], days[0], days[-1])
    stamps = np.array(
        [
            (opened + timedelta(minutes=m)).replace(tzinfo=None)
            for opened, closed in calendar.select("open_at", "close_at").iter_rows()
            for m in range(int((closed - opened).total_seconds() // 60))
        ],
        dtype="datetime64[us]",
    )
    frames = []
    for number in range(symbols):
        closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.0005, stamps.size)))
        opens_ = np.concatenate([[100.0], closes[:-1]])
        spread = np.abs(rng.normal(0, 0.0003, stamps.size)) * closes
        frames.append(
            pl.DataFrame(
                {
                    "exchange": "US",
                    "symbol": f"S{number:04d}",
                    "ts": stamps,
                    "open": opens_,
                    "high": np.maximum(opens_, closes) + spread,
                    "low": np.minimum(opens_, closes) - spread,
                    "close": closes,
                    "volume": rng.integers(100, 10_000, stamps.size).astype(float),
                    "vwap": None,
                    "trade_count": None,
                    "oi": None,
                }
            ).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
        )
    return pl.concat(frames).cast(intraday.MINUTE_SCHEMA)


def ingest_day(symbols: int) -> None:
    """One session of minute files for `symbols` instruments, landed and read by the intraday job."""
    day = date(2024, 3, 5)
    minutes = _session_minutes(symbols, [day])
    with tempfile.TemporaryDirectory() as home, bench_platform(home) as (settings, _):
        folder = intraday_folder(settings)
        folder.mkdir(parents=True)
        for (symbol,), frame in minutes.partition_by("symbol", as_dict=True).items():
            frame.select(
                ts=pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"), open="open", high="high", low="low",
                close="close", volume="volume",
            ).write_csv(folder / f"US_{symbol}.csv")  # fmt: skip
        partitions = monthly_partitions(settings)
        started = time.perf_counter()
        summary = run_job(INTRADAY_JOB, tags=range_tags(*key_range_for_dates(partitions, day, day)))
        seconds = time.perf_counter() - started
        if not summary.success:
            raise RuntimeError(f"intraday run failed: {summary.errors}")
        (metadata,) = [m for _, _, m in summary.materializations]
        print(
            f"\nintraday ingestion, {symbols} instruments x one session of minutes ({minutes.height:,} minutes), "
            f"through Dagster"
        )
        print(f"{'step':<44} {'seconds':>8} {'rows':>12} {'rows/s':>12}")
        rows = metadata["run_rows_written"]
        print(f"{'ingest + roll to 5min/15min/1h/1D (run)':<44} {seconds:>8.2f} {rows:>12,} {rows / seconds:>12,.0f}")
        print(f"{'  inside the asset':<44} {metadata['seconds']:>8.2f}")
        print(f"peak memory {peak_mib():,.0f} MiB")


def roll_year() -> None:
    """A year of one instrument's minutes to every resolution, against group_by_dynamic offset to the open."""
    days = [date(2023, 1, 3), date(2023, 12, 29)]
    minutes = _session_minutes(1, days)
    calendar = intraday.sessions(["US"], days[0], days[-1])
    clock = {"US": datetime(2024, 1, 1, tzinfo=UTC)}

    def ours() -> pl.DataFrame:
        return intraday.roll_up(intraday.minute_rows(minutes, calendar), calendar, clock)

    def baseline() -> pl.DataFrame:
        # The independent reference: group_by_dynamic in New York time from 09:30 (regular sessions only; it
        # knows no early close), then one bar per day.
        local = minutes.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York")).sort("ts")
        aggregations = [
            pl.col("open").first(), pl.col("high").max(), pl.col("low").min(), pl.col("close").last(),
            pl.col("volume").sum(),
        ]  # fmt: skip
        frames = [
            local.group_by_dynamic("ts", every=every, offset="9h30m", start_by="window").agg(aggregations)
            for every in ("5m", "15m", "1h")
        ]
        frames.append(local.group_by(pl.col("ts").dt.date()).agg(aggregations))
        return pl.concat(frames, how="diagonal_relaxed")

    timings = {}
    for name, build in (("polars group_by_dynamic (baseline)", baseline), ("trading_assets roll_up", ours)):
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            out = build()
            best = min(best, time.perf_counter() - started)
        timings[name] = (best, out.height)
    print(f"\nrolling a year of minutes ({minutes.height:,}, {len(calendar)} sessions) to 5min/15min/1h/1D (best of 3)")
    print(f"{'implementation':<44} {'seconds':>8} {'bars':>10} {'minutes/s':>12}")
    for name, (seconds, bars) in timings.items():
        print(f"{name:<44} {seconds:>8.3f} {bars:>10,} {minutes.height / seconds:>12,.0f}")
    (base, _), (mine, _) = timings.values()
    print(f"ratio {mine / base:.2f}; peak memory {peak_mib():,.0f} MiB")
