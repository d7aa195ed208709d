"""PostgreSQL access: connections, bulk binary COPY of polars frames, reads into polars."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from trading_assets.io.binary_copy import ColumnType, column_types, conform, decode, encode, readable

# Sessions run in UTC so that dates and instants never depend on the host's time zone. JIT is off: it
# compiled every mid-sized statement for about 100 ms and our statements are COPYs and index lookups.
SESSION_OPTIONS = "-c TimeZone=UTC -c jit=off"


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=autocommit, options=SESSION_OPTIONS)


_TYPES_CACHE: dict[tuple[str, tuple[str, ...]], list[ColumnType]] = {}


def _target_types(conn: psycopg.Connection, target: sql.Composable, columns: list[str]) -> list[ColumnType]:
    """The PostgreSQL types of `columns` of `target` (a table's layout does not change within a process)."""
    key = (target.as_string(conn), tuple(columns))
    if key not in _TYPES_CACHE:
        listed = sql.SQL(", ").join(map(sql.Identifier, columns))
        _TYPES_CACHE[key] = column_types(conn, sql.SQL("select {} from {}").format(listed, target))[1]
    return _TYPES_CACHE[key]


def copy_frame(
    conn: psycopg.Connection,
    target: sql.Composable,
    frame: pl.DataFrame,
    columns: Sequence[str] | None = None,
) -> int:
    """Bulk-load `frame` into `target` with binary COPY (Arrow batches encoded by pgpq, each column cast to
    the target's type); returns rows copied. A writer thread sends a block while the next is encoded."""
    columns = list(columns or frame.columns)
    if frame.is_empty():
        return 0
    types = _target_types(conn, target, columns)
    statement = sql.SQL("copy {} ({}) from stdin (format binary)").format(
        target, sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cur, cur.copy(statement, writer=QueuedLibpqWriter(cur)) as copy:
        for block in encode(frame.select(columns), types):
            copy.write(block)
    return frame.height


def copy_out(conn: psycopg.Connection, query: sql.Composable, text_format: str | None = None) -> bytes:
    """The rows of `query` as a binary COPY stream (COPY TO STDOUT); `text_format` ("csv") for a text one."""
    statement = sql.SQL("copy ({}) to stdout (format {})").format(query, sql.SQL(text_format or "binary"))
    with conn.cursor() as cur, cur.copy(statement) as copy:
        return b"".join(bytes(block) for block in copy)


def read_frame(
    conn: psycopg.Connection,
    query: sql.Composable | str,
    params: Sequence | None = None,
    schema: dict[str, pl.DataType] | None = None,
) -> pl.DataFrame:
    """Run a query and return its rows as a polars frame: typed by `schema` (its names replace the query's,
    in order), else inferred from the values.

    With a schema and no parameters the rows travel as binary COPY decoded straight into Arrow columns: no
    text is written or parsed, and no Python object is made per value.
    """
    if schema is not None and params is None:
        composed, types = readable(conn, sql.SQL(query) if isinstance(query, str) else query)
        return conform(decode(copy_out(conn, composed), list(schema), types), schema)
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
