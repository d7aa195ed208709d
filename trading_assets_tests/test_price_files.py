"""Every daily file in the shared data loads, with the row counts and prices its index states."""

import csv
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from trading_assets.errors import InputError
from trading_assets.sources.price_files import parse_stamp, read_price_file
from trading_assets_tests.conftest import SHARED_DATA

INDEX = SHARED_DATA / "daily_index.csv"
DAILY = [row for row in csv.DictReader(INDEX.open())] if INDEX.exists() else []
needs_shared = pytest.mark.skipif(not DAILY, reason="../shared/data is not beside the project")


@needs_shared
@pytest.mark.parametrize("entry", DAILY, ids=[Path(r["file"]).stem for r in DAILY])
def test_every_daily_file_loads(entry: dict) -> None:
    path = SHARED_DATA / entry["file"]
    loaded = read_price_file(path, price_divisor=float(entry["price_divisor"] or 1))
    assert loaded.problems == []
    frame = loaded.prices
    assert frame.height == int(entry["rows"])
    assert (str(frame["trade_date"].min()), str(frame["trade_date"].max())) == (entry["first_date"], entry["last_date"])
    assert frame["trade_date"].is_unique().all()


@needs_shared
def test_lean_equity_prices_are_scaled_and_quote_bars_use_the_mid() -> None:
    spy = read_price_file(SHARED_DATA / "daily/lean_equity_usa_spy_1d.csv", price_divisor=10000).prices
    first = spy.row(0, named=True)
    assert (first["trade_date"], first["open"], first["close"], first["volume"]) == (
        date(1998, 1, 2),
        97.31,
        97.36,
        2150000.0,
    )
    quotes = read_price_file(SHARED_DATA / "daily/lean_crypto_coinbase_btcusd_quote_1d.csv").prices
    row = quotes.row(0, named=True)
    assert row["open"] == pytest.approx((219.16 + 219.18) / 2) and row["volume"] is None


@needs_shared
def test_headed_csv_matches_pandas() -> None:
    path = SHARED_DATA / "daily/backtestingpy_GOOG_1d.csv"
    reference = pd.read_csv(path, index_col=0, parse_dates=True)
    frame = read_price_file(path).prices
    assert frame["close"].to_list() == reference["Close"].tolist()
    assert frame["volume"].to_list() == reference["Volume"].astype(float).tolist()


def test_spellings_descending_dates_us_dates_and_no_volume(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("Time,Open,High,Low,Last\n1/3/2024,2,3,1,2.5\n1/2/2024,1,2,0.5,1.5\n")
    frame = read_price_file(path).prices
    assert frame["trade_date"].to_list() == [date(2024, 1, 2), date(2024, 1, 3)]
    assert frame["close"].to_list() == [1.5, 2.5] and frame["volume"].to_list() == [None, None]


def test_bad_rows_are_reported_and_good_rows_kept(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text(
        "date,open,high,low,close,volume\n2024-01-02,1,2,0.5,1.5,10\n2024-01-03,1,x,0.5,1.5,10\n"
        "yesterday,1,2,0.5,1.5,10\n2024-01-02,1,2,0.5,1.6,10\n2024-01-04,1,2,0.5,1.5\n2024-01-05,1,2,0.5,1.5,10\n"
    )
    loaded = read_price_file(path)
    assert loaded.prices["trade_date"].to_list() == [date(2024, 1, 2), date(2024, 1, 5)]
    assert [(p.line, p.reason) for p in loaded.problems] == [
        (3, "open/high/low/close is not a number"),
        (4, "date 'yesterday' is not a recognised date"),
        (
            5,
            "trade_date 2024-01-02 again with other values: line 2 has 1.0/2.0/0.5/1.5/10.0, this line "
            "1.0/2.0/0.5/1.6/10.0 (open/high/low/close/volume); the first is kept",
        ),
        (6, "expected 6 fields, found 5"),
    ]


def test_unrecognised_layout_raises(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("when,price\n2024-01-02,1\n")
    with pytest.raises(InputError, match="lacks column"):
        read_price_file(path)


def test_aware_timestamps_take_the_date_in_the_asset_timezone() -> None:
    instant = datetime(2024, 3, 11, 3, 30, tzinfo=UTC)
    assert parse_stamp("2024-03-11T03:30:00Z", "America/New_York") == (date(2024, 3, 10), instant)
    assert parse_stamp("2024-03-11T03:30:00Z") == (date(2024, 3, 11), instant)


def test_naive_times_are_read_in_the_asset_timezone_and_dates_have_no_instant() -> None:
    # Lean stamps daily rows at midnight exchange time: 05:00 UTC in winter, 04:00 in summer.
    new_york = "America/New_York"
    assert parse_stamp("20240311 00:00", new_york) == (date(2024, 3, 11), datetime(2024, 3, 11, 4, tzinfo=UTC))
    assert parse_stamp("20240308 00:00", new_york) == (date(2024, 3, 8), datetime(2024, 3, 8, 5, tzinfo=UTC))
    assert parse_stamp("3/8/2024", new_york) == (date(2024, 3, 8), None)
    assert parse_stamp("2024-03-08") == (date(2024, 3, 8), None)
    assert parse_stamp("not a date") is None
