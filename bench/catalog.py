"""The symbol catalog at scale: deriving versions, as-of lookups (Python and SQL), and the backtest join."""

import random
import tempfile
import time
from datetime import UTC, datetime, timedelta

import polars as pl
from psycopg import sql

from bench.compute import peak_mib, synthetic_prices
from bench.pipeline import bench_platform, seed_prices
from trading_assets import catalog
from trading_assets.compute.scd2 import SYMBOL_FIELDS, SYMBOL_VERSIONED, UTC_TIME, derive_versions
from trading_assets.io import catalog_store
from trading_assets.io.postgres import connect, copy_frame

FIRST = datetime(2015, 1, 1, tzinfo=UTC)


def symbol_log(symbols: int, versions: int) -> pl.DataFrame:
    """`versions` upserts per symbol, a week apart, each changing the tick size."""
    index = pl.col("observation_id") - 1
    return (
        pl.DataFrame({"observation_id": pl.int_range(1, symbols * versions + 1, eager=True)})
        .with_columns(
            symbol=pl.format("NYSE:S{}", (index // versions).cast(pl.String).str.zfill(5)),
            action=pl.lit("upsert"),
            source=pl.lit("bench"),
            effective_at=pl.lit(FIRST, UTC_TIME) + pl.duration(weeks=index % versions),
            recorded_at=pl.lit(FIRST, UTC_TIME),
            tick_size=0.01 * (1 + index % versions).cast(pl.Float64),
            timezone=pl.lit("America/New_York"),
            exchange=pl.lit("NYSE"),
        )
        .with_columns(
            pl.lit(None, dtype).alias(f)
            for f, dtype in SYMBOL_FIELDS.items()
            if f not in ("exchange", "tick_size", "timezone")
        )
    )


def catalog_at_scale(symbols: int, versions: int, bar_assets: int, bar_days: int) -> None:
    print(f"\nsymbol catalog: {symbols:,} symbols x {versions} versions; bars join: {bar_assets} x {bar_days} days")
    observations = symbol_log(symbols, versions)
    started = time.perf_counter()
    derived = derive_versions(observations, SYMBOL_FIELDS, SYMBOL_VERSIONED)
    derive_seconds = time.perf_counter() - started
    assert derived.height == symbols * versions
    with tempfile.TemporaryDirectory() as home, bench_platform(home) as (settings, url):
        with connect(url) as conn:
            columns = ["symbol", "action", "effective_at", "recorded_at", "source", "exchange", "tick_size", "timezone"]
            copy_frame(conn, sql.SQL("catalog.symbol_observations"), observations, columns)
            conn.commit()
            started = time.perf_counter()
            catalog_store.lock_catalog(conn)
            catalog_store.rederive_symbols(conn)
            conn.commit()
            rederive_seconds = time.perf_counter() - started
            conn.execute("analyze catalog.symbols")
            conn.commit()
        started = time.perf_counter()
        catalog.publish_lakehouse(url, settings.lakehouse)
        publish_seconds = time.perf_counter() - started

        rng = random.Random(3)
        probes = [
            (f"NYSE:S{rng.randrange(symbols):05d}", FIRST + timedelta(days=rng.uniform(-30, versions * 7 + 30)))
            for _ in range(20_000)
        ]
        catalog.get_instrument(probes[0][0], probes[0][1], settings=settings)  # loads the catalog once
        started = time.perf_counter()
        found = sum(catalog.get_instrument(s, t, settings=settings) is not None for s, t in probes)
        python_us = (time.perf_counter() - started) / len(probes) * 1e6
        with connect(url) as conn:
            query = "select tick_size from catalog.symbols_as_of(%s) where symbol = %s"
            started = time.perf_counter()
            sql_found = sum(bool(conn.execute(query, (t, s)).fetchall()) for s, t in probes[:2000])
            sql_ms = (time.perf_counter() - started) / 2000 * 1e3
        assert sql_found == sum(catalog.get_instrument(s, t, settings=settings) is not None for s, t in probes[:2000])

        prices = synthetic_prices(bar_assets, bar_days, first=FIRST.date()).with_columns(
            asset_id=pl.col("asset_id").cast(pl.Int32)
        )
        seed_prices(url, prices)
        bars = prices.with_columns(
            bar_seq=pl.int_range(1, pl.len() + 1).over("asset_id"),
            time_open_bar=pl.col("trade_date").cast(pl.Datetime("us", "UTC")),
            time_close_bar=pl.col("trade_date").cast(pl.Datetime("us", "UTC")) + pl.duration(days=1),
        ).drop("volume")
        with connect(url) as conn:
            copy_frame(conn, sql.SQL("market.price_bars_1d"), bars)
            conn.execute("update market.dim_assets set catalog_symbol = 'NYSE:S' || lpad((asset_id - 1)::text, 5, '0')")
            conn.execute("analyze market.price_bars_1d")
            conn.commit()
            started = time.perf_counter()
            joined, matched = conn.execute(
                "select count(*), count(tick_size) from catalog.price_bars_1d_with_symbol"
            ).fetchone()
            join_seconds = time.perf_counter() - started
    print(f"{'what':<52} {'result':>22}")
    print(f"{'derive versions (pure polars)':<52} {derive_seconds:>20.2f} s")
    print(f"{'re-derive every symbol in PostgreSQL (read+derive+COPY)':<52} {rederive_seconds:>20.2f} s")
    print(f"{'publish symbols.parquet + exchanges.parquet':<52} {publish_seconds:>20.2f} s")
    lookups = f"get_instrument as_of, Python API (found {found:,}/{len(probes):,})"
    print(f"{lookups:<52} {python_us:>19.1f} us")
    print(f"{'catalog.symbols_as_of(ts) for one symbol, SQL':<52} {sql_ms:>19.3f} ms")
    print(f"{f'bars-to-symbol as-of join ({joined:,} bars, {matched:,} matched)':<52} {join_seconds:>20.2f} s")
    print(f"peak memory of this Python process {peak_mib():,.0f} MiB")
