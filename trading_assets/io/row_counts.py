"""Rows per month of the large market tables (ops.partition_rows), kept by the writers in their own
transaction so that runs report exact sizes without counting millions of rows."""

from __future__ import annotations

import polars as pl
import psycopg

from trading_assets.io.postgres import filled_scratch_table

MONTH_ROWS = {"month": pl.Date, "rows": pl.Int64}


def rows_by_month(frame: pl.DataFrame, weight: str | None = None, day: str = "trade_date") -> pl.DataFrame:
    """(month, rows) of `frame` by its `day` column; `weight`: a column counting rows per frame row."""
    if frame.is_empty():
        return pl.DataFrame(schema=MONTH_ROWS)
    count = pl.col(weight).sum() if weight else pl.len()
    return frame.group_by(month=pl.col(day).dt.truncate("1mo")).agg(rows=count.cast(pl.Int64)).select(list(MONTH_ROWS))


def record_changes(conn: psycopg.Connection, table: str, added: pl.DataFrame, removed: pl.DataFrame) -> None:
    """Apply rows added and removed per month (frames of month, rows) to the counts of `table`."""
    delta = (
        pl.concat([added, removed.with_columns(-pl.col("rows"))])
        .group_by("month")
        .agg(pl.col("rows").sum())
        .filter(pl.col("rows") != 0)
    )
    if delta.is_empty():
        return
    filled_scratch_table(conn, "row_count_delta", "(month date, rows bigint)", delta)
    # Update, then insert the new months: an upsert would test its negative delta against the row check.
    conn.execute(
        "update ops.partition_rows p set rows = p.rows + d.rows from row_count_delta d "
        "where p.table_name = %s and p.month = d.month",
        (table,),
    )
    conn.execute(
        "insert into ops.partition_rows (table_name, month, rows) select %s, d.month, d.rows from row_count_delta d "
        "where not exists (select 1 from ops.partition_rows p where p.table_name = %s and p.month = d.month)",
        (table, table),
    )


def rows_per_month(conn: psycopg.Connection, table: str) -> pl.DataFrame:
    """(month, rows) of `table` as its writers counted them."""
    return pl.DataFrame(
        conn.execute("select month, rows from ops.partition_rows where table_name = %s", (table,)).fetchall(),
        schema=MONTH_ROWS,
        orient="row",
    )


def table_rows(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(
        "select coalesce(sum(rows), 0)::bigint from ops.partition_rows where table_name = %s", (table,)
    ).fetchone()[0]
