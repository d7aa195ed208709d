"""Writes of the trading schema: a run's window of rows replaced in its transaction, partitions made first."""

from datetime import date

import polars as pl
import psycopg
from psycopg import sql

from trading_assets.io.postgres import copy_frame, read_frame

REJECT_SCHEMA = {"source_file": pl.String, "source_line": pl.Int32, "reason": pl.String, "raw": pl.String}


def table(name: str) -> sql.Composed:
    return sql.SQL("trading.{}").format(sql.Identifier(name))


def ensure_partitions(conn: psycopg.Connection, name: str, first: date, last: date) -> int:
    """Create the partitions of trading.`name` for first..last that do not exist; returns how many it made."""
    return conn.execute("select trading.ensure_partitions(%s, %s, %s)", (name, first, last)).fetchone()[0]


def replace_window(conn: psycopg.Connection, name: str, rows: pl.DataFrame, first: date | None, end: date) -> int:
    """Make trading.`name` hold exactly `rows` (all inside the window) for trade dates in [first, end) (first
    None: every date before end); returns the rows removed."""
    window = sql.SQL("trade_date < {}").format(sql.Literal(end))
    if first is not None:
        window = sql.SQL("trade_date >= {} and ").format(sql.Literal(first)) + window
    removed = conn.execute(sql.SQL("delete from {} where ").format(table(name)) + window).rowcount
    if not rows.is_empty():
        ensure_partitions(conn, name, rows["trade_date"].min(), rows["trade_date"].max())
        copy_frame(conn, table(name), rows)
    return removed


def replace_rejects(conn: psycopg.Connection, name: str, files: list[str], rejects: pl.DataFrame) -> None:
    """The rejects of trading.`name` from `files` become `rejects` (REJECT_SCHEMA): a file read again replaces
    its own."""
    conn.execute("delete from trading.rejects where table_name = %s and source_file = any(%s)", (name, files))
    if not rejects.is_empty():
        frame = rejects.unique(["source_file", "source_line", "reason"]).with_columns(table_name=pl.lit(name))
        copy_frame(conn, sql.SQL("trading.rejects"), frame)


def rejects_of(conn: psycopg.Connection, name: str) -> pl.DataFrame:
    return read_frame(
        conn,
        sql.SQL(
            "select source_file, source_line, reason, raw from trading.rejects where table_name = {} "
            "order by source_file, source_line"
        ).format(sql.Literal(name)),
        schema=REJECT_SCHEMA,
    )
