"""PostgreSQL access: connections, bulk COPY of polars frames, reads into polars."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

# Sessions run in UTC so that dates and instants never depend on the host's time zone. JIT is off: it
# compiled every mid-sized statement for about 100 ms and our statements are COPYs and index lookups.
SESSION_OPTIONS = "-c TimeZone=UTC -c jit=off"


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=autocommit, options=SESSION_OPTIONS)


# Lossless and short: fractional seconds only when there are some; booleans as 1/0.
_AWARE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S%.f%z"
_COPY_SLICE_ROWS = 100_000


def copy_frame(
    conn: psycopg.Connection,
    target: sql.Composable,
    frame: pl.DataFrame,
    columns: Sequence[str] | None = None,
) -> int:
    """Bulk-load `frame` into `target` with COPY (CSV text produced by polars); returns rows copied.

    Slices are encoded while a writer thread sends the previous ones, so the server parses one slice while
    polars encodes the next.
    """
    columns = list(columns or frame.columns)
    if frame.is_empty():
        return 0
    statement = sql.SQL("copy {} ({}) from stdin (format csv)").format(
        target, sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    rows = frame.select(columns).with_columns(pl.col(pl.Boolean).cast(pl.Int8))
    times = [dtype for dtype in rows.schema.values() if isinstance(dtype, pl.Datetime)]
    time_format = _AWARE_TIME_FORMAT if times and all(dtype.time_zone for dtype in times) else None
    with conn.cursor() as cur, cur.copy(statement, writer=QueuedLibpqWriter(cur)) as copy:
        for part in rows.iter_slices(_COPY_SLICE_ROWS):
            copy.write(part.write_csv(include_header=False, datetime_format=time_format).encode())
    return frame.height


def copy_out(conn: psycopg.Connection, query: sql.Composable) -> bytes:
    """The rows of `query` as CSV bytes, through COPY TO STDOUT."""
    with conn.cursor() as cur, cur.copy(sql.SQL("copy ({}) to stdout (format csv)").format(query)) as copy:
        return b"".join(bytes(block) for block in copy)


def read_frame(
    conn: psycopg.Connection,
    query: sql.Composable | str,
    params: Sequence | None = None,
    schema: dict[str, pl.DataType] | None = None,
) -> pl.DataFrame:
    """Run a query and return its rows as a polars frame: typed by `schema`, else inferred from the values.

    With a schema and no parameters the rows travel as COPY CSV parsed by polars, which is many times
    faster than building Python tuples for large results.
    """
    if schema is not None and params is None:
        payload = copy_out(conn, sql.SQL(query) if isinstance(query, str) else query)
        # PostgreSQL writes booleans as t/f: read them as text first.
        as_read = {name: pl.String if dtype == pl.Boolean else dtype for name, dtype in schema.items()}
        frame = pl.read_csv(payload, has_header=False, new_columns=list(schema), schema=as_read) if payload else None
        if frame is None:
            return pl.DataFrame(schema=schema)
        return frame.with_columns(pl.col(n) == "t" for n, dtype in schema.items() if dtype == pl.Boolean)
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


def filled_scratch_table(
    conn: psycopg.Connection, name: str, definition: str, frame: pl.DataFrame, columns: Sequence[str] | None = None
) -> None:
    """A scratch table holding `frame` (COPY), analysed so that joins against it use the indexes."""
    scratch_table(conn, name, definition)
    copy_frame(conn, sql.Identifier(name), frame, columns)
    conn.execute(sql.SQL("analyze {}").format(sql.Identifier(name)))
