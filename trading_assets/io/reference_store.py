"""Reads and writes of the corporate actions and the ticker history. Each function runs inside the caller's
transaction."""

from __future__ import annotations

import polars as pl
import psycopg
from psycopg import sql

from trading_assets.io.postgres import copy_frame, read_frame
from trading_assets.sources.lean_reference import FACTOR_SCHEMA, TICKER_SCHEMA

CORPORATE_ACTIONS = "market.corporate_actions"
TICKER_HISTORY = "catalog.ticker_history"
_SCHEMAS = {CORPORATE_ACTIONS: FACTOR_SCHEMA, TICKER_HISTORY: TICKER_SCHEMA}
_VALUES = {
    CORPORATE_ACTIONS: ["security", "factor_date", "price_factor", "split_factor"],
    TICKER_HISTORY: ["security", "valid_from", "valid_until", "ticker", "exchange"],
}


def _table(name: str) -> sql.Composable:
    return sql.Identifier(*name.split("."))


def read_reference(conn: psycopg.Connection, table: str) -> pl.DataFrame:
    """Every row of `table` (CORPORATE_ACTIONS or TICKER_HISTORY), in key order."""
    schema = _SCHEMAS[table]
    key = sql.SQL(", ").join(map(sql.Identifier, list(schema)[:2]))
    query = sql.SQL("select {} from {} order by {}").format(
        sql.SQL(", ").join(map(sql.Identifier, schema)), _table(table), key
    )
    return read_frame(conn, query, schema=schema)


def replace_reference(conn: psycopg.Connection, table: str, rows: pl.DataFrame) -> list[str]:
    """Make `table` hold exactly `rows` (the whole folder of files is the truth); returns the securities whose
    rows changed (added, removed or different), which are the only ones whose reads change."""
    values = _VALUES[table]
    before = read_reference(conn, table).select(values)
    after = rows.select(values)
    changed = pl.concat(
        [
            before.join(after, on=values, how="anti", nulls_equal=True),
            after.join(before, on=values, how="anti", nulls_equal=True),
        ]
    )
    if changed.is_empty():
        return []
    conn.execute(sql.SQL("delete from {}").format(_table(table)))
    copy_frame(conn, _table(table), rows, list(_SCHEMAS[table]))
    return sorted(changed["security"].unique().to_list())
