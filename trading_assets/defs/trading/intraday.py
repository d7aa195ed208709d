"""Minute files to bars of every resolution: an asset that reads each file from its checkpoint, and a sensor on
the landing folder that starts it when a file grows."""

import hashlib
import json
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg

from trading_assets.compute import intraday
from trading_assets.compute.validation import REJECT_SCHEMA, rows_in_window
from trading_assets.config import Settings
from trading_assets.defs.landing import file_source
from trading_assets.defs.partitions import REBUILD_TAG, key_range_for_dates, range_tags, recomputes_window, run_window
from trading_assets.defs.resources import Warehouse
from trading_assets.defs.table_metadata import table_metadata
from trading_assets.defs.trading.assets import (
    INTRADAY_FILES,
    LANDS_DAILY,
    MULTI_RESOLUTION_BARS,
    finish,
    trading_table_asset,
)
from trading_assets.errors import InputError
from trading_assets.io import trading_store
from trading_assets.io.postgres import read_frame
from trading_assets.sources import minute_files

INTRADAY_JOB = "trading_intraday"
BARS_IN_SESSION = "bars_within_session"
BARS_OHLC_ORDERED = "bars_ohlc_ordered"
FILES_CAUGHT_UP = "intraday_files_caught_up"


def intraday_folder(settings: Settings) -> Path:
    return settings.landing / "trading" / "intraday"


def bar_checks(conn: psycopg.Connection, waiting: dict[str, int]) -> list[dg.AssetCheckResult]:
    """Rolled bars lie inside their session and 1min rows flagged in session do too; OHLC are ordered; every
    landed file is read to its last complete line (WARN)."""
    spans = read_frame(
        conn,
        "select exchange, trade_date, min(bar_start) as first_start, max(bar_end) as last_end "
        "from trading.multi_resolution_bars where in_session group by 1, 2",
        schema={
            "exchange": pl.String,
            "trade_date": pl.Date,
            "first_start": pl.Datetime("us", "UTC"),
            "last_end": pl.Datetime("us", "UTC"),
        },
    )
    outside = 0
    if not spans.is_empty():
        calendar = intraday.sessions(
            spans["exchange"].unique().to_list(), spans["trade_date"].min(), spans["trade_date"].max()
        )
        joined = spans.join(calendar, on=["exchange", "trade_date"], how="left")
        outside = joined.filter(
            pl.col("open_at").is_null()
            | (pl.col("first_start") < pl.col("open_at"))
            | (pl.col("last_end") > pl.col("close_at"))
        ).height
    disordered = conn.execute(
        "select count(*) from trading.multi_resolution_bars where high < greatest(open, close, low) "
        "or low > least(open, close, high)"
    ).fetchone()[0]
    return [
        dg.AssetCheckResult(
            check_name=BARS_IN_SESSION,
            asset_key=MULTI_RESOLUTION_BARS,
            passed=outside == 0,
            metadata={"session_days_outside": outside},
        ),
        dg.AssetCheckResult(
            check_name=BARS_OHLC_ORDERED,
            asset_key=MULTI_RESOLUTION_BARS,
            passed=disordered == 0,
            metadata={"rows": disordered},
        ),
        dg.AssetCheckResult(
            check_name=FILES_CAUGHT_UP,
            asset_key=MULTI_RESOLUTION_BARS,
            passed=not waiting,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"minutes_waiting_by_file": dg.MetadataValue.json(waiting)},
        ),
    ]


def ingest(conn: psycopg.Connection, paths: list[Path], start: date | None, end: date) -> dict:
    """Read each file from its checkpoint and store its minutes of [start, end). A file's checkpoint advances
    only when all it read fell inside the window; otherwise it stays and a run over the other months reads those
    lines again (minutes are stored by key: a second read changes nothing). Returns what it did, with the
    sessions whose minutes changed."""
    checkpoints = trading_store.file_checkpoints(conn)
    chunks = {p.name: minute_files.read_minutes(p, *checkpoints.get(p.name, (0, 0))) for p in paths}
    new = pl.concat([pl.DataFrame(schema=minute_files.ROW_SCHEMA), *(c.rows for c in chunks.values())])
    rows = pl.DataFrame(schema={**intraday.BAR_SCHEMA, "source_file": pl.String, "source_line": pl.Int32})
    if not new.is_empty():
        days = (new["ts"].min().date() - timedelta(days=7), new["ts"].max().date() + timedelta(days=7))
        calendar = intraday.sessions(new["exchange"].unique().to_list(), *days)
        rows = intraday.minute_rows(new, calendar)
    in_window = rows_in_window(rows, "trade_date", start, end)
    kept = in_window.group_by("source_file").len()
    kept_by_file = dict(kept.iter_rows())
    waiting = {n: c.rows.height - kept_by_file.get(n, 0) for n, c in chunks.items()}
    waiting = {n: w for n, w in waiting.items() if w}
    trading_store.save_checkpoints(conn, {n: (c.end_offset, c.end_line) for n, c in chunks.items() if n not in waiting})
    written = trading_store.upsert_minutes(conn, in_window)
    rejects = pl.concat([pl.DataFrame(schema=REJECT_SCHEMA), *(c.rejects for c in chunks.values())])
    trading_store.add_rejects(conn, "multi_resolution_bars", rejects)
    return {
        "minutes_written": written,
        "waiting": waiting,
        "rejected_lines": rejects.height,
        "touched": in_window.select("exchange", "symbol", "trade_date").unique(),
    }


def roll_sessions(conn: psycopg.Connection, sessions: pl.DataFrame) -> tuple[int, int]:
    """Recompute the bars above 1min of `sessions` (exchange, symbol, trade_date) from their stored minutes, each
    exchange's clock being the end of its newest stored minute; returns (rows written, rows removed)."""
    if sessions.is_empty():
        return 0, 0
    trading_store.filled_sessions(conn, sessions)
    minutes = read_frame(
        conn,
        "select b.trade_date, b.bar_start, b.exchange, b.symbol, b.resolution, b.bar_end, b.in_session, b.open, "
        "b.high, b.low, b.close, b.volume, b.vwap, b.trade_count, b.oi, b.oi_change "
        "from trading.multi_resolution_bars b join rolled_sessions s using (exchange, symbol, trade_date) "
        "where b.resolution = '1min' and b.in_session",
        schema=intraday.BAR_SCHEMA,
    )
    clocks = dict(
        conn.execute(
            "select exchange, max(bar_end) from trading.multi_resolution_bars where resolution = '1min' "
            "and exchange = any(%s) group by 1",
            (sessions["exchange"].unique().to_list(),),
        ).fetchall()
    )
    calendar = intraday.sessions(list(clocks), sessions["trade_date"].min(), sessions["trade_date"].max())
    bars = intraday.roll_up(minutes, calendar, clocks)
    removed = trading_store.replace_rolled(conn, bars)
    return bars.height, removed


def build_intraday_assets(settings: Settings, partitions: dg.MonthlyPartitionsDefinition) -> list:
    folder = intraday_folder(settings)

    intraday_source_files = file_source(
        INTRADAY_FILES,
        folder,
        "*.csv",
        "Minute-bar files (lean_equity_<usa|india>_<symbol>_1m_trade.csv or <US|NSE>_<SYMBOL>.csv), read incrementally",
    )

    @trading_table_asset(
        MULTI_RESOLUTION_BARS,
        deps=[INTRADAY_FILES],
        partitions=partitions,
        freshness=LANDS_DAILY,
        checks=[
            dg.AssetCheckSpec(
                BARS_IN_SESSION,
                asset=MULTI_RESOLUTION_BARS,
                blocking=True,
                description="no rolled bar, and no minute marked in session, lies outside its exchange session",
            ),
            dg.AssetCheckSpec(
                BARS_OHLC_ORDERED,
                asset=MULTI_RESOLUTION_BARS,
                blocking=True,
                description="high is the highest and low the lowest of open, high, low, close in every bar",
            ),
            dg.AssetCheckSpec(
                FILES_CAUGHT_UP,
                asset=MULTI_RESOLUTION_BARS,
                description="WARN: every landed minute file is read to its last complete line",
            ),
        ],
        description="1min, 5min, 15min, 1h and 1D bars per instrument from minute files, anchored to the exchange "
        "session (NSE 09:15 Asia/Kolkata, XNYS 09:30 America/New_York); minutes outside the session are kept as "
        "1min rows marked out of session; a bar is written once its window has closed by the data's clock, the "
        "day's last at the session end. Files are read from a checkpoint stored with the rows (appends resume).",
    )
    def multi_resolution_bars(context: dg.AssetExecutionContext, warehouse: Warehouse):
        started = time.perf_counter()
        window = run_window(context)
        paths = sorted(folder.glob("*.csv"))
        with warehouse.transaction() as conn:
            done = ingest(conn, paths, window.start, window.end)
            sessions = done["touched"]
            if recomputes_window(context):
                sessions = pl.concat([sessions, trading_store.stored_sessions(conn, window.start, window.end)]).unique()
            rolled, removed = roll_sessions(conn, sessions)
            metadata = {
                **table_metadata(conn, "trading.multi_resolution_bars"),
                "minutes_written": done["minutes_written"],
                "run_rows_written": done["minutes_written"] + rolled,
                "run_rows_removed": removed,
                "sessions_rolled": sessions.height,
                "rejected_lines": done["rejected_lines"],
                "seconds": round(time.perf_counter() - started, 3),
            }
            outcome = finish(conn, bar_checks(conn, done["waiting"]), {BARS_IN_SESSION, BARS_OHLC_ORDERED}, metadata)
        yield from outcome

    return [intraday_source_files, multi_resolution_bars]


def pending_span(folder: Path, checkpoints: dict[str, tuple[int, int]]) -> tuple[dict[str, int], date, date] | None:
    """The files of `folder` grown past their checkpoint ({name: size}) and the dates their new lines cover."""
    grown = {
        p: p.stat().st_size
        for p in sorted(folder.glob("*.csv"))
        if p.stat().st_size > checkpoints.get(p.name, (0, 0))[0]
    }
    if not grown:
        return None
    stamps = [minute_files.read_minutes(p, *checkpoints.get(p.name, (0, 0))).rows["ts"] for p in grown]
    seen = pl.concat(stamps).drop_nulls()
    if seen.is_empty():
        return None
    # A minute belongs to its local session date, at most a day from its UTC date.
    return (
        {p.name: size for p, size in grown.items()},
        seen.min().date() - timedelta(days=1),
        seen.max().date() + timedelta(days=1),
    )


def build_intraday_sensor(settings: Settings, partitions: dg.MonthlyPartitionsDefinition) -> dg.SensorDefinition:
    folder = intraday_folder(settings)

    @dg.sensor(
        name="trading_intraday_sensor",
        job_name=INTRADAY_JOB,
        minimum_interval_seconds=settings.intraday_sensor_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Every {settings.intraday_sensor_seconds} s: minute files in {folder} that grew past their "
        "checkpoint (trading.intraday_files, written with the rows) start a run over the months of their new "
        "lines. A restart resumes from the checkpoint: nothing lost, nothing read twice.",
    )
    def intraday_sensor(context: dg.SensorEvaluationContext, warehouse: Warehouse):
        with warehouse.transaction() as conn:
            checkpoints = trading_store.file_checkpoints(conn)
        try:
            pending = pending_span(folder, checkpoints)
        except InputError as exc:
            return dg.SkipReason(str(exc))
        if pending is None:
            return dg.SkipReason(f"no minute file in {folder} grew past its checkpoint")
        sizes, first, last = pending
        # The same growth asks once; the cursor keeps what was last asked for.
        key = hashlib.sha256(json.dumps(sorted(sizes.items())).encode()).hexdigest()[:16]
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"intraday:{key}",
                    tags={**range_tags(*key_range_for_dates(partitions, first, last)), REBUILD_TAG: "changed"},
                )
            ],
            cursor=json.dumps(sizes),
        )

    return intraday_sensor
