"""Hostile price files through `trading-assets load prices`: each case's exit status, its one-line message
naming file, line and reason, the rejects it recorded, and proof that nothing else changed."""

from datetime import date
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from trading_assets.cli import main
from trading_assets.config import Settings
from trading_assets.defs.market.assets import PRICE_HISTORIES
from trading_assets_tests.conftest import Platform
from trading_assets_tests.fingerprint import changed_tables, table_fingerprints

CORPUS = Path(__file__).parent / "bad_inputs" / "prices"
# What a load that keeps its good rows may change.
LOAD_TABLES = {
    "market.price_histories",
    "market.price_rejects",
    "market.dim_assets",
    "market.dim_assets_state",
    "market.bars_dirty",
    "ops.partition_rows",
}


def _state(conn: psycopg.Connection) -> dict[str, str]:
    return table_fingerprints(conn)


def _prices(conn: psycopg.Connection, symbol: str) -> list[tuple]:
    return conn.execute(
        "select p.trade_date, p.close from market.price_histories p join market.dim_assets a using (asset_id) "
        "where a.symbol = %s order by 1",
        (symbol,),
    ).fetchall()


def _rejects(conn: psycopg.Connection, path: Path) -> list[tuple]:
    return conn.execute(
        "select source_line, reason from market.price_rejects where source_file = %s order by 1", (str(path),)
    ).fetchall()


def _refused(capsys: pytest.CaptureFixture, path: Path, line: int, *words: str) -> None:
    """One line on stderr: `error: FILE, line N: reason`, with each of `words` in the reason."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    where = f", line {line}" if line else ""
    assert err.startswith(f"error: {path.resolve()}{where}: "), err
    for word in words:
        assert word in err, (word, err)


REFUSALS = [
    ("day_first.csv", [], 0, ["day-first", "'13/02/2021'", "--date-order dmy"]),
    ("equity/usa/xyz.csv", [], 0, ["Lean equity", "path names equities", "--price-divisor 10000"]),
    ("lean_scaled.csv", [], 0, ["Lean equity", "whole numbers around 3,735,000", "--price-divisor 10000"]),
    ("header_only.csv", [], 1, ["no rows"]),
    ("unknown_layout.csv", [], 1, ["lacks column(s) for date, open, high, low"]),
    ("aware_utc.csv", ["--timezone", "Mars/Olympus"], 0, ["'Mars/Olympus' is not an IANA time zone"]),
    ("day_first.csv", ["--encoding", "klingon"], 0, ["unknown encoding 'klingon'"]),
]


@pytest.mark.parametrize(("name", "options", "line", "words"), REFUSALS, ids=[f"{r[0]}{r[1]}" for r in REFUSALS])
def test_a_refused_file_changes_nothing_and_says_why_in_one_line(
    cli_env: Settings, conn: psycopg.Connection, capsys: pytest.CaptureFixture, name, options, line, words
) -> None:
    before = _state(conn)
    path = CORPUS / name
    assert main(["load", "prices", str(path), "--symbol", "X", *options]) == 2
    _refused(capsys, path, line, *words)
    assert changed_tables(before, _state(conn)) == set()


def test_flags_read_what_detection_refused(cli_env: Settings, conn: psycopg.Connection) -> None:
    assert main(["load", "prices", str(CORPUS / "day_first.csv"), "--symbol", "DMY", "--date-order", "dmy"]) == 0
    assert [d for d, _ in _prices(conn, "DMY")] == [date(2021, 2, 1), date(2021, 2, 2), date(2021, 2, 13)]
    lean = CORPUS / "equity/usa/xyz.csv"
    assert main(["load", "prices", str(lean), "--symbol", "XYZ", "--price-divisor", "10000"]) == 0
    assert _prices(conn, "XYZ") == [(date(2021, 1, 4), 372.0), (date(2021, 1, 5), 375.0)]


@pytest.mark.parametrize(
    ("timezone", "expected"),
    [
        ("America/New_York", [date(2021, 2, 26), date(2021, 2, 28), date(2021, 3, 1)]),
        ("UTC", [date(2021, 2, 26), date(2021, 3, 1), date(2021, 3, 1)]),
    ],
)
def test_aware_timestamps_keep_every_row_in_the_asset_timezone(
    cli_env: Settings, conn: psycopg.Connection, timezone: str, expected: list[date]
) -> None:
    status = main(["load", "prices", str(CORPUS / "aware_utc.csv"), "--symbol", "NY", "--timezone", timezone])
    loaded = [d for d, _ in _prices(conn, "NY")]
    if timezone == "UTC":
        # Two instants on one UTC day: the second is a conflicting duplicate, kept as a reject.
        assert status == 4 and loaded == sorted(set(expected))
        [(line, reason)] = _rejects(conn, (CORPUS / "aware_utc.csv").resolve())
        assert line == 4 and reason.startswith("trade_date 2021-03-01 again with other values: line 3 has ")
    else:
        assert status == 0 and loaded == expected


def test_tokyo_keeps_the_row_that_becomes_the_first_of_april(cli_env: Settings, conn: psycopg.Connection) -> None:
    path = CORPUS / "aware_utc_tokyo.csv"
    assert main(["load", "prices", str(path), "--symbol", "TYO", "--timezone", "Asia/Tokyo"]) == 0
    assert [d for d, _ in _prices(conn, "TYO")] == [date(2021, 3, 31), date(2021, 4, 1)]


PARTIAL = [
    ("year_one.csv", [(2, "trade_date 0001-01-01 is before 1900-01-01")], 2),
    ("huge_close.csv", [(3, "price above the plausible maximum 1e+09")], 2),
    (
        "conflicting_duplicate.csv",
        [
            (
                4,
                "trade_date 2021-03-02 again with other values: line 3 has 10.5/11.5/10.0/11.0/100.0, this line "
                "10.5/11.5/10.0/11.25/100.0 (open/high/low/close/volume); the first is kept",
            )
        ],
        2,
    ),
    ("latin1.csv", [(3, "not valid utf-8-sig text: give the file's encoding with --encoding")], 2),
    (
        "not_finite.csv",
        [
            (3, "price missing, not finite or not positive"),
            (4, "price missing, not finite or not positive"),
            (5, "price missing, not finite or not positive"),
            (6, "volume negative or not finite"),
        ],
        1,
    ),
    ("short_row.csv", [(3, "expected 6 fields, found 5")], 2),
]


@pytest.mark.parametrize(("name", "rejects", "kept"), PARTIAL, ids=[p[0] for p in PARTIAL])
def test_bad_rows_are_recorded_and_the_good_rows_load_with_exit_4(
    cli_env: Settings, conn: psycopg.Connection, capsys: pytest.CaptureFixture, name, rejects, kept
) -> None:
    before = _state(conn)
    path = CORPUS / name
    assert main(["load", "prices", str(path), "--symbol", "BAD"]) == 4
    assert f"{len(rejects)} input row(s) rejected" in capsys.readouterr().out
    assert _rejects(conn, path.resolve()) == rejects
    assert len(_prices(conn, "BAD")) == kept
    assert changed_tables(before, _state(conn)) <= LOAD_TABLES


def test_the_rejects_of_a_load_over_several_months_are_counted_once(
    cli_env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "months.csv"
    days = ["2021-01-04", "2021-02-01", "2021-03-01"]
    path.write_text(
        "date,open,high,low,close,volume\n" + "".join(f"{d},10,11,9,10,100\n" for d in days) + "2021-03-02,-1,1,1,1,1\n"
    )
    assert main(["load", "prices", str(path), "--symbol", "MONTHS"]) == 4
    assert "\n1 input row(s) rejected" in capsys.readouterr().out


def test_an_encoding_given_loads_every_row(cli_env: Settings, conn: psycopg.Connection) -> None:
    assert main(["load", "prices", str(CORPUS / "latin1.csv"), "--symbol", "L1", "--encoding", "latin-1"]) == 0
    assert len(_prices(conn, "L1")) == 3


def test_a_file_of_repeated_rows_is_refused_whole_with_its_counts(
    cli_env: Settings, conn: psycopg.Connection, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = tmp_path / "repeated.csv"
    path.write_text("date,open,high,low,close,volume\n" + "2021-03-01,10,11,9,10.5,100\n" * 50_000)
    before = _state(conn)
    assert main(["load", "prices", str(path), "--symbol", "REP"]) == 2
    _refused(capsys, path, 3, "49999 of 50000 rows (100%) cannot be used (49999 exact repeats)", "repeats line 2")
    assert changed_tables(before, _state(conn)) == set()


def test_a_mostly_unreadable_file_is_refused_whole(
    cli_env: Settings, conn: psycopg.Connection, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = tmp_path / "mostly_bad.csv"
    rows = [f"2021-03-{d:02d},10,11,9,{'x' if d % 3 else 10.5},100" for d in range(1, 29)]
    path.write_text("date,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    before = _state(conn)
    assert main(["load", "prices", str(path), "--symbol", "MOST"]) == 2
    _refused(capsys, path, 2, "19 of 28 rows (68%) cannot be used", "open/high/low/close is not a number")
    assert changed_tables(before, _state(conn)) == set()


def test_symbol_spellings_are_one_asset(cli_env: Settings, conn: psycopg.Connection) -> None:
    path = CORPUS / "year_one.csv"
    for spelling in ("spy", " SPY ", "SPY"):
        assert main(["load", "prices", str(path), "--symbol", spelling]) == 4
    assert conn.execute("select symbol from market.dim_assets").fetchall() == [("SPY",)]


def test_rows_outside_the_runs_months_are_rejects_not_lost(platform: Platform, conn: psycopg.Connection) -> None:
    path = CORPUS / "aware_utc.csv"
    files = [{"path": str(path), "symbol": "WIN", "timezone": "America/New_York"}]
    result = platform.run(
        dg.AssetSelection.assets(PRICE_HISTORIES),
        partition_range=("2021-03-01", "2021-03-01"),
        ops={"market__price_histories": {"files": files}},
    )
    assert result.success
    assert [d for d, _ in _prices(conn, "WIN")] == [date(2021, 3, 1)]
    assert _rejects(conn, path) == [
        (2, "trade_date 2021-02-26 is outside this run's months (2021-03-01 .. 2021-03-31); load the file in a run "
         "over its month"),
        (3, "trade_date 2021-02-28 is outside this run's months (2021-03-01 .. 2021-03-31); load the file in a run "
         "over its month"),
    ]  # fmt: skip
