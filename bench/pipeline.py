"""Bars through Dagster and PostgreSQL: a full rebuild and a one-day incremental refresh.

Runs on its own database (dropped afterwards) on the embedded server, or on TRADING_ASSETS_DATABASE_URL's
server. The "limit" of a family is reading its input rows once plus COPYing the same output rows, already
encoded, into an empty table of the same shape without indexes (a regular table, written to the WAL like the
platform's), on the same server, both as binary COPY (the path the platform writes and reads with); the same
with COPY CSV is printed beside it.
"""

import csv
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import polars as pl
import psycopg
from psycopg import sql

from bench.compute import peak_mib, synthetic_prices
from trading_assets.config import Settings
from trading_assets.defs.jobs import LOAD_PRICES_JOB, REFRESH_BARS_JOB
from trading_assets.defs.market.assets import BAR_KEYS
from trading_assets.defs.partitions import REBUILD_TAG, key_range_for_dates, monthly_partitions, range_tags
from trading_assets.io.binary_copy import column_types
from trading_assets.io.database import ensure_database, resolve_database_url, stop_embedded, with_database
from trading_assets.io.market_store import BAR_TABLES
from trading_assets.io.postgres import connect, copy_frame, copy_out, read_frame
from trading_assets.orchestration import prepare_environment, run_job


@contextmanager
def bench_platform(home: str) -> Iterator[tuple[Settings, str]]:
    """Settings whose database is a fresh one on the configured (or embedded) server."""
    base = Settings.from_env({**os.environ, "TRADING_ASSETS_HOME": home})
    server = resolve_database_url(base.database_url, base.embedded_pgdata)
    name = f"bench_{uuid.uuid4().hex[:8]}"
    ensure_database(server, name)
    url = with_database(server, name)
    previous = {k: os.environ.get(k) for k in ("TRADING_ASSETS_HOME", "TRADING_ASSETS_DATABASE_URL", "DAGSTER_PG_URL")}
    os.environ.update({"TRADING_ASSETS_HOME": home, "TRADING_ASSETS_DATABASE_URL": url})
    os.environ["DAGSTER_PG_URL"] = with_database(server, f"{name}_dagster", scheme="postgresql+psycopg2")
    ensure_database(server, f"{name}_dagster")
    try:
        settings = Settings.from_env()
        prepare_environment(settings)
        yield settings, url
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        with connect(server, autocommit=True) as conn:
            for db in (name, f"{name}_dagster"):
                conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(db)))
        if base.database_url is None:
            # The embedded server of this stage's home, stopped before its folder is removed (it writes to it).
            stop_embedded(base.embedded_pgdata)


def seed_prices(url: str, prices: pl.DataFrame) -> None:
    """Assets and their prices, marked dirty from their first day, as a load would leave them."""
    assets = prices["asset_id"].unique().sort()
    with connect(url) as conn:
        copy_frame(
            conn,
            sql.SQL("market.dim_assets"),
            pl.DataFrame({"asset_id": assets, "symbol": [f"SYN{a:05d}" for a in assets]}),
        )
        copy_frame(conn, sql.SQL("market.price_histories"), prices)
    queue_full_rebuild(url)


def queue_full_rebuild(url: str) -> None:
    """Every asset's daily bars queued from its first price: the next bar run rebuilds every row of every bar
    family (and queues the EMA families from there)."""
    with connect(url) as conn:
        conn.execute(
            "insert into market.bars_dirty (family, asset_id, dirty_from) "
            "select '1d', asset_id, min(trade_date) from market.price_histories group by asset_id "
            "on conflict (family, asset_id) do update set dirty_from = excluded.dirty_from"
        )


def run_bars(
    settings: Settings, first: date, last: date, families: tuple[str, ...] = tuple(BAR_TABLES)
) -> tuple[float, dict[str, tuple[int, float]]]:
    """One Dagster run of the bar families; (wall seconds, {table: (rows, seconds inside the asset)})."""
    partitions = monthly_partitions(settings)
    started = time.perf_counter()
    # As `refresh` and the daily schedule run them: changed days only; table-wide checks run in validate.
    summary = run_job(
        REFRESH_BARS_JOB,
        assets=[BAR_KEYS[family] for family in families],
        tags={**range_tags(*key_range_for_dates(partitions, first, last)), REBUILD_TAG: "changed"},
    )
    wall = time.perf_counter() - started
    if not summary.success:
        raise RuntimeError(f"bar run failed: {summary.errors}")
    per_table: dict[str, list] = {}
    for asset, _, metadata in summary.materializations:
        table = asset.split("/")[-1]
        per_table.setdefault(table, [metadata["run_rows_written"], metadata["seconds"]])
    return wall, {t: (r, s) for t, (r, s) in per_table.items()}


def limit_table(conn: psycopg.Connection, like: str) -> None:
    """`copy_limit`: an empty table of the shape of market.`like`, without indexes, for this transaction. A
    table like the platform's (its rows are written to the WAL), not a temporary one (whose rows are not)."""
    conn.execute(sql.SQL("create table copy_limit as select * from market.{} limit 0").format(sql.Identifier(like)))


def copy_limit(url: str, table: str, source: str, text_format: str | None = None) -> float:
    """Seconds to read the family's input once and COPY its output rows, already encoded, into an empty table of
    the same shape without indexes: binary COPY (the limit), or `text_format` ("csv") for comparison."""
    target = sql.Identifier(table)
    how = sql.SQL(text_format or "binary")
    with connect(url) as conn:
        output = copy_out(conn, sql.SQL("select * from market.{}").format(target), text_format)
        started = time.perf_counter()
        copy_out(conn, sql.SQL("select * from market.{}").format(sql.Identifier(source)), text_format)
        limit_table(conn, table)
        with conn.cursor() as cur, cur.copy(sql.SQL("copy copy_limit from stdin (format {})").format(how)) as copy:
            copy.write(output)
        seconds = time.perf_counter() - started
        conn.rollback()
    return seconds


def typed_reads(url: str, table: str) -> None:
    """A whole bar table into polars: the platform's read (binary COPY decoded to Arrow) against ADBC's
    fetch_arrow_table + pl.from_arrow, and against COPY CSV parsed by polars."""
    import adbc_driver_postgresql.dbapi as adbc

    query = sql.SQL("select * from market.{}").format(sql.Identifier(table))
    with connect(url) as conn:
        names, types = column_types(conn, query)
        schema = {name: t.polars for name, t in zip(names, types, strict=True)}
        # A process's first binary read loads the compiled decoder (as ADBC's connect loads its driver, untimed).
        started = time.perf_counter()
        read_frame(conn, sql.SQL("select 1::int4 as one, 'x'::text as s, array[1.0::float8] as a"), schema={
            "one": pl.Int32, "s": pl.String, "a": pl.List(pl.Float64),
        })  # fmt: skip
        loaded = time.perf_counter() - started
        timings = {}
        started = time.perf_counter()
        frame = read_frame(conn, query, schema=schema)
        timings["platform: binary COPY -> Arrow -> polars"] = time.perf_counter() - started
        started = time.perf_counter()
        csv = copy_out(conn, query, "csv")
        pl.read_csv(csv, has_header=False, new_columns=names, infer_schema=False)
        timings["COPY CSV -> polars (untyped parse)"] = time.perf_counter() - started
        text = query.as_string(conn)
    with adbc.connect(url) as adbc_conn, adbc_conn.cursor() as cur:
        started = time.perf_counter()
        cur.execute(text)
        pl.from_arrow(cur.fetch_arrow_table())
        timings["ADBC fetch_arrow_table -> pl.from_arrow"] = time.perf_counter() - started
    base = timings["ADBC fetch_arrow_table -> pl.from_arrow"]
    print(
        f"\ntyped read of market.{table} ({frame.height:,} rows, {frame.estimated_size() / 2**20:,.0f} MiB) into polars"
    )
    print(f"{'path':<44} {'seconds':>8} {'rows/s':>12} {'vs ADBC':>8}")
    for name, seconds in timings.items():
        print(f"{name:<44} {seconds:>8.2f} {frame.height / seconds:>12,.0f} {seconds / base:>8.2f}")
    print(f"(once per process, before the first binary read: the compiled decoder loaded in {loaded:.2f}s)")


def table_sizes(url: str) -> dict[str, int]:
    with connect(url) as conn:
        return dict(
            conn.execute(
                "select c.relname, pg_total_relation_size(c.oid) from pg_class c join pg_namespace n "
                "on n.oid = c.relnamespace where n.nspname = 'market' and c.relkind = 'r'"
            ).fetchall()
        )


def full_rebuild(assets: int, days: int, families: tuple[str, ...] = tuple(BAR_TABLES)) -> None:
    print(f"\nfull rebuild of {', '.join(families)} through Dagster: {assets} assets x {days} days")
    with tempfile.TemporaryDirectory() as home, bench_platform(home) as (settings, url):
        prices = synthetic_prices(assets, days).with_columns(asset_id=pl.col("asset_id").cast(pl.Int32))
        seed_prices(url, prices)
        first, last = prices["trade_date"].min(), prices["trade_date"].max()
        first_build(settings, url, first, last, families)
        report_rebuild(settings, url, first, last, families)
        typed_reads(url, "price_bars_1d")


def first_build(
    settings: Settings, url: str, first: date, last: date, families: tuple[str, ...] = tuple(BAR_TABLES)
) -> None:
    """The first build of the families on the new server, printed, then every row queued for the measured full
    rebuild: a rebuild replaces tables that hold rows (as `refresh --full-rebuild` does), on a server past its
    first gigabytes of writes, as the limits after it are. (A new server creates its WAL files as it writes;
    the same EMA family took 4.6 s to 7.9 s in first builds of the same code.) The rebuild runs in the process
    of the first build, whose compiled kernels are loaded."""
    wall, per_table = run_bars(settings, first, last, families)
    print(f"first build (a new server): {wall:.1f}s, " + ", ".join(f"{t} {s:.2f}s" for t, (_, s) in per_table.items()))
    queue_full_rebuild(url)


def shared_files_rebuild(index: Path) -> None:
    """Load every daily file listed in the shared data index through Dagster, then rebuild every family."""
    entries = list(csv.DictReader(index.open()))
    print(f"\nfull rebuild of every bar family through Dagster: the {len(entries)} files of {index.parent.name}/daily")
    specs = [
        {
            "path": str(index.parent / entry["file"]),
            "symbol": Path(entry["file"]).stem.upper(),  # one asset per file: several files hold the same ticker
            "price_divisor": float(entry["price_divisor"] or 1),
            "calendar": "XNYS" if entry["asset_class"] in ("equity_us", "etf_us") else "24/7",
        }
        for entry in entries
    ]
    with tempfile.TemporaryDirectory() as home, bench_platform(home) as (settings, url):
        partitions = monthly_partitions(settings)
        keys = partitions.get_partition_keys()
        started = time.perf_counter()
        loaded = run_job(
            LOAD_PRICES_JOB,
            tags=range_tags(keys[0], keys[-1]),
            run_config={"ops": {"market__price_histories": {"config": {"files": specs}}}},
        )
        if not loaded.success:
            raise RuntimeError(f"load failed: {loaded.errors}")
        rows = loaded.materializations[0][2]["run_rows"]
        print(f"loaded {rows:,} price rows in {time.perf_counter() - started:.1f}s")
        first, last = date.fromisoformat(keys[0]), date.fromisoformat(keys[-1])
        first_build(settings, url, first, last)
        report_rebuild(settings, url, first, last)


def report_rebuild(
    settings: Settings, url: str, first: date, last: date, families: tuple[str, ...] = tuple(BAR_TABLES)
) -> None:
    """Rebuild the families over first..last (every row queued) and print rows, rates, the limit ratio, peak memory
    and table sizes."""
    wall, per_table = run_bars(settings, first, last, families)
    run_peak = peak_mib()  # before the limit measurements, which hold a table's CSV in memory
    sizes = table_sizes(url)
    print(
        f"{'table':<36} {'rows':>11} {'asset s':>8} {'rows/s':>10} {'MiB/s':>7} {'binary s':>8} {'ratio':>6} "
        f"{'csv s':>7} {'ratio':>6} {'MiB':>7}"
    )
    inside = 0.0
    for family in families:
        table = BAR_TABLES[family]
        rows, seconds = per_table[table]
        inside += seconds
        source = "price_histories" if family == "1d" else "price_bars_1d"
        limit, csv_limit = copy_limit(url, table, source), copy_limit(url, table, source, "csv")
        print(
            f"{table:<36} {rows:>11,} {seconds:>8.2f} {rows / seconds:>10,.0f} "
            f"{sizes[table] / 2**20 / seconds:>7.1f} {limit:>8.2f} {seconds / limit:>6.2f} {csv_limit:>7.2f} "
            f"{seconds / csv_limit:>6.2f} {sizes[table] / 2**20:>7.1f}"
        )
    overhead = wall - inside
    print(
        f"run wall time {wall:.1f}s, of which Dagster bookkeeping {overhead:.1f}s ({overhead / wall:.0%}); "
        f"peak memory of this Python process during the run {run_peak:,.0f} MiB (the server's is its own)"
    )
