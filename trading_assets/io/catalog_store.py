"""Reads and writes of the `catalog` tables. Each function runs inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import polars as pl
import psycopg
from psycopg import sql

from trading_assets.compute.scd2 import (
    EXCHANGE_FIELDS,
    SYMBOL_FIELDS,
    SYMBOL_VERSIONED,
    UTC_TIME,
    derive_versions,
    retirements_from_snapshots,
)
from trading_assets.io.postgres import copy_frame, read_frame, scratch_table

# One writer at a time derives and rewrites the catalog (and its parquet files): no lost updates.
_CATALOG_LOCK = 7_302_551_002
_OBSERVATION_SCHEMA = {
    "observation_id": pl.Int64,
    "symbol": pl.String,
    "action": pl.String,
    "effective_at": UTC_TIME,
    "recorded_at": UTC_TIME,
    **SYMBOL_FIELDS,
}
_BOUNDS = {"valid_from": UTC_TIME, "valid_until": UTC_TIME}
VERSION_SCHEMA = {"symbol": pl.String, **_BOUNDS, **SYMBOL_FIELDS, "recorded_at": UTC_TIME}
EXCHANGE_VERSION_SCHEMA = {"exchange": pl.String, **_BOUNDS, **EXCHANGE_FIELDS, "recorded_at": UTC_TIME}


def lock_catalog(conn: psycopg.Connection) -> None:
    """Serialise catalog writers until the caller's transaction ends."""
    conn.execute("select pg_advisory_xact_lock(%s)", (_CATALOG_LOCK,))


@contextmanager
def catalog_session_lock(conn: psycopg.Connection) -> Iterator[None]:
    """The same lock held by a session across transactions (to publish files of committed versions)."""
    conn.execute("select pg_advisory_lock(%s)", (_CATALOG_LOCK,))
    try:
        yield
    finally:
        conn.execute("select pg_advisory_unlock(%s)", (_CATALOG_LOCK,))


def known_exchanges(conn: psycopg.Connection) -> dict[str, dict]:
    """Every exchange with its latest stated attributes (defaults included)."""
    rows = read_frame(
        conn,
        "select distinct on (exchange) exchange, country, timezone, is_crypto, calendar "
        "from catalog.exchange_observations order by exchange, effective_at desc, observation_id desc",
        schema={"exchange": pl.String, **{k: v for k, v in EXCHANGE_FIELDS.items() if k != "description"}},
    )
    return {row.pop("exchange"): row for row in rows.to_dicts()}


def append_observations(conn: psycopg.Connection, observations: pl.DataFrame) -> int:
    """Append to the log what is not already in it (a re-load of the same source is a no-op); returns rows added."""
    if observations.is_empty():
        return 0
    columns = ["symbol", "action", "effective_at", "source", *SYMBOL_FIELDS]
    types = {pl.String: "text", pl.Int64: "bigint", pl.Float64: "float8", pl.Boolean: "boolean"}
    fields = ", ".join(f"{name} {types[dtype]}" for name, dtype in SYMBOL_FIELDS.items())
    scratch_table(
        conn, "incoming_observations", f"(symbol text, action text, effective_at timestamptz, source text, {fields})"
    )
    copy_frame(conn, sql.SQL("incoming_observations"), observations, columns)
    listed = sql.SQL(", ").join(map(sql.Identifier, columns))
    return conn.execute(
        sql.SQL(
            "insert into catalog.symbol_observations ({cols}) select distinct {cols} from incoming_observations i "
            "where not exists (select 1 from catalog.symbol_observations o where o.symbol = i.symbol "
            "and o.effective_at = i.effective_at and row({o_cols}) is not distinct from row({i_cols}))"
        ).format(
            cols=listed,
            o_cols=sql.SQL(", ").join(sql.SQL("o.") + sql.Identifier(c) for c in columns),
            i_cols=sql.SQL(", ").join(sql.SQL("i.") + sql.Identifier(c) for c in columns),
        )
    ).rowcount


def append_exchange_observations(conn: psycopg.Connection, observations: pl.DataFrame) -> int:
    columns = ["exchange", "effective_at", "source", *EXCHANGE_FIELDS]
    return copy_frame(conn, sql.SQL("catalog.exchange_observations"), observations, columns)


def record_full_listing(
    conn: psycopg.Connection, exchange: str, effective_at: datetime, symbols: list[str], source: str
) -> None:
    conn.execute(
        "insert into catalog.exchange_snapshots (exchange, effective_at, source, symbols) values (%s, %s, %s, %s) "
        "on conflict (exchange, effective_at) do update set symbols = excluded.symbols, source = excluded.source",
        (exchange, effective_at, source, symbols),
    )


def observed_symbols(conn: psycopg.Connection, symbols: list[str]) -> set[str]:
    """Which of `symbols` the catalog has ever observed."""
    rows = conn.execute(
        "select distinct symbol from catalog.symbol_observations where symbol = any(%s)", (symbols,)
    ).fetchall()
    return {symbol for (symbol,) in rows}


def symbols_of_exchange(conn: psycopg.Connection, exchange: str) -> set[str]:
    rows = conn.execute(
        "select distinct symbol from catalog.symbol_observations where exchange = %s", (exchange,)
    ).fetchall()
    return {symbol for (symbol,) in rows}


def rederive_symbols(conn: psycopg.Connection, symbols: list[str] | None = None) -> int:
    """Rewrite the versions of `symbols` (all when None) from the log; returns versions written."""
    where = sql.SQL("") if symbols is None else sql.SQL("where symbol = any({})").format(sql.Literal(symbols))
    columns = sql.SQL(", ").join(map(sql.Identifier, _OBSERVATION_SCHEMA))
    observations = read_frame(
        conn,
        sql.SQL("select {} from catalog.symbol_observations {}").format(columns, where),
        schema=_OBSERVATION_SCHEMA,
    )
    listings = read_frame(
        conn,
        "select exchange, effective_at, unnest(symbols) as symbol from catalog.exchange_snapshots",
        schema={"exchange": pl.String, "effective_at": UTC_TIME, "symbol": pl.String},
    )
    retired = retirements_from_snapshots(observations, listings)
    if retired.height:
        observations = pl.concat(
            [
                observations,
                retired.with_columns(
                    action=pl.lit("retire"),
                    recorded_at=pl.col("effective_at"),
                    observation_id=pl.lit(None, pl.Int64),
                ),
            ],
            how="diagonal_relaxed",
        )
    versions = derive_versions(observations, SYMBOL_FIELDS, SYMBOL_VERSIONED)
    conn.execute(sql.SQL("delete from catalog.symbols {}").format(where))
    written = copy_frame(conn, sql.SQL("catalog.symbols"), versions)
    _record_known_versions(conn, symbols)
    return written


def _record_known_versions(conn: psycopg.Connection, symbols: list[str] | None) -> None:
    """End the known versions of `symbols` (all when None) that the derivation no longer produces and start
    the ones it produces anew, both at this transaction's time."""
    # The key columns are never null: equal, they let the server look the version up by index.
    rest = [c for c in VERSION_SCHEMA if c not in ("symbol", "valid_from")]
    same = sql.SQL("k.symbol = s.symbol and k.valid_from = s.valid_from and ({}) is not distinct from ({})").format(
        sql.SQL(", ").join(sql.SQL("k.") + sql.Identifier(c) for c in rest),
        sql.SQL(", ").join(sql.SQL("s.") + sql.Identifier(c) for c in rest),
    )

    def touched(alias: str) -> sql.Composable:
        if symbols is None:
            return sql.SQL("true")
        return sql.SQL("{}.symbol = any({})").format(sql.Identifier(alias), sql.Literal(symbols))

    stale = sql.SQL(
        "k.known_until is null and {touched} and not exists (select 1 from catalog.symbols s where {same})"
    ).format(touched=touched("k"), same=same)
    # A version started and ended inside this transaction was never seen by anyone: it goes; the others end now.
    conn.execute(sql.SQL("delete from catalog.symbol_versions_known k where k.known_from = now() and {}").format(stale))
    conn.execute(sql.SQL("update catalog.symbol_versions_known k set known_until = now() where {}").format(stale))
    conn.execute(
        sql.SQL(
            "insert into catalog.symbol_versions_known select s.*, now(), null from catalog.symbols s "
            "where {touched} and not exists "
            "(select 1 from catalog.symbol_versions_known k where k.known_until is null and {same})"
        ).format(touched=touched("s"), same=same)
    )


def rederive_exchanges(conn: psycopg.Connection) -> int:
    observations = read_frame(
        conn,
        "select observation_id, exchange, action, effective_at, recorded_at, country, timezone, is_crypto, "
        "calendar, description from catalog.exchange_observations",
        schema={
            "observation_id": pl.Int64,
            "exchange": pl.String,
            "action": pl.String,
            "effective_at": UTC_TIME,
            "recorded_at": UTC_TIME,
            **EXCHANGE_FIELDS,
        },
    )
    versions = derive_versions(observations, EXCHANGE_FIELDS, list(EXCHANGE_FIELDS), key="exchange")
    conn.execute("delete from catalog.exchanges")
    return copy_frame(conn, sql.SQL("catalog.exchanges"), versions)


def active_symbols(conn: psycopg.Connection) -> set[str]:
    """Symbols whose current version is active (listed now, as far as the catalog knows)."""
    rows = conn.execute("select symbol from catalog.symbols where valid_until is null and active").fetchall()
    return {symbol for (symbol,) in rows}


def active_symbols_at(conn: psycopg.Connection, exchange: str, moment: datetime) -> set[str]:
    """Symbols of `exchange` whose version valid at `moment` is active: what a full listing then retires if it
    does not name them."""
    rows = conn.execute(
        "select symbol from catalog.symbols_as_of(%s) where exchange = %s and active", (moment, exchange)
    ).fetchall()
    return {symbol for (symbol,) in rows}


def _read_versions(conn: psycopg.Connection, table: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    key = next(iter(schema))
    query = sql.SQL("select {} from catalog.{} order by {}, valid_from").format(
        sql.SQL(", ").join(map(sql.Identifier, schema)), sql.Identifier(table), sql.Identifier(key)
    )
    return read_frame(conn, query, schema=schema)


def read_symbols(conn: psycopg.Connection) -> pl.DataFrame:
    return _read_versions(conn, "symbols", VERSION_SCHEMA)


def read_symbols_known_at(conn: psycopg.Connection, known_at: datetime) -> pl.DataFrame:
    """Every symbol version the catalog held at `known_at`."""
    query = sql.SQL("select {} from catalog.symbols_as_known_at(%s) order by symbol, valid_from").format(
        sql.SQL(", ").join(map(sql.Identifier, VERSION_SCHEMA))
    )
    return read_frame(conn, query, (known_at,), schema=VERSION_SCHEMA)


def ticker_spans(conn: psycopg.Connection) -> pl.DataFrame:
    """Every span of the ticker history: security, valid_from, valid_until (included) and the symbol
    (EXCHANGE:TICKER; null without an exchange)."""
    return read_frame(
        conn,
        "select security, valid_from, valid_until, exchange || ':' || ticker from catalog.ticker_history",
        schema={"security": pl.String, "valid_from": pl.Date, "valid_until": pl.Date, "symbol": pl.String},
    )


def read_exchanges(conn: psycopg.Connection) -> pl.DataFrame:
    return _read_versions(conn, "exchanges", EXCHANGE_VERSION_SCHEMA)
