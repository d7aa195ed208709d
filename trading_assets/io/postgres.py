"""PostgreSQL access: connections, bulk COPY of polars frames, reads into polars."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import psycopg
from psycopg import sql

# Sessions run in UTC so that dates and instants never depend on the host's time zone.
SESSION_OPTIONS = "-c TimeZone=UTC"


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=autocommit, options=SESSION_OPTIONS)


def copy_frame(
    conn: psycopg.Connection,
    target: sql.Composable,
    frame: pl.DataFrame,
    columns: Sequence[str] | None = None,
) -> int:
    """Bulk-load `frame` into `target` with COPY (CSV text produced by polars); returns rows copied."""
    columns = list(columns or frame.columns)
    if frame.is_empty():
        return 0
    statement = sql.SQL("copy {} ({}) from stdin (format csv)").format(
        target, sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    payload = frame.select(columns).write_csv(include_header=False).encode()
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write(payload)
    return frame.height


def read_frame(
    conn: psycopg.Connection,
    query: sql.Composable | str,
    params: Sequence | None = None,
    schema: dict[str, pl.DataType] | None = None,
) -> pl.DataFrame:
    """Run a query and return its rows as a polars frame: typed by `schema`, else inferred from the values."""
    with conn.cursor() as cur:
        cur.execute(query, params)
        names = [d.name for d in cur.description or []]
        rows = cur.fetchall()
    if schema is not None:
        return pl.DataFrame(rows, schema=schema, orient="row")
    return pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)


def scratch_table(conn: psycopg.Connection, name: str, definition: str) -> sql.Identifier:
    """An empty temporary table for this transaction (created once, emptied on every use)."""
    identifier = sql.Identifier(name)
    conn.execute(
        sql.SQL("create temp table if not exists {} {} on commit drop").format(identifier, sql.SQL(definition))
    )
    conn.execute(sql.SQL("truncate {}").format(identifier))
    return identifier
