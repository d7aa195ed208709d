"""SEMANTICS §D 25 and 27 through PostgreSQL: the write path of the catalog asset (normalise the records, log
them and re-derive the versions in one transaction, catalog.apply_observations over io/catalog_store.py)."""

from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg
import pytest

from trading_assets.catalog import SymbolCatalog, apply_observations
from trading_assets.io import catalog_store
from trading_assets.io.postgres import connect
from trading_assets.sources.symbol_files import normalise_record

T0 = datetime(2024, 1, 1, tzinfo=UTC)
T1, T2 = T0 + timedelta(days=30), T0 + timedelta(days=60)
ETHBTC = {"symbol": "BINANCE:ETHBTC", "description": "Ethereum / Bitcoin", "pricescale": 1000000, "minmov": 1}


def write(
    database_url: str,
    records: list[dict],
    at: datetime,
    action: str = "upsert",
    listing: list[str] | None = None,
) -> dict[str, int]:
    """One committed catalog write, as the asset makes it (`listing`: a full listing of BINANCE at `at`)."""
    with connect(database_url) as conn:
        exchanges = catalog_store.known_exchanges(conn)
        normalised = [normalise_record(r, exchanges)[0] for r in records] if action == "upsert" else records
        full = {"BINANCE": listing} if listing is not None else None
        counts = apply_observations(conn, normalised, at, "test", action=action, full_listings=full)
        conn.commit()
    return counts


def versions(conn: psycopg.Connection, symbol: str, *columns: str) -> list[tuple]:
    frame = catalog_store.read_symbols(conn).filter(pl.col("symbol") == symbol)
    return frame.select("valid_from", "valid_until", *columns).rows()


def test_d25_a_double_upsert_adds_no_version_and_keeps_the_recorded_time(
    database_url: str, conn: psycopg.Connection
) -> None:
    assert write(database_url, [ETHBTC], T0)["observations"] == 1
    first = catalog_store.read_symbols(conn)
    recorded = first["recorded_at"][0]

    # The same snapshot again: nothing is logged, the versions are the same rows, recorded time included.
    assert write(database_url, [ETHBTC], T0)["observations"] == 0
    assert catalog_store.read_symbols(conn).equals(first)

    # The same data stated later is logged (the source said it then) but opens no version.
    assert write(database_url, [ETHBTC], T1)["observations"] == 1
    logged = conn.execute("select max(recorded_at) from catalog.symbol_observations").fetchone()[0]
    assert logged > recorded
    assert catalog_store.read_symbols(conn).equals(first)

    # A missing description clears nothing; a blank one is missing too.
    write(database_url, [{**ETHBTC, "description": None}, {"symbol": "BINANCE:ETHBTC", "description": "  "}], T2)
    assert versions(conn, "BINANCE:ETHBTC", "description", "pricescale", "recorded_at") == [
        (T0, None, "Ethereum / Bitcoin", 1000000, recorded)
    ]
    assert conn.execute("select count(*) from catalog.symbols_as_of(%s)", (T2,)).fetchone()[0] == 1


@pytest.mark.parametrize("relist", [{}, {"active": True}], ids=["without-active", "with-active-true"])
def test_d27_a_retired_symbol_listed_again_gets_a_new_version(
    database_url: str, conn: psycopg.Connection, relist: dict
) -> None:
    write(database_url, [ETHBTC], T0)
    write(database_url, [{"symbol": "BINANCE:ETHBTC"}], T1, action="retire")
    write(database_url, [{"symbol": "BINANCE:ETHBTC"}], T1 + timedelta(days=1), action="retire")  # no-op
    write(database_url, [{"symbol": "BINANCE:ETHBTC", **relist}], T2)

    assert versions(conn, "BINANCE:ETHBTC", "active", "description") == [
        (T0, T1, True, "Ethereum / Bitcoin"),
        (T1, T2, False, "Ethereum / Bitcoin"),
        (T2, None, True, "Ethereum / Bitcoin"),
    ]
    stored = SymbolCatalog(catalog_store.read_symbols(conn))
    assert stored.list_active_symbols("BINANCE") == ["BINANCE:ETHBTC"]
    assert stored.list_active_symbols("BINANCE", as_of=T2 - timedelta(microseconds=1)) == []
    assert catalog_store.active_symbols(conn) == {"BINANCE:ETHBTC"}
    as_of = "select active from catalog.symbols_as_of(%s) where symbol = 'BINANCE:ETHBTC'"
    assert [conn.execute(as_of, (t,)).fetchone()[0] for t in (T0, T1, T2)] == [True, False, True]


def test_d27_full_listings_delist_and_relist(database_url: str, conn: psycopg.Connection) -> None:
    """As the daily schedule sees an exchange: absent from one listing, back in a later one."""
    xrpbtc = {"symbol": "BINANCE:XRPBTC", "pricescale": 100000000, "minmov": 1}
    write(database_url, [ETHBTC, xrpbtc], T0, listing=["BINANCE:ETHBTC", "BINANCE:XRPBTC"])
    write(database_url, [xrpbtc], T1, listing=["BINANCE:XRPBTC"])
    assert catalog_store.active_symbols(conn) == {"BINANCE:XRPBTC"}
    write(database_url, [ETHBTC, xrpbtc], T2, listing=["BINANCE:ETHBTC", "BINANCE:XRPBTC"])

    assert versions(conn, "BINANCE:ETHBTC", "active", "pricescale") == [
        (T0, T1, True, 1000000),
        (T1, T2, False, 1000000),
        (T2, None, True, 1000000),
    ]
    assert versions(conn, "BINANCE:XRPBTC", "active") == [(T0, None, True)]
    assert catalog_store.active_symbols(conn) == {"BINANCE:ETHBTC", "BINANCE:XRPBTC"}
