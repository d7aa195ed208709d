"""The symbol and exchange catalogs on PostgreSQL: Binance snapshots, lookups, bad input, concurrency, SQL."""

import json
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
import pytest

from trading_assets import catalog
from trading_assets.cli import main
from trading_assets.config import Settings
from trading_assets.defs.catalog.assets import CATALOG_KEYS, CATALOG_OP
from trading_assets.defs.catalog.checks import CATALOG_CHECKS
from trading_assets.defs.market.ema_checks import FRESHNESS_GATE
from trading_assets.errors import InputError
from trading_assets.io import catalog_store
from trading_assets.io.market_store import ensure_asset
from trading_assets.io.postgres import connect
from trading_assets.orchestration import root_error_message
from trading_assets_tests.conftest import SHARED_DATA, Platform

CRYPTO_META = SHARED_DATA / "crypto_meta"
SNAPSHOT_2018 = CRYPTO_META / "binance_exchangeInfo_2018-02-10.json"
SNAPSHOT_2020 = CRYPTO_META / "binance_exchangeInfo_2020-10-09.json"
AT_2018 = datetime(2018, 2, 10, 2, 40, 25, 348000, tzinfo=UTC)  # the snapshots' serverTime
AT_2020 = datetime(2020, 10, 9, 2, 4, 52, 103000, tzinfo=UTC)
_COMPARED = ["symbol", "valid_from", "valid_until", "tick_size", "pricescale", "minmov", "lot_size", "active", "status"]


def load_snapshots(platform: Platform, *snapshots: Path) -> pl.DataFrame:
    for snapshot in snapshots:
        platform.materialize(*CATALOG_KEYS, ops={CATALOG_OP: {"inputs": [str(snapshot)], "source": "binance"}})
    with connect(platform.settings.database_url) as conn:
        return catalog_store.read_symbols(conn)


def test_two_binance_snapshots_give_the_real_changes_in_either_order(platform: Platform, database_url: str) -> None:
    versions = load_snapshots(platform, SNAPSHOT_2018, SNAPSHOT_2020)
    by_symbol = versions.sort("valid_from").group_by("symbol", maintain_order=True).agg(pl.all())
    first_seen = by_symbol.select("symbol", first=pl.col("valid_from").list.first())
    assert first_seen.filter(pl.col("first") == AT_2018).height == 265
    assert first_seen.filter(pl.col("first") == AT_2020).height == 827  # new listings
    tick_changes = by_symbol.filter(pl.col("tick_size").list.first() != pl.col("tick_size").list.last())
    assert tick_changes.height == 51
    current = versions.filter(pl.col("valid_until").is_null())
    assert current.filter(pl.col("status") == "BREAK")["active"].to_list() == [False] * 274
    delisted = current.filter(pl.col("status") == "TRADING", ~pl.col("active"))
    assert delisted["valid_from"].to_list() == [AT_2020] * 3  # absent from the later full listing
    ethbtc = versions.filter(pl.col("symbol") == "BINANCE:ETHBTC").sort("valid_from")
    assert ethbtc.select("valid_from", "valid_until", "min_notional").rows() == [
        (AT_2018, AT_2020, 0.001),
        (AT_2020, None, 0.0001),
    ]

    with connect(database_url) as conn:
        conn.execute("truncate catalog.symbol_observations, catalog.exchange_snapshots, catalog.symbols")
        conn.commit()
    reversed_order = load_snapshots(platform, SNAPSHOT_2020, SNAPSHOT_2018)
    assert reversed_order.select(_COMPARED).equals(versions.select(_COMPARED))


def test_lakehouse_files_hold_the_same_versions_with_utc_bounds(platform: Platform, settings: Settings) -> None:
    versions = load_snapshots(platform, SNAPSHOT_2018)
    symbols = pl.read_parquet(settings.lakehouse / "symbols.parquet")
    assert symbols.schema["valid_from"] == pl.Datetime("us", "UTC")
    assert symbols.drop("recorded_at").equals(versions.drop("recorded_at"))
    exchanges = pl.read_parquet(settings.lakehouse / "exchanges.parquet")
    binance = exchanges.filter(pl.col("exchange") == "BINANCE").row(0, named=True)
    assert (binance["timezone"], binance["calendar"], binance["is_crypto"]) == ("UTC", "24/7", True)
    nyse = exchanges.filter(pl.col("exchange") == "NYSE").row(0, named=True)
    assert (nyse["timezone"], nyse["calendar"]) == ("America/New_York", "XNYS")
    assert sorted(p.name for p in settings.lakehouse.iterdir()) == ["exchanges.parquet", "symbols.parquet"]


def test_python_api_round_trip_with_point_in_time_lookups(settings: Settings) -> None:
    t0, t1, t2 = (datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=d) for d in (0, 30, 60))
    catalog.upsert_symbols(
        [{"symbol": "NASDAQ:AAPL", "description": "Apple", "pricescale": 100, "minmov": 1}], effective_at=t0
    )
    catalog.upsert_symbols([{"symbol": "AAPL", "exchange": "NASDAQ", "pricescale": 1000}], effective_at=t1)
    catalog.retire_symbols(["NASDAQ:AAPL"], effective_at=t2)
    catalog.retire_symbols(["NASDAQ:AAPL"], effective_at=t2 + timedelta(days=1))  # no-op

    before = catalog.get_instrument("NASDAQ:AAPL", t1 - timedelta(seconds=1))
    assert (before["pricescale"], before["tick_size"], before["timezone"]) == (100, 0.01, "America/New_York")
    after = catalog.get_instrument("NASDAQ:AAPL", t1)
    assert (after["pricescale"], after["description"], after["active"]) == (1000, "Apple", True)
    assert catalog.get_instrument("NASDAQ:AAPL", date(2023, 12, 31)) is None
    assert catalog.get_instrument("NASDAQ:AAPL")["active"] is False
    assert catalog.list_active_symbols("NASDAQ", as_of=t1.timestamp()) == ["NASDAQ:AAPL"]
    assert catalog.list_active_symbols("NASDAQ") == []
    with connect(settings.database_url) as conn:
        assert conn.execute("select count(*) from catalog.symbols").fetchone()[0] == 3


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"exchange": "NASDAQ", "description": "no symbol"}, "no symbol"),
        ({"symbol": "NASDAQ:MSFT", "pricescale": 0}, "pricescale must be a positive integer"),
        ({"symbol": "MOON:MSFT"}, "unknown exchange 'MOON'"),
        ({"symbol": "MSFT"}, "names no exchange"),
    ],
)
def test_a_bad_record_is_refused_with_its_line_and_changes_nothing(
    settings: Settings, conn: psycopg.Connection, record: dict, reason: str
) -> None:
    good = {"symbol": "NASDAQ:AAPL", "pricescale": 100}
    with pytest.raises(InputError, match=reason) as refused:
        catalog.upsert_symbols([good, record])
    assert "line 2" in str(refused.value)
    assert conn.execute("select count(*) from catalog.symbol_observations").fetchone()[0] == 0
    assert conn.execute("select count(*) from catalog.symbols").fetchone()[0] == 0
    with pytest.raises(InputError, match="unknown symbol 'NASDAQ:NOPE'"):
        catalog.retire_symbols(["NASDAQ:NOPE"])


def test_a_source_failure_fails_the_asset_and_leaves_the_catalog_unchanged(
    platform: Platform, tmp_path: Path, conn: psycopg.Connection
) -> None:
    load_snapshots(platform, SNAPSHOT_2018)
    before = conn.execute("select count(*), max(recorded_at) from catalog.symbols").fetchone()
    broken = tmp_path / "symbols.json"
    broken.write_text('[{"symbol": "NASDAQ:AAPL"}, {"symbol": "NASDAQ:MSFT", "minmov": -1}]')
    truncated = tmp_path / "exchangeInfo.json"
    truncated.write_text(SNAPSHOT_2020.read_text()[:5000])
    for bad, source, reason in [(broken, "file", "line 2: minmov"), (truncated, "binance", "unreadable")]:
        result = platform.run(
            dg.AssetSelection.assets(*CATALOG_KEYS),
            ops={CATALOG_OP: {"inputs": [str(SNAPSHOT_2020), str(bad)], "source": source}},
            raise_on_error=False,
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert reason in root_error_message(failure.step_failure_data.error)
    assert conn.execute("select count(*), max(recorded_at) from catalog.symbols").fetchone() == before
    assert conn.execute("select count(*) from catalog.symbol_observations").fetchone()[0] == 265


def test_a_failed_blocking_check_rolls_the_write_back_and_publishes_nothing(
    platform: Platform, settings: Settings, conn: psycopg.Connection
) -> None:
    load_snapshots(platform, SNAPSHOT_2018)
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in settings.lakehouse.iterdir()}
    observations = conn.execute("select count(*) from catalog.symbol_observations").fetchone()
    # A version table that is no longer contiguous (a gap a bad hand edit left for a symbol).
    conn.execute(
        "insert into catalog.symbols (symbol, valid_from, valid_until, active, recorded_at) values "
        "('NYSE:GAP', '2019-01-01', '2019-06-01', true, now()), ('NYSE:GAP', '2020-01-01', null, true, now())"
    )
    result = platform.run(
        dg.AssetSelection.assets(*CATALOG_KEYS),
        ops={CATALOG_OP: {"inputs": [str(SNAPSHOT_2020)], "source": "binance"}},
        raise_on_error=False,
    )
    assert not result.success and not result.get_asset_materialization_events()
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed == {"versions_contiguous"}
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in settings.lakehouse.iterdir()} == files
    assert conn.execute("select count(*) from catalog.symbol_observations").fetchone() == observations


def _waiting_on(watcher: psycopg.Connection, pid: int) -> str | None:
    """The kind of lock the backend `pid` waits for (advisory, transactionid, ...), or None."""
    row = watcher.execute("select locktype from pg_locks where pid = %s and not granted", (pid,)).fetchone()
    return row[0] if row else None


def test_a_second_writer_waits_for_the_first_and_loses_no_update(database_url: str) -> None:
    """Writer B starts while writer A holds an uncommitted write of the same symbol. B must wait on the catalog
    lock and then derive from A's observation too; without the lock it reads the log without A's row, and its
    versions either drop A's change or collide with A's versions."""
    t0, t1, t2 = (datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=d) for d in (0, 30, 60))

    def record(pricescale: int) -> list[dict]:
        return [{"symbol": "NYSE:IBM", "exchange": "NYSE", "pricescale": pricescale, "active": True}]

    with connect(database_url) as seed:
        catalog.apply_observations(seed, record(10), t0, "seed")
        seed.commit()
    outcome: list[BaseException | str] = []
    with connect(database_url) as a, connect(database_url) as b, connect(database_url, autocommit=True) as watcher:
        catalog.apply_observations(a, record(100), t1, "writer-a")  # A's transaction stays open

        def write_b() -> None:
            try:
                catalog.apply_observations(b, record(1000), t2, "writer-b")
                b.commit()
                outcome.append("committed")
            except BaseException as error:  # reported by the main thread
                b.rollback()
                outcome.append(error)

        writer_b = threading.Thread(target=write_b)
        writer_b.start()
        deadline = time.monotonic() + 30
        while (waited := _waiting_on(watcher, b.info.backend_pid)) is None and writer_b.is_alive():
            assert time.monotonic() < deadline, "writer B neither waited nor finished"
            time.sleep(0.01)
        a.commit()
        writer_b.join(timeout=30)
        versions = catalog_store.read_symbols(watcher).filter(pl.col("symbol") == "NYSE:IBM")
    assert outcome == ["committed"]
    assert waited == "advisory"  # B waited for A on the catalog lock, before reading anything
    assert versions.select("valid_from", "valid_until", "pricescale").rows() == [
        (t0, t1, 10),
        (t1, t2, 100),
        (t2, None, 1000),
    ]


def test_the_exclusion_constraint_refuses_overlapping_versions(conn: psycopg.Connection) -> None:
    insert = (
        "insert into catalog.symbols (symbol, valid_from, valid_until, active, recorded_at) "
        "values ('NYSE:IBM', %s, %s, true, now())"
    )
    conn.execute(insert, (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)))
    conn.execute(insert, (datetime(2024, 2, 1, tzinfo=UTC), None))  # touching is fine: half-open
    conn.execute(insert.replace("IBM", "HPQ"), (datetime(2024, 1, 15, tzinfo=UTC), None))  # another symbol
    with pytest.raises(psycopg.errors.ExclusionViolation):
        conn.execute(insert, (datetime(2024, 1, 15, tzinfo=UTC), datetime(2024, 1, 20, tzinfo=UTC)))


def test_sql_as_of_and_the_backtest_join_of_daily_bars(settings: Settings, conn: psycopg.Connection) -> None:
    t1 = datetime(2024, 1, 3, 5, tzinfo=UTC)  # 00:00 in New York on 2024-01-03
    catalog.upsert_symbols([{"symbol": "NYSE:IBM", "tick_size": 0.01}], effective_at=datetime(2024, 1, 1, tzinfo=UTC))
    catalog.upsert_symbols([{"symbol": "NYSE:IBM", "tick_size": 0.05}], effective_at=t1)
    as_of = "select tick_size from catalog.symbols_as_of(%s) where symbol = 'NYSE:IBM'"
    assert conn.execute(as_of, (t1,)).fetchall() == [(0.05,)]
    assert conn.execute(as_of, (t1 - timedelta(microseconds=1),)).fetchall() == [(0.01,)]
    assert conn.execute(as_of, (datetime(2023, 12, 31, tzinfo=UTC),)).fetchall() == []

    conn.execute(
        "insert into market.dim_assets (symbol, timezone, calendar, catalog_symbol) "
        "values ('IBM', 'America/New_York', 'XNYS', 'NYSE:IBM')"
    )
    for day in (2, 3, 4):
        opens = datetime(2024, 1, day, 5, tzinfo=UTC)
        conn.execute(
            "insert into market.price_bars_1d (asset_id, bar_seq, trade_date, open, high, low, close, "
            "time_open_bar, time_close_bar) select asset_id, %s, %s, 1, 1, 1, 1, %s, %s from market.dim_assets",
            (day - 1, date(2024, 1, day), opens, opens + timedelta(days=1)),
        )
    joined = conn.execute(
        "select trade_date, tick_size from catalog.price_bars_1d_with_symbol order by trade_date"
    ).fetchall()
    assert joined == [(date(2024, 1, 2), 0.01), (date(2024, 1, 3), 0.05), (date(2024, 1, 4), 0.05)]


def test_cli_load_symbols_and_as_of(cli_env: Settings, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["load", "symbols", str(SNAPSHOT_2018), "--source", "binance"]) == 0
    assert main(["load", "symbols", str(SNAPSHOT_2020), "--source", "binance"]) == 0
    capsys.readouterr()
    assert main(["symbols", "as-of", "BINANCE:ETHBTC", "--at", "2019-06-01"]) == 0
    assert "min_notional   0.001" in capsys.readouterr().out
    assert main(["symbols", "as-of", "BINANCE:ETHBTC", "--at", str(int(AT_2020.timestamp()) + 1)]) == 0
    assert "min_notional   0.0001" in capsys.readouterr().out
    assert main(["symbols", "as-of", "BINANCE:ETHBTC", "--at", "2017-01-01"]) == 1
    records = tmp_path / "listing.json"
    records.write_text(json.dumps([{"symbol": "NASDAQ:AAPL", "pricescale": "100", "minmov": "1"}]))
    assert main(["load", "symbols", str(records), "--effective-at", "2020-01-01"]) == 0
    capsys.readouterr()
    assert main(["symbols", "as-of", "NASDAQ:AAPL", "--at", "2020-01-01"]) == 0
    assert "tick_size      0.01" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["load", "symbols", str(SNAPSHOT_2018), "--source", "ftp"])


def test_daily_bars_join_the_symbol_version_valid_on_each_trade_date(
    platform: Platform, conn: psycopg.Connection
) -> None:
    load_snapshots(platform, SNAPSHOT_2018, SNAPSHOT_2020)
    prices = SHARED_DATA / "daily" / "binance_ETCUSDT_1d.csv"
    spec = {"path": str(prices), "symbol": "ETCUSDT", "catalog_symbol": "BINANCE:ETCUSDT"}
    months = ("2018-06-01", "2021-01-01")
    loaded = platform.run(
        dg.AssetSelection.assets(dg.AssetKey(["market", "price_histories"]), dg.AssetKey(["market", "price_bars_1d"]))
        - dg.AssetSelection.checks(FRESHNESS_GATE),  # history: EMAs are not the point here
        partition_range=months,
        ops={"market__price_histories": {"files": [spec]}},
    )
    assert loaded.success
    asset = conn.execute("select timezone, calendar, catalog_symbol from market.dim_assets").fetchone()
    assert asset == ("UTC", "24/7", "BINANCE:ETCUSDT")
    # ETCUSDT was listed after the 2018 snapshot and first seen at 02:04 UTC on 2020-10-09: that day's bar
    # opened before it, so it and every earlier bar know no version (no look-ahead).
    by_version = conn.execute(
        "select valid_from, count(*), min(trade_date), max(trade_date) from catalog.price_bars_1d_with_symbol "
        "group by valid_from order by valid_from nulls first"
    ).fetchall()
    assert [(v, first, last) for v, _, first, last in by_version] == [
        (None, date(2018, 6, 12), date(2020, 10, 9)),
        (AT_2020, date(2020, 10, 10), date(2021, 1, 31)),
    ]
    with pytest.raises(ValueError, match="not in the symbol catalog"):
        ensure_asset(conn, "NOPE", catalog_symbol="BINANCE:NOPE")


def test_warn_checks_name_the_symbols_a_person_should_look_at(platform: Platform) -> None:
    at = datetime(2024, 1, 1, tzinfo=UTC)
    catalog.upsert_symbols(
        [
            {"symbol": "BINANCE:ETHBTC", "pricescale": 1000000, "minmov": 1, "lot_size": 0.001},
            {"symbol": "BINANCE:XRPBTC", "timezone": "Asia/Tokyo", "pricescale": 100000000, "minmov": 1},
        ],
        effective_at=at,
        settings=platform.settings,
    )
    result = platform.run(dg.AssetSelection.checks(*CATALOG_CHECKS))
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not evaluations["crypto_in_utc"].passed
    assert evaluations["crypto_in_utc"].metadata["sample"].value == "BINANCE:XRPBTC"
    assert not evaluations["timezone_matches_exchange"].passed
    assert evaluations["timezone_present"].passed
    structural = evaluations["structural_fields_present"]
    assert not structural.passed and structural.metadata["missing_lot_size"].value == 0.5


def test_exchanges_are_versioned_and_a_new_one_can_list_symbols(settings: Settings, conn: psycopg.Connection) -> None:
    with pytest.raises(InputError, match="unknown exchange 'HKEX'"):
        catalog.upsert_symbols([{"symbol": "HKEX:0700"}])
    at = datetime(2024, 3, 1, tzinfo=UTC)
    catalog.upsert_exchanges(
        [{"exchange": "hkex", "country": "HK", "timezone": "Asia/Hong_Kong", "calendar": "XHKG", "is_crypto": False}],
        effective_at=at,
    )
    catalog.upsert_symbols([{"symbol": "HKEX:0700", "description": "Tencent"}], effective_at=at)
    assert catalog.get_instrument("HKEX:0700")["timezone"] == "Asia/Hong_Kong"
    catalog.upsert_exchanges([{"exchange": "BINANCE", "description": "Binance spot and margin"}], effective_at=at)
    binance = conn.execute(
        "select valid_from, valid_until, timezone, description from catalog.exchanges where exchange = 'BINANCE' "
        "order by valid_from"
    ).fetchall()
    assert [(row[1], row[2], row[3]) for row in binance] == [
        (at, "UTC", "Binance spot"),
        (None, "UTC", "Binance spot and margin"),
    ]
    parquet = pl.read_parquet(settings.lakehouse / "exchanges.parquet")
    assert parquet.filter(pl.col("exchange") == "HKEX")["calendar"].to_list() == ["XHKG"]
    with pytest.raises(InputError) as refused:
        catalog.upsert_exchanges(
            [
                {"exchange": "OK", "timezone": "UTC"},
                {"exchange": "X", "timezone": "Mars/Olympus"},
                {"exchange": "Y", "calendar": "NOPE"},
            ]
        )
    assert "line 2: unknown timezone 'Mars/Olympus'" in str(refused.value)
    assert "line 3: unknown trading calendar 'NOPE'" in str(refused.value)
    assert conn.execute("select count(*) from catalog.exchange_observations where exchange = 'OK'").fetchone()[0] == 0
