"""Reads for backtests: prices and daily bars as known at a past time, and adjusted prices (a view) with the
multi-day families and EMAs built on them on demand, against reads of the stored tables."""

import tempfile
import time
from collections.abc import Callable
from datetime import date

import polars as pl
from psycopg import sql

from bench.compute import peak_mib, synthetic_prices
from bench.pipeline import bench_platform, run_bars, seed_prices
from trading_assets import market
from trading_assets.io.postgres import connect, copy_frame
from trading_assets.sources.lean_reference import FACTOR_SCHEMA


def _timed(action: Callable[[], pl.DataFrame]) -> tuple[float, int]:
    started = time.perf_counter()
    rows = action().height
    return time.perf_counter() - started, rows


def _seed_reference(url: str, assets: int, first: date, last: date) -> None:
    """Each asset its own security under one ticker, with a 2-for-1 split mid-history and a dividend a quarter."""
    securities = [f"SYN{a:05d}" for a in range(1, assets + 1)]
    days = pl.date_range(first, last, "3mo", eager=True).to_list()
    split_at = days[len(days) // 2]
    factors = pl.DataFrame(
        [
            (s, day, 0.99 ** (len(days) - n), 0.5 if day < split_at else 1.0, 100.0, "bench", n + 1)
            for s in securities
            for n, day in enumerate(days)
        ],
        schema=list(FACTOR_SCHEMA),
        orient="row",
    )
    tickers = pl.DataFrame(
        {"security": securities, "valid_from": first, "valid_until": date(2050, 12, 31), "ticker": securities}
    ).with_columns(exchange=pl.lit("NYSE"), source_file=pl.lit("bench"), source_line=pl.lit(1))
    with connect(url) as conn:
        copy_frame(conn, sql.SQL("market.corporate_actions"), factors)
        copy_frame(conn, sql.SQL("catalog.ticker_history"), tickers)
        conn.execute("analyze market.corporate_actions")
        conn.execute("analyze catalog.ticker_history")


def known_at_and_adjusted(assets: int, days: int) -> None:
    print(f"\nreads as known at a time, and adjusted reads: {assets} assets x {days} days")
    with tempfile.TemporaryDirectory() as home, bench_platform(home) as (settings, url):
        prices = synthetic_prices(assets, days).with_columns(asset_id=pl.col("asset_id").cast(pl.Int32))
        first, last = prices["trade_date"].min(), prices["trade_date"].max()
        seed_prices(url, prices)
        run_bars(settings, first, last, ("1d",))
        _seed_reference(url, assets, first, last)
        with connect(url, autocommit=True) as conn:
            known = conn.execute("select clock_timestamp()").fetchone()[0]
            # A revision of one day in a hundred, by SQL: each is kept in market.price_revisions.
            started = time.perf_counter()
            revised = conn.execute(
                "update market.price_histories set close = close * 1.01 "
                "where (trade_date - date '2000-01-01') % 100 = 0"
            ).rowcount
            revise_seconds = time.perf_counter() - started
            conn.execute("analyze market.price_revisions")
        symbols = [f"SYN{a:05d}" for a in range(1, assets + 1)]
        one = symbols[:1]
        measured = {
            "price_histories, current (all assets)": _timed(lambda: market.prices(symbols, settings=settings)),
            "price_histories as known before the revisions": _timed(
                lambda: market.prices(symbols, as_known_at=known, settings=settings)
            ),
            "price_bars_1d stored (all assets)": _timed(lambda: market.daily_bars(symbols, settings=settings)),
            "price_bars_1d as known then, rebuilt (all assets)": _timed(
                lambda: market.daily_bars(symbols, as_known_at=known, settings=settings)
            ),
            "price_bars_1d as known then, rebuilt (one asset)": _timed(
                lambda: market.daily_bars(one, as_known_at=known, settings=settings)
            ),
            "price_bars_1d_adjusted view, split (all)": _timed(
                lambda: market.adjusted_daily_bars(symbols, "split", settings=settings)
            ),
            "adjusted 1M_CAL bars on demand (one security)": _timed(
                lambda: market.adjusted_bars(one, "1M_CAL", "split", settings=settings)
            ),
            "adjusted 7D bars on demand (all)": _timed(
                lambda: market.adjusted_bars(symbols, "7D", "split", settings=settings)
            ),
            "adjusted daily EMAs 10/50/200 on demand (one security)": _timed(
                lambda: market.adjusted_emas(one, [10, 50, 200], "total_return", settings=settings)
            ),
        }
    print(f"{revised:,} prices revised by SQL in {revise_seconds:.2f} s (the trigger keeps each old row)")
    print(f"{'read':<58} {'rows':>11} {'seconds':>9} {'rows/s':>12}")
    for what, (seconds, rows) in measured.items():
        print(f"{what:<58} {rows:>11,} {seconds:>9.2f} {rows / seconds:>12,.0f}")
    print(f"peak memory of this Python process {peak_mib():,.0f} MiB")
