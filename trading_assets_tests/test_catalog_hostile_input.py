"""Hostile input to the symbol catalog: nothing is lost, and every refusal is one clear line.

A listing that names a few symbols of an exchange (the shape `GET /api/v3/exchangeInfo?symbol=ETHBTC` returns)
retires nothing unless marked full, and says so; a symbol file with NaN, infinite, negative, oversized or
non-numeric numbers, or an exchangeInfo of the wrong shape, is refused as a whole with its file, record and
reason, changing no table; absurd points in time are refused by `symbols as-of` and `load symbols`."""

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
import pytest

from trading_assets import catalog
from trading_assets.cli import _load_symbols, main
from trading_assets.config import ConfigError, Settings
from trading_assets.defs.catalog.assets import CATALOG_KEYS, CATALOG_OP, LISTING_CHECK, SYMBOLS
from trading_assets.io import catalog_store
from trading_assets.sources.symbol_connectors import binance_exchange_info_url
from trading_assets_tests.conftest import SHARED_DATA, Platform
from trading_assets_tests.fingerprint import changed_tables, table_fingerprints
from trading_assets_tests.test_symbol_connectors import serve

CRYPTO_META = SHARED_DATA / "crypto_meta"
SNAPSHOT_2018 = CRYPTO_META / "binance_exchangeInfo_2018-02-10.json"
SNAPSHOT_2020 = CRYPTO_META / "binance_exchangeInfo_2020-10-09.json"
AT_2018 = datetime(2018, 2, 10, 2, 40, 25, 348000, tzinfo=UTC)  # the snapshots' serverTime
AT_2020 = datetime(2020, 10, 9, 2, 4, 52, 103000, tzinfo=UTC)
LATER_2018 = datetime(2018, 3, 1, tzinfo=UTC)
LATER_2020 = datetime(2020, 10, 10, tzinfo=UTC)


def one_symbol_listing(snapshot: Path, at: datetime, folder: Path, symbol: str = "ETHBTC") -> Path:
    """What `GET /api/v3/exchangeInfo?symbol=ETHBTC` answers: the full response's shape, one symbol in it."""
    document = json.loads(snapshot.read_text())
    document["symbols"] = [entry for entry in document["symbols"] if entry["symbol"] == symbol]
    document["serverTime"] = int(at.timestamp() * 1000)
    path = folder / f"exchangeInfo_{symbol}_{at:%Y%m%d}.json"
    path.write_text(json.dumps(document))
    return path


def trading(snapshot: Path) -> set[str]:
    return {f"BINANCE:{s['symbol']}" for s in json.loads(snapshot.read_text())["symbols"] if s["status"] == "TRADING"}


def load(platform: Platform, path: Path, **config: object) -> dg.ExecuteInProcessResult:
    result = platform.materialize(
        *CATALOG_KEYS, ops={CATALOG_OP: {"inputs": [str(path)], "source": "binance", **config}}
    )
    assert result.success
    return result


def symbols_metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == SYMBOLS]
    return {key: value.value for key, value in event.materialization.metadata.items()}


def listing_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == LISTING_CHECK]
    return evaluation


def test_a_one_symbol_listing_retires_nothing_and_warns_until_marked_full(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path
) -> None:
    load(platform, SNAPSHOT_2018)
    assert catalog_store.active_symbols(conn) == trading(SNAPSHOT_2018)
    before = catalog_store.read_symbols(conn)

    # One symbol, taken later: its shape is a full listing's, but it names 1 of the 265 active symbols.
    partial = load(platform, one_symbol_listing(SNAPSHOT_2018, LATER_2018, tmp_path))
    assert catalog_store.read_symbols(conn).equals(before)  # nothing retired, no version opened or closed
    assert catalog_store.active_symbols(conn) == trading(SNAPSHOT_2018)
    assert conn.execute("select count(*) from catalog.symbol_observations").fetchone()[0] == 265 + 1
    assert conn.execute("select effective_at from catalog.exchange_snapshots").fetchall() == [(AT_2018,)]
    check = listing_check(partial)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN and not check.blocking
    assert check.metadata["partial_listings"].value == 1
    assert check.metadata["exchanges"].value == "BINANCE"
    [verdict] = check.metadata["listings"].value
    assert {k: verdict[k] for k in ("exchange", "listed", "active", "absent", "full", "warn")} == {
        "exchange": "BINANCE",
        "listed": 1,
        "active": 265,
        "absent": 264,
        "full": False,
        "warn": True,
    }
    assert verdict["input"] == "binance:exchangeInfo_ETHBTC_20180301.json"
    assert verdict["reason"] == (
        "a partial listing: it names 1 symbol(s), 1 of the 265 active BINANCE ones (0.4% < 50%, "
        "TRADING_ASSETS_CATALOG_MIN_LISTING_SHARE); its symbols are upserted, none of the 264 it does not name "
        "is retired (load it with full_listing=true if the exchange really delisted them)"
    )
    assert check.metadata["sample"].value == f"{verdict['input']}: {verdict['reason']}"
    metadata = symbols_metadata(partial)
    assert (metadata["run_delisted"], metadata["run_partial_listings"]) == (0, 1)
    assert metadata["listing_warning"] == check.metadata["sample"].value

    # A real full listing, unmarked: it names 262 of the 265, so it retires the 3 it lacks (and the 92 BREAK
    # symbols turn inactive); the check passes.
    full = load(platform, SNAPSHOT_2020)
    assert listing_check(full).passed
    [verdict] = listing_check(full).metadata["listings"].value
    assert (verdict["listed"], verdict["active"], verdict["absent"], verdict["full"]) == (1089, 265, 3, True)
    assert symbols_metadata(full)["run_delisted"] == 95
    assert catalog_store.active_symbols(conn) == trading(SNAPSHOT_2020)

    # The one-symbol listing marked full is taken at its word: every other BINANCE symbol is retired at its time.
    marked = load(platform, one_symbol_listing(SNAPSHOT_2020, LATER_2020, tmp_path), full_listing=True)
    assert listing_check(marked).passed
    [verdict] = listing_check(marked).metadata["listings"].value
    assert (verdict["listed"], verdict["active"], verdict["absent"], verdict["full"]) == (1, 815, 814, True)
    assert verdict["reason"].startswith("marked full (full_listing=true)")
    assert symbols_metadata(marked)["run_delisted"] == 814
    assert catalog_store.active_symbols(conn) == {"BINANCE:ETHBTC"}
    btcusdt = catalog_store.read_symbols(conn).filter(pl.col("symbol") == "BINANCE:BTCUSDT")
    assert btcusdt.select("valid_from", "valid_until", "active").rows() == [
        (AT_2018, LATER_2020, True),
        (LATER_2020, None, False),
    ]


def test_a_listing_marked_partial_only_upserts_and_the_share_is_a_setting(
    platform: Platform, conn: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load(platform, SNAPSHOT_2018)
    # Half of the 265 symbols (133), later: full at the default share of 0.5.
    document = json.loads(SNAPSHOT_2018.read_text())
    document["symbols"], document["serverTime"] = document["symbols"][:133], int(LATER_2018.timestamp() * 1000)
    half = tmp_path / "half.json"
    half.write_text(json.dumps(document))

    marked_partial = load(platform, half, full_listing=False)
    assert listing_check(marked_partial).passed  # the source said it is partial: nothing to warn about
    assert symbols_metadata(marked_partial)["run_delisted"] == 0
    assert len(catalog_store.active_symbols(conn)) == 265

    monkeypatch.setenv("TRADING_ASSETS_CATALOG_MIN_LISTING_SHARE", "0.9")
    with dg.DagsterInstance.ephemeral() as instance:
        strict = Platform(Settings.from_env(), instance)
        refused = load(strict, half)
    [verdict] = listing_check(refused).metadata["listings"].value
    assert (verdict["listed"], verdict["active"], verdict["full"], verdict["warn"]) == (133, 265, False, True)
    assert "(50.2% < 90%, TRADING_ASSETS_CATALOG_MIN_LISTING_SHARE)" in verdict["reason"]
    assert len(catalog_store.active_symbols(conn)) == 265

    accepted = load(platform, half)  # the default 0.5
    assert listing_check(accepted).passed
    assert symbols_metadata(accepted)["run_delisted"] == 132
    assert len(catalog_store.active_symbols(conn)) == 133


@pytest.mark.parametrize("value", ["1.5", "-0.1", "half", "nan"])
def test_the_min_listing_share_must_be_a_share(settings: Settings, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TRADING_ASSETS_CATALOG_MIN_LISTING_SHARE", value)
    with pytest.raises(ConfigError, match=f"TRADING_ASSETS_CATALOG_MIN_LISTING_SHARE={value!r} must be a number"):
        Settings.from_env()


def test_an_endpoint_asked_for_named_symbols_is_never_a_full_listing() -> None:
    document = json.loads(SNAPSHOT_2020.read_text())
    document["symbols"] = [s for s in document["symbols"] if s["symbol"] == "ETHBTC"]
    body = json.dumps(document).encode()
    binance = {"BINANCE": {"timezone": "UTC", "is_crypto": True}}
    with serve(lambda path, _: (200, body)) as (url, seen):
        named = binance_exchange_info_url(f"{url}/api/v3/exchangeInfo?symbol=ETHBTC", binance)
        unnamed = binance_exchange_info_url(f"{url}/api/v3/exchangeInfo", binance)
    assert [path for path, _ in seen] == ["/api/v3/exchangeInfo?symbol=ETHBTC", "/api/v3/exchangeInfo"]
    assert [r["symbol"] for r in named.records] == ["BINANCE:ETHBTC"] and named.full_listings == {}
    assert unnamed.full_listings == {"BINANCE": ["BINANCE:ETHBTC"]}  # judged by its coverage when loaded


def test_the_cli_warns_about_a_partial_listing_and_passes_the_full_listing_marker(
    cli_env: Settings, conn: psycopg.Connection, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    assert main(["load", "symbols", str(SNAPSHOT_2018), "--source", "binance"]) == 0
    one = one_symbol_listing(SNAPSHOT_2018, LATER_2018, tmp_path)
    capsys.readouterr()
    assert main(["load", "symbols", str(one), "--source", "binance"]) == 0
    captured = capsys.readouterr()
    assert "check catalog/symbols:listing_complete FAILED (WARN)" in captured.out
    [warning] = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert warning.startswith(f"warning: binance:{one.name}: a partial listing: it names 1 symbol(s), 1 of the 265")
    assert catalog_store.active_symbols(conn) == trading(SNAPSHOT_2018)

    # The marker as the parser hands it over (`--full-listing`): the same file then retires the other 264.
    args = argparse.Namespace(inputs=[str(one)], source="binance", effective_at=None, full_listing=True)
    assert _load_symbols(cli_env, args) == 0
    assert catalog_store.active_symbols(conn) == {"BINANCE:ETHBTC"}


def _binance(change) -> str:
    """The real 2018 exchangeInfo with `change` applied to the parsed document (returns the file's text)."""
    document = json.loads(SNAPSHOT_2018.read_text())
    change(document)
    return json.dumps(document)


def _drop(key: str, index: int = 1):
    return lambda document: document["symbols"][index].pop(key)


def _set_tick(value: str):
    def change(document: dict) -> None:
        document["symbols"][1]["filters"][0]["tickSize"] = value

    return change


GOOD = {"symbol": "NASDAQ:AAPL", "pricescale": 100, "minmov": 1}
HEADER = "symbol,pricescale,minmov\n"
# (file name, source, text, line, reason)
BAD_INPUT = [
    ("inf.json", "file", f'[{json.dumps(GOOD)}, {{"symbol": "NASDAQ:MSFT", "pricescale": Infinity}}]', 2,
     "pricescale must be a positive integer, got 'Infinity'"),
    ("nan.json", "file", '[{"symbol": "NASDAQ:MSFT", "pricescale": NaN}]', 1,
     "pricescale must be a positive integer, got 'NaN'"),
    ("nan_tick.json", "file", '[{"symbol": "NASDAQ:MSFT", "tick_size": NaN}]', 1,
     "tick_size must be a positive number, got 'NaN'"),
    ("negative.json", "file", '[{"symbol": "NASDAQ:MSFT", "pricescale": -100}]', 1,
     "pricescale must be a positive integer, got -100"),
    ("text.json", "file", '{"symbols": [{"symbol": "NASDAQ:MSFT", "minmov": "one"}]}', 1,
     "minmov is not a number: 'one'"),
    ("huge.json", "file", '[{"symbol": "NASDAQ:MSFT", "pricescale": 1e30}]', 1,
     "pricescale must be a positive integer up to 9223372036854775807, got 1e+30"),
    ("object.json", "file", '[{"symbol": "NASDAQ:MSFT", "pricescale": {"value": 100}}]', 1,
     "pricescale is an object, not a single value"),
    ("not_a_record.json", "file", f'[{json.dumps(GOOD)}, "NASDAQ:MSFT"]', 2,
     "record 2 is a string, not a symbol object"),
    ("spaced.json", "file", '[{"symbol": "NASDAQ:BRK A"}]', 1,
     "symbol 'NASDAQ:BRK A' is not EXCHANGE:SYMBOL (the symbol part is empty or holds a space)"),
    ("no_list.json", "file", '{"data": []}', 1,
     "expected a list of symbol objects (or {'symbols': [...]}): an object without 'symbols'"),
    ("inf.csv", "file", f"{HEADER}NASDAQ:AAPL,100,1\nNASDAQ:MSFT,Infinity,1\n", 3,
     "pricescale must be a positive integer, got 'Infinity'"),
    ("nan.csv", "file", f"{HEADER}NASDAQ:MSFT,NaN,1\n", 2, "pricescale must be a positive integer, got 'NaN'"),
    ("negative.csv", "file", f"{HEADER}NASDAQ:MSFT,100,-1\n", 2, "minmov must be a positive integer, got '-1'"),
    ("text.csv", "file", f"{HEADER}NASDAQ:MSFT,a hundred,1\n", 2, "pricescale is not a number: 'a hundred'"),
    ("list.json", "binance", '[{"symbol": "ETHBTC", "status": "TRADING"}]', 1,
     "not a Binance exchangeInfo response (an object with serverTime and symbols): a list"),
    ("symbols_object.json", "binance", '{"serverTime": 1518230425348, "symbols": {"ETHBTC": {}}}', 1,
     "'symbols' is an object, not a list of symbol objects"),
    ("no_symbol.json", "binance", _binance(_drop("symbol")), 2, "symbols[1]: no symbol"),
    ("no_status.json", "binance", _binance(_drop("status")), 2, "symbols[1] (LTCBTC): no status"),
    ("tick_text.json", "binance", _binance(_set_tick("n/a")), 2,
     "symbols[1] (LTCBTC): PRICE_FILTER tickSize 'n/a' is not a number"),
    ("tick_inf.json", "binance", _binance(_set_tick("Infinity")), 2,
     "symbols[1] (LTCBTC): tick_size must be a positive number, got 'Infinity'"),
    ("server_time.json", "binance", _binance(lambda d: d.update(serverTime=1e30)), 1,
     "serverTime 1e+30 (epoch milliseconds): 1e+27 is not epoch seconds (milliseconds or nanoseconds?)"),
    ("truncated.json", "binance", SNAPSHOT_2018.read_text()[:4000], 132,
     "unreadable: not JSON (Unterminated string starting at, column 33)"),
    ("html.json", "binance", "<html><body>502 Bad Gateway</body></html>", 1,
     "unreadable: not JSON (Expecting value, column 1)"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "source", "text", "line", "reason"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_symbol_input_is_refused_in_one_line_and_changes_nothing(
    cli_env: Settings,
    conn: psycopg.Connection,
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    name: str,
    source: str,
    text: str,
    line: int,
    reason: str,
) -> None:
    bad = tmp_path / name
    bad.write_text(text)
    before = table_fingerprints(conn)
    assert main(["load", "symbols", str(bad), "--source", source]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    [refusal] = captured.err.strip().splitlines()
    assert refusal.startswith(f"error: {bad}, line {line}: {reason}"), refusal
    assert changed_tables(before, table_fingerprints(conn)) == set()


def test_every_bad_record_of_a_file_is_listed_and_none_is_loaded(
    cli_env: Settings, conn: psycopg.Connection, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    """Refused as a whole: a symbol file is one statement about its symbols (an exchangeInfo a listing of the
    exchange), so its good records are not loaded without the bad ones."""
    bad = tmp_path / "symbols.csv"
    bad.write_text(f"{HEADER}NASDAQ:AAPL,100,1\nNASDAQ:MSFT,NaN,1\nNASDAQ:IBM,100,1\nMOON:X,100,1\n")
    before = table_fingerprints(conn)
    assert main(["load", "symbols", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}, line 3: pricescale must be a positive integer, got 'NaN'" in err
    assert f"{bad}, line 5: unknown exchange 'MOON' (add it with catalog.upsert_exchanges first)" in err
    assert "Traceback" not in err
    assert changed_tables(before, table_fingerprints(conn)) == set()


ABSURD_TIMES = [
    ("0001-01-01", "0001-01-01T00:00:00+00:00 is not a time from 1900-01-01 to 2200-01-01 UTC"),
    ("-99999999999999", "-99999999999999.0 is not epoch seconds (milliseconds or nanoseconds?)"),
    ("1e30", "1e+30 is not epoch seconds (milliseconds or nanoseconds?)"),
    ("-62135596800", "epoch seconds -62135596800.0 are not a time from 1900-01-01 to 2200-01-01 UTC"),
    ("yesterday", "'yesterday' is not an ISO time or date (e.g. 2020-01-31 or 2020-01-31T12:00Z)"),
    ("nan", "'nan' is not an ISO time or date (e.g. 2020-01-31 or 2020-01-31T12:00Z)"),
    ("9999-12-31T23:00:00-05:00", "9999-12-31 23:00:00-05:00 is not a time from 1900-01-01 to 2200-01-01 UTC"),
]


def test_absurd_points_in_time_are_refused_in_one_line(
    cli_env: Settings, conn: psycopg.Connection, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    catalog.upsert_symbols([GOOD], effective_at="2020-01-01", settings=cli_env)
    records = tmp_path / "records.json"
    records.write_text(json.dumps([{**GOOD, "pricescale": 1000}]))
    before = table_fingerprints(conn)
    for value, reason in ABSURD_TIMES:
        assert main(["symbols", "as-of", "NASDAQ:AAPL", "--at", value]) == 2, value
        captured = capsys.readouterr()
        assert (captured.out, captured.err) == ("", f"error: --at {value}: {reason}\n")
        assert main(["load", "symbols", str(records), f"--effective-at={value}"]) == 2, value
        captured = capsys.readouterr()
        assert (captured.out, captured.err) == ("", f"error: --effective-at {value}: {reason}\n")
    assert changed_tables(before, table_fingerprints(conn)) == set()
    assert main(["symbols", "as-of", "NASDAQ:AAPL", "--at", "1900-01-01"]) == 1  # in range, before its first version
    assert main(["symbols", "as-of", "NASDAQ:AAPL", "--at", "1577836800"]) == 0  # 2020-01-01 in epoch seconds
    assert "pricescale     100" in capsys.readouterr().out
