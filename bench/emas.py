"""EMAs: the kernel against polars' ewm_mean, a full rebuild of every family through Dagster against its
limit, and a one-day incremental refresh with one and three years of history."""

import tempfile
import time
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
from psycopg import sql

from bench.compute import peak_mib, synthetic_prices
from bench.pipeline import bench_platform, first_build, limit_table, run_bars, seed_prices, table_sizes
from trading_assets.compute.ema import alpha, ema
from trading_assets.config import Settings
from trading_assets.defs.jobs import REFRESH_EMAS_JOB, REFRESH_MARKET_JOB
from trading_assets.defs.market.emas import EMA_KEYS
from trading_assets.defs.partitions import REBUILD_TAG, key_range_for_dates, monthly_partitions, range_tags
from trading_assets.io.ema_store import EMA_FAMILIES, EMA_SOURCES
from trading_assets.io.market_store import BAR_TABLES
from trading_assets.io.postgres import connect, copy_frame, copy_out
from trading_assets.orchestration import run_job

PERIODS = [9, 10, 21, 50, 100, 200]


def kernel_against_ewm_mean(assets: int, days: int) -> None:
    closes = synthetic_prices(assets, days).select("asset_id", "close").sort("asset_id")
    lengths = closes.group_by("asset_id", maintain_order=True).len()["len"].to_list()
    ema(closes["close"].head(10), 3)  # compiled (or loaded from numba's cache) outside the timing

    def polars_ewm() -> pl.DataFrame:
        return closes.select(
            pl.col("close").ewm_mean(alpha=alpha(p), adjust=False).over("asset_id").alias(f"e{p}") for p in PERIODS
        )

    def seeded() -> pl.DataFrame:
        return pl.DataFrame([ema(closes["close"], p, lengths).alias(f"e{p}") for p in PERIODS])

    timings = {}
    for name, build in {
        "polars ewm_mean (first-value seed)": polars_ewm,
        "trading_assets ema (SMA seed, null carry)": seeded,
    }.items():
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            out = build()
            best = min(best, time.perf_counter() - started)
        timings[name] = (best, out)
    (base_name, (base, base_out)), (ours_name, (ours, ours_out)) = timings.items()
    # Beyond the seed's reach both recursions agree: the check that they compute the same thing.
    position = closes.select(pl.int_range(pl.len()).over("asset_id"))["literal"].to_numpy()
    tail = position >= days * 2 // 3
    gap = max(
        np.nanmax(np.abs(ours_out[f"e{p}"].to_numpy()[tail] / base_out[f"e{p}"].to_numpy()[tail] - 1)) for p in PERIODS
    )
    print(f"\nEMA kernel, {assets} assets x {days} daily closes x periods {PERIODS} (best of 3)")
    print(f"{'kernel':<44} {'seconds':>8} {'values/s':>14}")
    values = closes.height * len(PERIODS)
    for name, seconds in ((base_name, base), (ours_name, ours)):
        print(f"{name:<44} {seconds:>8.2f} {values / seconds:>14,.0f}")
    print(f"ratio {ours / base:.2f} (target 1.2); largest relative difference on the last third {gap:.1e}")


def run_emas(settings: Settings, first: date, last: date, job: str = REFRESH_EMAS_JOB) -> tuple[float, dict[str, dict]]:
    """One run of `job` (the EMA families, or a job holding them) over first..last, changed days only, EMAs on
    stale bars too; (wall seconds, {table: its materialization's metadata})."""
    partitions = monthly_partitions(settings)
    ops = {"__".join(EMA_KEYS[f].path): {"config": {"skip_stale_check": True}} for f in EMA_FAMILIES}
    started = time.perf_counter()
    summary = run_job(
        job,
        tags={**range_tags(*key_range_for_dates(partitions, first, last)), REBUILD_TAG: "changed"},
        run_config={"ops": ops},
    )
    wall = time.perf_counter() - started
    if not summary.success:
        raise RuntimeError(f"{job} run failed: {summary.errors}")
    per_family = {}
    for asset, _, metadata in summary.materializations:
        per_family.setdefault(asset.split("/")[-1], metadata)
    return wall, per_family


def _limits(url: str, family: str) -> tuple[float, float, int]:
    """(read the grid once + COPY the packed rows into an empty table of the same shape, the same for the long
    rows into a table of the long shape, that long table's size in bytes)."""
    packed = sql.Identifier(f"{family}_packed")
    with connect(url) as conn:
        packed_rows = copy_out(conn, sql.SQL("select * from market.{}").format(packed))
        long_rows = copy_out(conn, sql.SQL("select * from market.{}").format(sql.Identifier(family)))
        results = []
        for rows, like in ((packed_rows, f"{family}_packed"), (long_rows, family)):
            started = time.perf_counter()
            for bars in EMA_SOURCES[family]:
                table = sql.Identifier(BAR_TABLES[bars])
                copy_out(
                    conn, sql.SQL("select asset_id, tf, trade_date, close, is_partial_end from market.{}").format(table)
                )
            limit_table(conn, like)
            with conn.cursor() as cur, cur.copy("copy copy_limit from stdin (format binary)") as copy:
                copy.write(rows)
            results.append(time.perf_counter() - started)
            size = conn.execute("select pg_total_relation_size('copy_limit')").fetchone()[0]
            conn.rollback()
    return results[0], results[1], size


def full_rebuild(assets: int, days: int) -> None:
    print(f"\nfull rebuild of every EMA family through Dagster: {assets} assets x {days} days, periods {PERIODS}")
    with tempfile.TemporaryDirectory() as home, bench_platform(home) as (settings, url):
        prices = synthetic_prices(assets, days).with_columns(asset_id=pl.col("asset_id").cast(pl.Int32))
        seed_prices(url, prices)
        first, last = prices["trade_date"].min(), prices["trade_date"].max()
        # The first build on the new server (see pipeline.first_build), then the measured full rebuild.
        first_build(settings, url, first, last)
        _, first_emas = run_emas(settings, first, last)
        run_bars(settings, first, last)
        wall, per_family = run_emas(settings, first, last)
        run_peak = peak_mib()
        sizes = table_sizes(url)
        print(
            f"{'table':<28} {'rows':>11} {'packed':>10} {'first s':>8} {'asset s':>8} {'rows/s':>10} "
            f"{'limit s':>8} {'ratio':>6} {'long s':>7} {'ratio':>6} {'MiB':>7} {'long MiB':>9}"
        )
        inside = 0.0
        for family in EMA_FAMILIES:
            metadata = per_family[family]
            seconds = metadata["seconds"]
            inside += seconds
            packed_limit, long_limit, long_size = _limits(url, family)
            size = sizes[f"{family}_packed"]
            print(
                f"{family:<28} {metadata['run_rows_written']:>11,} {metadata['run_packed_rows_written']:>10,} "
                f"{first_emas[family]['seconds']:>8.2f} "
                f"{seconds:>8.2f} {metadata['run_rows_written'] / seconds:>10,.0f} {packed_limit:>8.2f} "
                f"{seconds / packed_limit:>6.2f} "
                f"{long_limit:>7.2f} {seconds / long_limit:>6.2f} {size / 2**20:>7.1f} {long_size / 2**20:>9.1f}"
            )
        overhead = wall - inside
        print(
            f"run wall time {wall:.1f}s, of which Dagster bookkeeping {overhead:.1f}s ({overhead / wall:.0%}); peak "
            f"memory of this Python process {run_peak:,.0f} MiB. first = the first build on the new server, asset = "
            "the full rebuild after it; limit = read the bars once + COPY the packed rows; long = the same with the "
            "long rows (one per period) into a table of the long shape, no index"
        )


def built_history(settings: Settings, url: str, assets: int, history_days: int, days: list[date]) -> pl.DataFrame:
    """Synthetic prices of `assets` for `history_days` before days[0] and on `days`: the history loaded, its bars
    and EMAs built; every row returned (the days' rows wait for land_day)."""
    prices = synthetic_prices(assets, history_days + len(days), first=days[0] - timedelta(days=history_days))
    prices = prices.with_columns(asset_id=pl.col("asset_id").cast(pl.Int32))
    seed_prices(url, prices.filter(pl.col("trade_date") < days[0]))
    first = prices["trade_date"].min()
    run_bars(settings, first, days[0] - timedelta(days=1))
    run_emas(settings, first, days[0] - timedelta(days=1))
    return prices


def land_day(url: str, prices: pl.DataFrame, day: date) -> None:
    """Every asset's prices of `day`, queued for the bars as a load leaves them."""
    with connect(url) as conn:
        copy_frame(conn, sql.SQL("market.price_histories"), prices.filter(pl.col("trade_date") == day))
        conn.execute(
            "insert into market.bars_dirty (family, asset_id, dirty_from) select '1d', asset_id, %s "
            "from market.dim_assets",
            (day,),
        )


def _wal_written(url: str) -> tuple[int, int]:
    """The server's full-page images and bytes written to the WAL since its statistics were reset."""
    with connect(url) as conn:
        return conn.execute("select wal_fpi, wal_bytes from pg_stat_wal").fetchone()


def one_day_refresh(assets: int, years: int) -> None:
    """Build `years` of bars and EMAs, then add one day for every asset twice: the first refresh after the
    rebuild (its pages cold in the server's cache) and the next day's, each after a checkpoint. Each is one run of
    every bar and EMA family, as `refresh --all` and the daily schedule run them. Its WAL is the whole server's
    during the run (Dagster's instance database included)."""
    history_days = 365 * years
    with tempfile.TemporaryDirectory() as home, bench_platform(home) as (settings, url):
        end = datetime.now(UTC).date() - timedelta(days=1)
        days = [end - timedelta(days=1), end]
        prices = built_history(settings, url, assets, history_days, days)
        with connect(url, autocommit=True) as conn:
            conn.execute("vacuum analyze")
        for name, day in zip(("first day after the rebuild", "next day"), days, strict=True):
            land_day(url, prices, day)
            # A day's run comes many checkpoints after the last one: the first change to each page it writes
            # puts the whole page into the WAL.
            with connect(url, autocommit=True) as conn:
                conn.execute("checkpoint")
            pages_before, bytes_before = _wal_written(url)
            wall, per_asset = run_emas(settings, day, day, job=REFRESH_MARKET_JOB)
            pages_after, bytes_after = _wal_written(url)
            pages, wal_bytes = pages_after - pages_before, bytes_after - bytes_before
            bars = sum(per_asset[table]["seconds"] for table in BAR_TABLES.values())
            emas = sum(per_asset[family]["seconds"] for family in EMA_FAMILIES)
            rows = sum(per_asset[family]["run_rows_written"] for family in EMA_FAMILIES)
            print(
                f"  {assets} assets with {years} year(s) of history, {name}: {wall:.1f}s end to end (one run; inside "
                f"the assets: bars {bars:.1f}s, EMAs {emas:.1f}s, {rows:,} EMA rows), WAL {wal_bytes / 2**20:,.0f} MiB "
                f"with {pages:,} full-page images, peak memory {peak_mib():,.0f} MiB"
            )
