"""Reads "as known at" a time: revised, edited and deleted prices, the daily bars rebuilt from what was known,
series values, and the symbol catalog before and after a late snapshot."""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from trading_assets import catalog, market
from trading_assets.config import Settings
from trading_assets.defs.jobs import TABLE_CHECKS
from trading_assets.defs.market.assets import BAR_KEYS, PRICE_HISTORIES
from trading_assets.io.postgres import read_frame
from trading_assets_tests.conftest import Platform

DAYS = [date(2024, 1, d) for d in (2, 3, 4, 5, 8, 9, 10, 11, 12, 16)]
MONTHS = ("2024-01-01", "2024-01-01")


@pytest.fixture
def platform(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    monkeypatch.setenv("TRADING_ASSETS_START_DATE", "2024-01-01")
    with dg.DagsterInstance.ephemeral() as instance:
        yield Platform(Settings.from_env(), instance)


def _file(folder: Path, name: str, closes: dict[date, float]) -> Path:
    path = folder / name
    lines = ["date,open,high,low,close,volume"]
    lines += [f"{day},{c},{c + 1},{c - 1},{c},1000" for day, c in closes.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _load_and_build(platform: Platform, path: Path) -> None:
    spec = {"path": str(path), "symbol": "KNOWN", "calendar": "XNYS", "timezone": "America/New_York"}
    platform.run(
        dg.AssetSelection.assets(PRICE_HISTORIES),
        partition_range=MONTHS,
        ops={"market__price_histories": {"files": [spec]}},
    )
    platform.run(dg.AssetSelection.assets(BAR_KEYS["1d"]) - TABLE_CHECKS, partition_range=MONTHS)


def _now(conn: psycopg.Connection) -> datetime:
    return conn.execute("select clock_timestamp()").fetchone()[0]


BAR_COLUMNS = [c for c in market.DAILY_BAR_SCHEMA if c != "symbol"]


def _stored_bars(conn: psycopg.Connection) -> list[tuple]:
    columns = sql.SQL(", ").join(map(sql.Identifier, BAR_COLUMNS))
    return conn.execute(sql.SQL("select {} from market.price_bars_1d order by trade_date").format(columns)).fetchall()


def test_a_revised_edited_and_deleted_price_is_read_as_known_before_and_after(
    platform: Platform, settings: Settings, conn: psycopg.Connection, tmp_path: Path
) -> None:
    closes = {day: 100.0 + n for n, day in enumerate(DAYS)}
    _load_and_build(platform, _file(tmp_path, "first.csv", closes))
    first_bars = _stored_bars(conn)
    t0 = _now(conn)

    # A revision by a new file (Jan 4), then by SQL (Jan 8, high above the close, and Jan 10 deleted), and a
    # late day (Jan 17).
    revised = {**closes, DAYS[2]: 150.0, date(2024, 1, 17): 110.0}
    _load_and_build(platform, _file(tmp_path, "revised.csv", revised))
    t1 = _now(conn)
    conn.execute("update market.price_histories set close = 90, low = 80 where trade_date = '2024-01-08'")
    conn.execute("delete from market.price_histories where trade_date = '2024-01-10'")
    platform.run(dg.AssetSelection.assets(BAR_KEYS["1d"]) - TABLE_CHECKS, partition_range=MONTHS)  # SQL edits queue
    t2 = _now(conn)

    def closes_known(at: datetime | None) -> dict[date, float]:
        rows = market.prices(["KNOWN"], as_known_at=at, settings=settings)
        return dict(zip(rows["trade_date"], rows["close"], strict=True))

    assert closes_known(t0) == closes
    assert closes_known(t1) == revised
    now = {**{d: c for d, c in revised.items() if d != date(2024, 1, 10)}, date(2024, 1, 8): 90.0}
    assert closes_known(t2) == now == closes_known(None)
    assert closes_known(datetime(2000, 1, 1, tzinfo=UTC)) == {}
    # The revisions keep when each value was known; the SQL edit is known from its own transaction.
    kept = conn.execute(
        "select trade_date, close, known_from < known_until from market.price_revisions order by trade_date"
    ).fetchall()
    assert kept == [(DAYS[2], 102.0, True), (date(2024, 1, 8), 104.0, True), (date(2024, 1, 10), 106.0, True)]
    edited_at = conn.execute("select loaded_at from market.price_histories where trade_date = '2024-01-08'").fetchone()
    assert t1 < edited_at[0] < t2

    # The SQL function answers as the Python API does.
    in_sql = conn.execute(
        "select trade_date, close from market.price_histories_as_known_at(%s) order by trade_date", (t0,)
    ).fetchall()
    assert dict(in_sql) == closes

    # Bars as known at t0 are rebuilt from the prices known then, and equal what the build stored then.
    rebuilt = market.daily_bars(["KNOWN"], as_known_at=t0, settings=settings).select(BAR_COLUMNS)
    assert rebuilt.rows() == first_bars
    assert market.daily_bars(["KNOWN"], settings=settings).select(BAR_COLUMNS).rows() == _stored_bars(conn)
    # The current rebuild has the edited low repaired and the deleted day gone; as known at t1 neither.
    current = market.daily_bars(["KNOWN"], as_known_at=t2, settings=settings)
    assert current.select(BAR_COLUMNS).rows() == _stored_bars(conn)
    assert date(2024, 1, 10) not in current["trade_date"].to_list()
    at_t1 = market.daily_bars(["KNOWN"], "2024-01-08", "2024-01-10", as_known_at=t1, settings=settings)
    assert at_t1.select("trade_date", "bar_seq", "close").rows() == [
        (date(2024, 1, 8), 5, 104.0),
        (date(2024, 1, 9), 6, 105.0),
        (date(2024, 1, 10), 7, 106.0),
    ]
    # The SQL function of the bars agrees on the columns it gives.
    for at in (t0, t1, t2):
        in_sql = read_frame(conn, "select * from market.price_bars_1d_as_known_at(%s) order by trade_date", (at,))
        python = market.daily_bars(["KNOWN"], as_known_at=at, settings=settings).select(in_sql.columns)
        assert in_sql.rows() == python.rows()


def test_series_values_as_known_at(platform: Platform, conn: psycopg.Connection) -> None:
    conn.execute(
        "insert into core_energy.fact_series_value (series_code, obs_date, value, loaded_at) "
        "values ('X', '2024-01-01', 1, '2024-02-01 00:00+00')"
    )
    conn.execute(
        "insert into core_energy.fact_series_value_history (series_code, obs_date, value, loaded_at, superseded_at) "
        "values ('X', '2023-12-01', 5, '2024-01-01 00:00+00', '2024-03-01 00:00+00')"
    )
    known = "select obs_date::text, value from core_energy.series_values_as_known_at(%s) order by 1"
    assert conn.execute(known, (datetime(2024, 1, 15, tzinfo=UTC),)).fetchall() == [("2023-12-01", 5.0)]
    assert conn.execute(known, (datetime(2024, 2, 15, tzinfo=UTC),)).fetchall() == [
        ("2023-12-01", 5.0),
        ("2024-01-01", 1.0),
    ]
    assert conn.execute(known, (datetime(2024, 3, 15, tzinfo=UTC),)).fetchall() == [("2024-01-01", 1.0)]


def test_the_catalog_as_known_before_a_late_snapshot(settings: Settings, conn: psycopg.Connection) -> None:
    catalog.upsert_symbols([{"symbol": "NYSE:IBM", "tick_size": 0.01}], effective_at="2020-01-01")
    known_early = _now(conn)
    # A late snapshot: recorded now, about 2019, when the symbol already traded with another tick size.
    catalog.upsert_symbols([{"symbol": "NYSE:IBM", "tick_size": 0.05}], effective_at="2019-06-01")

    def tick(as_of: str, known_at: datetime | None) -> float | None:
        found = catalog.get_instrument("NYSE:IBM", as_of, as_known_at=known_at, settings=settings)
        return found and found["tick_size"]

    assert tick("2019-09-01", known_early) is None  # not known to exist then
    assert tick("2019-09-01", None) == 0.05
    assert tick("2020-06-01", known_early) == tick("2020-06-01", None) == 0.01
    assert catalog.list_active_symbols("NYSE", as_of="2019-09-01", as_known_at=known_early, settings=settings) == []
    assert catalog.list_active_symbols("NYSE", as_of="2019-09-01", settings=settings) == ["NYSE:IBM"]
    versions = "select valid_from::date::text, tick_size from catalog.symbols_as_known_at(%s) order by valid_from"
    assert conn.execute(versions, (known_early,)).fetchall() == [("2020-01-01", 0.01)]
    assert conn.execute(versions, (_now(conn),)).fetchall() == [("2019-06-01", 0.05), ("2020-01-01", 0.01)]
    # The knowledge history holds the superseded version with the interval it was known.
    history = conn.execute(
        "select valid_from::date::text, valid_until is null, known_until is null from catalog.symbol_versions_known "
        "order by known_from, valid_from"
    ).fetchall()
    assert history == [("2020-01-01", True, False), ("2019-06-01", False, True), ("2020-01-01", True, True)]
    assert conn.execute("select count(*) from catalog.symbols").fetchone()[0] == 2
    assert known_early - timedelta(seconds=60) < _now(conn)
