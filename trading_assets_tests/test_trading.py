"""The trading group: macro signals without look-ahead, the VIX term structure from real VX futures, permanent
paper trades, and day/month partitions the platform makes itself."""

import json
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import numpy as np
import pandas as pd
import polars as pl
import psycopg
import pytest

from trading_assets.cli import main
from trading_assets.compute import intraday, macro, options, vix
from trading_assets.compute.calendars import session_table
from trading_assets.config import PROJECT_ROOT, Settings
from trading_assets.defs.metadata.assets import DIM_SERIES, FACT_SERIES_VALUE
from trading_assets.defs.trading import assets as trading
from trading_assets.defs.trading import intraday as intraday_assets
from trading_assets.errors import InputError
from trading_assets.sources import minute_files, option_files, vix_files
from trading_assets_tests.conftest import Platform

SAMPLE_MACRO = PROJECT_ROOT / "data" / "sample" / "macro"


def _fred(code: str) -> pd.Series:
    """A bundled FRED file read by pandas ('.' = no value), indexed by date."""
    frame = pd.read_csv(SAMPLE_MACRO / f"fred_{code}.csv", na_values=".")
    return frame.set_index(pd.to_datetime(frame.iloc[:, 0])).iloc[:, 1].dropna()


def _observations() -> pl.DataFrame:
    return pl.concat(
        pl.DataFrame(
            {"series_code": code, "obs_date": list(series.index.date), "value": series.to_numpy(dtype=float)},
            schema=macro.OBSERVATION_SCHEMA,
        )
        for code in [*macro.DAILY_SERIES, *macro.MONTHLY_SERIES]
        for series in [_fred(code)]
    )


def test_macro_signals_match_an_independent_pandas_alignment() -> None:
    signals = macro.macro_signals(_observations(), date(2015, 1, 1), date(2021, 1, 5)).to_pandas()
    dgs10, dgs2, dgs3mo = _fred("DGS10"), _fred("DGS2"), _fred("DGS3MO")
    cpi, unrate = _fred("CPIAUCSL"), _fred("UNRATE")
    days = dgs10.loc["2015-01-01":"2021-01-04"].index
    assert list(pd.to_datetime(signals["trade_date"])) == list(days)
    expected = pd.DataFrame(index=days.as_unit("us"))
    expected["slope_10y_2y"] = dgs10.reindex(days) - dgs2.reindex(days)
    expected["slope_10y_3m"] = dgs10.reindex(days) - dgs3mo.reindex(days)
    # pandas: each monthly value released on day RELEASE_DAY of the next month, merged as of each day.
    yoy = (cpi / cpi.shift(12, freq="MS") - 1).dropna() * 100
    change = (unrate - unrate.shift(1, freq="MS")).dropna()
    for name, values, release_day in (("cpi_yoy_pct", yoy, 20), ("unrate_change", change, 10)):
        released = values.copy()
        released.index = values.index + pd.DateOffset(months=1) + pd.Timedelta(days=release_day - 1)
        expected[name] = released.reindex(days, method="ffill")
    got = signals.set_index(pd.DatetimeIndex(pd.to_datetime(signals["trade_date"])).as_unit("us"))
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_names=False, check_freq=False, rtol=1e-12)


def test_a_monthly_value_counts_from_its_release_day_not_its_reference_month() -> None:
    """Hand-worked: April 2020 CPI (256.092; April 2019: 255.211) is stamped 2020-04-01 and known from
    2020-05-20; on 2020-05-19 the March value still holds. April unemployment (14.7, March 4.4) from 2020-05-10."""
    signals = macro.macro_signals(_observations(), date(2020, 5, 1), date(2020, 6, 1))
    by_day = {row["trade_date"]: row for row in signals.iter_rows(named=True)}
    assert by_day[date(2020, 5, 19)]["cpi_month"] == date(2020, 3, 1)
    assert by_day[date(2020, 5, 20)]["cpi_month"] == date(2020, 4, 1)
    assert by_day[date(2020, 5, 20)]["cpi_yoy_pct"] == pytest.approx((256.092 / 255.211 - 1) * 100, rel=1e-12)
    assert by_day[date(2020, 5, 8)]["unrate_month"] == date(2020, 3, 1)
    assert by_day[date(2020, 5, 11)]["unrate"] == 14.7
    assert by_day[date(2020, 5, 11)]["unrate_change"] == pytest.approx(14.7 - 4.4)


def _load_series(platform: Platform) -> None:
    platform.land_sample_series()
    platform.materialize(DIM_SERIES)
    platform.materialize(FACT_SERIES_VALUE, partition_range=("2018-12-01", "2020-05-01"))


def test_macro_signals_asset_writes_month_partitions_and_reruns_the_same_rows(
    platform: Platform, conn: psycopg.Connection
) -> None:
    _load_series(platform)
    platform.materialize(trading.MACRO_SIGNALS, partition_range=("2020-03-01", "2020-05-01"))
    first = conn.execute("select * from trading.macro_signals order by trade_date").fetchall()
    assert [r[0] for r in first][:1] == [date(2020, 3, 2)] and first[-1][0] == date(2020, 5, 29)
    partitions = conn.execute(
        "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid "
        "where i.inhparent = 'trading.macro_signals'::regclass order by 1"
    ).fetchall()
    assert [p for (p,) in partitions] == ["macro_signals_p202003", "macro_signals_p202004", "macro_signals_p202005"]
    platform.materialize(trading.MACRO_SIGNALS, partition_range=("2020-04-01", "2020-04-01"))
    again = conn.execute("select * from trading.macro_signals order by trade_date").fetchall()
    assert [r[:12] for r in again] == [r[:12] for r in first]


def test_macro_check_fails_on_a_value_used_before_its_release(platform: Platform, conn: psycopg.Connection) -> None:
    _load_series(platform)
    platform.materialize(trading.MACRO_SIGNALS, partition_range=("2020-05-01", "2020-05-01"))
    conn.execute("update trading.macro_signals set cpi_month = '2020-05-01' where trade_date = '2020-05-29'")
    conn.execute("update trading.macro_signals set slope_10y_2y = 9 where trade_date = '2020-05-28'")
    with conn.transaction():
        results = {r.check_name: r for r in trading.macro_checks(conn)}
    assert not results[trading.MACRO_KNOWN_WHEN_USED].passed
    assert results[trading.MACRO_KNOWN_WHEN_USED].metadata["cpi_rows_before_release"].value == 1
    assert not results[trading.MACRO_SLOPES_MATCH].passed


VIX = PROJECT_ROOT.parent / "shared" / "data" / "vix"
needs_shared = pytest.mark.skipif(not VIX.exists(), reason="../shared/data is not beside the project")


def _contracts() -> vix_files.ContractRead:
    return vix_files.read_contracts(sorted((VIX / "cfe_vx_contracts").glob("CFE_*_VX.csv")))


def _spot() -> pl.DataFrame:
    return vix_files.read_spot(VIX / "quantintell_vix_cash_indices.csv", "SP500")[0]


@needs_shared
def test_vx_expiry_rule_is_the_last_trading_day_of_every_expired_contract_in_the_cfe_files() -> None:
    contracts = _contracts()
    assert (contracts.rows.height, contracts.rejects.height, contracts.not_traded) == (16894, 0, 314)
    last = contracts.rows.group_by("contract_month").agg(last=pl.col("trade_date").max())
    expired = last.filter(pl.col("last") < date(2015, 4, 1))  # the files end on 2015-04-01
    assert expired.height == 87
    for month, last_day in expired.iter_rows():
        assert vix.vx_expiry(month) == last_day, month
    # Hand-checked: the Jan 2008 contract settles 30 days before Friday 2008-02-15.
    assert vix.vx_expiry(date(2008, 1, 1)) == date(2008, 1, 16)


@needs_shared
def test_front_next_and_curve_equal_the_independent_continuous_vx1_vx8() -> None:
    structure = vix.term_structure(_contracts().rows, _spot(), date(2008, 1, 1), date(2015, 4, 2))
    reference = pl.read_csv(VIX / "quantintell_vix_futures_VX1-VX8.csv").select(
        pl.col("DATE").str.to_date().alias("trade_date"), "VIX", "VX1", "VX2", "VX8"
    )
    both = structure.join(reference, on="trade_date")
    assert both.height == 1825
    assert (both["front_price"] - both["VX1"]).abs().max() < 1e-12
    assert (both["next_price"] - both["VX2"]).abs().max() < 1e-12
    assert (both["vix_spot"] - both["VIX"]).abs().max() < 1e-12
    # Where 8 contracts are listed the 8th is VX8 but on 2 dates; on 173 dates only 7 are (the file fills VX8).
    points = both.group_by(n=pl.col("curve").list.len()).agg(
        dates=pl.len(), equal=((pl.col("curve").list.get(7, null_on_oob=True) - pl.col("VX8")).abs() < 1e-12).sum()
    )
    assert sorted(points.iter_rows()) == [(7, 173, 0), (8, 1652, 1650)]
    assert (both["front_expiry"] > both["trade_date"]).all()
    # Rolled on the expiry date: on 2010-02-17 (Feb expiry) the front is already March.
    roll_day = structure.filter(pl.col("trade_date") == date(2010, 2, 17)).row(0, named=True)
    assert (roll_day["front_contract"], roll_day["front_expiry"]) == ("VX 2010-03", date(2010, 3, 17))
    assert roll_day["contango_pct"] == pytest.approx((24.7 - 22.75) / 22.75 * 100)


@needs_shared
def test_realized_vol_matches_pandas_on_the_session_grid() -> None:
    spot = _spot().filter(pl.col("trade_date") != date(2015, 6, 10))  # a session the file lacks
    ours = vix.realized_vol(spot, "XNYS").to_pandas().set_index("trade_date")
    sessions = session_table(["XNYS"], spot["trade_date"].min(), spot["trade_date"].max())["session_date"].to_list()
    closes = spot.to_pandas().set_index("trade_date")["index_close"].reindex(sessions)
    returns = np.log(closes).diff()
    for n in (5, 20):
        expected = returns.rolling(n).std() * np.sqrt(252) * 100
        got = ours[f"realized_vol_{n}d"].reindex(sessions)
        assert got.isna().equals(expected.isna())
        assert np.allclose(got.dropna(), expected.dropna(), rtol=1e-10)
    # A window across the missing session has no value instead of reaching further back.
    assert closes.isna().sum() == 1
    five = ours["realized_vol_5d"]
    assert np.isnan(five[pd.Timestamp(2015, 6, 17)]) and five[pd.Timestamp(2015, 6, 18)] > 0


def test_india_vix_fallback_hand_worked() -> None:
    days = [date(2024, 5, d) for d in (2, 3, 6, 7, 8, 9, 10)]  # XBOM sessions (May 1 is a holiday)
    spot = pl.DataFrame({"trade_date": days, "vix": [10.0, 11, 12, 13, 14, 20, 15], "index_close": [None] * 7})
    rows = vix.india_vix_fallback(spot.cast({"index_close": pl.Float64}), None, date(2024, 6, 1))
    by_day = {r["trade_date"]: r for r in rows.iter_rows(named=True)}
    assert by_day[date(2024, 5, 7)]["next_price"] == 13.0  # no 5-session mean yet: the index itself
    assert by_day[date(2024, 5, 8)]["next_price"] == pytest.approx(12.0)  # mean of 10..14
    assert by_day[date(2024, 5, 9)]["contango_pct"] == pytest.approx((14.0 - 20) / 20 * 100)  # spike: backwardation
    assert by_day[date(2024, 5, 10)]["next_price"] == pytest.approx((12 + 13 + 14 + 20 + 15) / 5)
    assert {r["exchange"] for r in by_day.values()} == {"NSE"} and by_day[date(2024, 5, 10)]["front_expiry"] is None


def _land_vix(platform: Platform, months: list[str]) -> Path:
    folder = trading.vix_folder(platform.settings)
    folder.mkdir(parents=True, exist_ok=True)
    for month in months:
        shutil.copy(VIX / "cfe_vx_contracts" / f"CFE_{month}_VX.csv", folder)
    shutil.copy(VIX / "quantintell_vix_cash_indices.csv", folder / "vix_spot.csv")
    return folder


@needs_shared
def test_vix_asset_writes_its_months_keeps_rejects_and_reruns_the_same_rows(
    platform: Platform, conn: psycopg.Connection
) -> None:
    folder = _land_vix(platform, ["F10", "G10", "H10", "J10", "K10", "M10", "N10", "Q10", "U10", "V10"])
    broken = folder / "CFE_X10_VX.csv"
    broken.write_text(
        "Trade Date,Futures,Open,High,Low,Close,Settle,Change,Total Volume,EFP,Open Interest\n"
        "02/01/2010,X (Nov 10),0,0,0,0,27.10,0,0,0,5\n"
        "02/02/2010,X (Nov 10),0,0,0,0,-3.00,0,0,0,5\n"
        "02/03/2010,Nov 10,0,0,0,0,27.00,0,0,0,5\n"
        "02/04/2010,X (Nov 10),0,0,0,0,27.00\n"
    )
    result = platform.materialize(trading.VIX_TERM_STRUCTURE, partition_range=("2010-02-01", "2010-03-01"))
    assert result.success
    rows = conn.execute(
        "select trade_date, front_contract, front_price, next_price, array_length(curve, 1) "
        "from trading.vix_term_structure order by trade_date"
    ).fetchall()
    assert rows[0][0] == date(2010, 2, 1) and rows[-1][0] == date(2010, 3, 31) and len(rows) == 42
    feb17 = next(r for r in rows if r[0] == date(2010, 2, 17))
    assert feb17[1:4] == ("VX 2010-03", 22.75, 24.7)
    rejects = conn.execute(
        "select source_file, source_line, reason from trading.rejects order by source_line"
    ).fetchall()
    assert rejects == [
        ("CFE_X10_VX.csv", 3, "settlement -3.00 is not a non-negative price"),
        ("CFE_X10_VX.csv", 4, "futures name 'Nov 10' is not a VX contract month like 'F (Jan 08)'"),
        ("CFE_X10_VX.csv", 5, "7 fields, expected 11"),
    ]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {trading.VIX_FRONT_LIVE: True, trading.VIX_CURVE_SANE: True}
    before = conn.execute("select * from trading.vix_term_structure order by trade_date").fetchall()
    platform.materialize(trading.VIX_TERM_STRUCTURE, partition_range=("2010-02-01", "2010-02-01"))
    after = conn.execute("select * from trading.vix_term_structure order by trade_date").fetchall()
    assert [r[:-1] for r in after] == [r[:-1] for r in before]


@needs_shared
def test_vix_checks_fail_on_an_expired_front_and_an_odd_curve(platform: Platform, conn: psycopg.Connection) -> None:
    _land_vix(platform, ["G10", "H10", "J10"])
    platform.materialize(trading.VIX_TERM_STRUCTURE, partition_range=("2010-02-01", "2010-02-01"))
    conn.execute("update trading.vix_term_structure set front_expiry = trade_date where trade_date = '2010-02-03'")
    conn.execute("update trading.vix_term_structure set front_price = vix_spot * 3 where trade_date = '2010-02-04'")
    with conn.transaction():
        results = {r.check_name: r for r in trading.vix_checks(conn)}
    assert not results[trading.VIX_FRONT_LIVE].passed and results[trading.VIX_FRONT_LIVE].metadata["rows"].value == 1
    assert not results[trading.VIX_CURVE_SANE].passed
    assert "vs spot" in str(results[trading.VIX_CURVE_SANE].metadata["first"].value)


@needs_shared
def test_a_blocking_vix_check_rolls_the_run_back(
    platform: Platform, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose rows name an expired front (a broken roll) keeps nothing and records no materialization."""
    _land_vix(platform, ["G10", "H10"])
    platform.materialize(trading.VIX_TERM_STRUCTURE, partition_range=("2010-02-01", "2010-02-01"))
    before = conn.execute("select * from trading.vix_term_structure order by trade_date").fetchall()
    original = vix.term_structure

    def broken_roll(*args: object) -> pl.DataFrame:
        return original(*args).with_columns(front_expiry=pl.col("trade_date"), front_price=pl.lit(99.0))

    monkeypatch.setattr(vix, "term_structure", broken_roll)
    result = platform.materialize(
        trading.VIX_TERM_STRUCTURE, partition_range=("2010-02-01", "2010-02-01"), raise_on_error=False
    )
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks[trading.VIX_FRONT_LIVE] is False
    assert not result.get_asset_materialization_events()
    assert conn.execute("select * from trading.vix_term_structure order by trade_date").fetchall() == before


TRADES = """order_id,symbol,side,qty,price,fees,strategy,submitted_at,filled_at
A1,SPY,buy,10,470.5,1.0,mean_rev,2024-01-02T14:30:00Z,2024-01-02T14:30:01.250Z
A2,SPY,SELL,10,472.25,,mean_rev,2024-01-03T09:31:00-05:00,2024-01-03T09:31:02-05:00
A3,QQQ,hold,5,400,0,trend,2024-01-03T15:00:00Z,2024-01-03T15:00:01Z
A4,QQQ,buy,-5,400,0,trend,2024-01-03T15:00:00Z,2024-01-03T15:00:01Z
A5,QQQ,buy,5,400,0,trend,2024-01-03 15:00:00,2024-01-03T15:00:01Z
A6,IWM,buy,3,200,0,trend,2024-02-01T15:00:00Z,2024-02-01T14:00:00Z
A1,SPY,buy,10,470.5,1.0,mean_rev,2024-01-02T14:30:00Z,2024-01-02T14:30:01.250Z
A7,IWM,buy,3,200,0.5,trend,2024-02-01T15:00:00Z,2024-02-01T15:00:00Z
"""


def _land_trades(platform: Platform, name: str, text: str) -> None:
    folder = trading.trade_folder(platform.settings)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def test_trades_load_once_refuse_bad_lines_and_are_permanent(platform: Platform, conn: psycopg.Connection) -> None:
    _land_trades(platform, "day1.csv", TRADES)
    result = platform.materialize(trading.TRADE_HISTORY, partition_range=("2024-01-01", "2024-01-01"))
    assert result.success
    rows = conn.execute(
        "select order_id, side, fees, filled_at, trade_date from trading.trade_history order by order_id"
    ).fetchall()
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        ("A1", "buy", 1.0, date(2024, 1, 2)),
        ("A2", "sell", 0.0, date(2024, 1, 3)),
    ]
    assert rows[1][3].isoformat() == "2024-01-03T14:31:02+00:00"
    rejects = conn.execute("select source_line, reason from trading.rejects order by source_line").fetchall()
    assert rejects == [
        (4, "side is not buy or sell"),
        (5, "qty is not positive"),
        (6, "submitted_at is not an ISO 8601 instant with its UTC offset"),
        (7, "filled_at is before submitted_at"),
        (8, "order_id A1 is listed before (day1.csv line 2): the first line is kept"),
    ]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {trading.TRADES_NEVER_DELETED: True, trading.TRADE_FILES_RECORDED: False}  # A7 is February's
    # The same file again, and February: nothing doubles; a changed trade is refused with its reason.
    _land_trades(
        platform,
        "day2.csv",
        TRADES.splitlines()[0] + "\nA1,SPY,buy,11,470.5,1.0,mean_rev,2024-01-02T14:30:00Z,2024-01-02T14:30:01.250Z\n",
    )
    result = platform.materialize(trading.TRADE_HISTORY, partition_range=("2024-01-01", "2024-02-01"))
    assert conn.execute("select count(*), sum(qty) from trading.trade_history").fetchone() == (3, 23.0)
    assert (
        conn.execute("select reason from trading.rejects where source_file = 'day2.csv'").fetchone()[0]
        == "order_id A1 is listed before with other values (day1.csv line 2): the first line is kept"
    )
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()}[trading.TRADE_FILES_RECORDED]
    # Alone (the first file archived), the changed trade meets the stored one.
    (trading.trade_folder(platform.settings) / "day1.csv").unlink()
    platform.materialize(trading.TRADE_HISTORY, partition_range=("2024-01-01", "2024-01-01"))
    assert conn.execute("select reason from trading.rejects where source_file = 'day2.csv'").fetchone()[0] == (
        "order_id A1 is recorded with other values (from day1.csv line 2): a trade is permanent"
    )
    assert conn.execute("select count(*), sum(qty) from trading.trade_history").fetchone() == (3, 23.0)
    with pytest.raises(psycopg.errors.RestrictViolation, match="permanent"):
        conn.execute("delete from trading.trade_history where order_id = 'A1'")
    with pytest.raises(psycopg.errors.RestrictViolation, match="permanent"):
        conn.execute("truncate trading.trade_history")


def test_trades_never_deleted_fails_when_a_trade_went_missing(platform: Platform, conn: psycopg.Connection) -> None:
    _land_trades(platform, "day1.csv", TRADES)
    platform.materialize(trading.TRADE_HISTORY, partition_range=("2024-01-01", "2024-01-01"))
    # What a superuser bypassing the trigger (or a restore that lost rows) would leave.
    conn.execute("alter table trading.trade_history disable trigger trade_history_no_delete")
    conn.execute("delete from trading.trade_history where order_id = 'A2'")
    with conn.transaction():
        results = {r.check_name: r for r in trading.trade_checks(conn, 0)}
    assert not results[trading.TRADES_NEVER_DELETED].passed
    assert results[trading.TRADES_NEVER_DELETED].metadata["rows_ever_inserted"].value == 2
    result = platform.materialize(
        trading.TRADE_HISTORY, partition_range=("2024-01-01", "2024-01-01"), raise_on_error=False
    )
    assert not result.get_asset_materialization_events()


OPTIONS = PROJECT_ROOT.parent / "shared" / "data" / "options"
NO_HISTORY = pl.DataFrame(
    schema={**{k: options.FEATURE_SCHEMA[k] for k in options.SNAPSHOT}, "trade_date": pl.Date, "total_oi": pl.Int64}
)


def _chain(ts: datetime, rows: list[tuple], underlying_price: float = 100.0) -> pl.DataFrame:
    """Snapshot rows of one US chain expiring 2024-03-15: (strike, type, oi, volume, iv, delta)."""
    frame = pl.DataFrame(
        rows, schema=["strike", "option_type", "oi", "volume", "iv", "delta"], orient="row"
    ).with_columns(
        ts=pl.lit(ts).dt.replace_time_zone("UTC"),
        exchange=pl.lit("US"),
        underlying=pl.lit("XYZ"),
        expiry=pl.lit(date(2024, 3, 15)),
        underlying_price=pl.lit(underlying_price),
        trade_date=pl.lit(ts.date()),
        time_to_expiry_seconds=pl.lit(3600, pl.Int64),
    )
    return frame.cast({"strike": pl.Float64, "oi": pl.Int64, "volume": pl.Int64, "iv": pl.Float64, "delta": pl.Float64})


def test_features_of_a_hand_worked_chain() -> None:
    """Underlying 100; strikes 90/100/110. Calls OI 10/20/30 (vol 1/2/3), puts OI 40/50/60 (vol 4/5/6).
    PCR OI 150/60 = 2.5, volume 15/6 = 2.5; ITM calls: 90 (OI 10), ITM puts: 110 (OI 60): ratio 6.
    Payout at 90: puts 50*10 + 60*20 = 1700; at 100: calls 10*10 + puts 60*10 = 700; at 110: calls
    10*20 + 20*10 = 400: max pain 110. ATM 100: IV (0.20 + 0.22) / 2. Skew: put delta -0.3 (IV 0.25) nearest
    -0.25, call delta 0.3 (IV 0.18) nearest 0.25: 0.07."""
    chain = _chain(
        datetime(2024, 3, 1, 21),
        [
            (90.0, "C", 10, 1, 0.24, 0.8), (100.0, "C", 20, 2, 0.20, 0.5), (110.0, "C", 30, 3, 0.18, 0.3),
            (90.0, "P", 40, 4, 0.25, -0.3), (100.0, "P", 50, 5, 0.22, -0.5), (110.0, "P", 60, 6, 0.21, -0.8),
        ],
    )  # fmt: skip
    row = options.features(chain, NO_HISTORY).row(0, named=True)
    assert row["pcr_oi"] == pytest.approx(2.5) and row["pcr_volume"] == pytest.approx(2.5)
    assert (row["total_itm_oi_ce"], row["total_itm_oi_pe"], row["pcr_itm_oi"]) == (10, 60, 6.0)
    assert row["max_pain"] == 110.0
    assert row["atm_iv"] == pytest.approx(0.21)
    assert (row["iv_skew"], row["skew_method"]) == (pytest.approx(0.07), "25 delta")
    assert row["complete"] and row["time_to_expiry_hours"] == 1.0
    # Without deltas: the put nearest 95 (strike 90, IV 0.25) minus the call nearest 105 (strike 100 or 110:
    # the nearer by |strike/100 - 1.05|, tie broken by the lower strike: 100, IV 0.20).
    no_delta = options.features(chain.with_columns(delta=pl.lit(None, pl.Float64)), NO_HISTORY).row(0, named=True)
    assert (no_delta["iv_skew"], no_delta["skew_method"]) == (pytest.approx(0.05), "strikes 95%/105%")
    # A later snapshot whose open interest did not change is a snapshot all the same, with its features.
    again = pl.concat([chain, chain.with_columns(ts=pl.col("ts") + pl.duration(minutes=30))])
    assert options.features(again, NO_HISTORY).height == 2
    payload = json.loads(options.with_payload(options.features(chain, NO_HISTORY))["features"][0])
    assert payload["max_pain"] == 110.0 and payload["pcr_oi"] == pytest.approx(2.5)


def test_oi_change_is_measured_in_time_not_rows() -> None:
    """End of day: 5 sessions back exactly; a missing session gives null, not the row before it. Intraday:
    3 minutes back, at most a minute earlier."""
    sessions = [date(2024, 1, d) for d in (2, 3, 4, 5, 8, 9, 10, 11, 12)]
    days = [d for d in sessions if d != date(2024, 1, 3)]  # no snapshot on Jan 3
    chains = pl.concat(
        _chain(datetime.combine(d, datetime.min.time()).replace(hour=21), [(100.0, "C", 100 + 10 * i, 1, 0.2, 0.5)])
        for i, d in enumerate(days)
    )
    rows = {r["trade_date"]: r for r in options.features(chains, NO_HISTORY).iter_rows(named=True)}
    # Jan 9 is 5 sessions after Jan 2 (OI 100 -> 140 at index 4): +40%.
    assert rows[date(2024, 1, 9)]["oi_change_pct_short"] == pytest.approx(40.0)
    assert rows[date(2024, 1, 10)]["oi_change_pct_short"] is None  # 5 sessions back is Jan 3: no snapshot
    minutes = pl.concat(
        _chain(datetime(2024, 1, 2, 15, m), [(100.0, "C", 1000 + m, 1, 0.2, 0.5)]) for m in (0, 1, 2, 3, 5, 10)
    )
    intraday = {r["ts"].minute: r for r in options.features(minutes, NO_HISTORY).iter_rows(named=True)}
    assert intraday[3]["oi_change_pct_short"] == pytest.approx(3 / 1000 * 100)  # against 15:00
    assert intraday[5]["oi_change_pct_short"] == pytest.approx(3 / 1002 * 100)  # 15:02
    assert intraday[10]["oi_change_pct_short"] is None  # 15:07 wanted, 15:05 is more than a minute before it


@pytest.mark.skipif(not OPTIONS.exists(), reason="../shared/data is not beside the project")
def test_nse_export_reads_both_sides_and_indian_digit_grouping(tmp_path: Path) -> None:
    folder = tmp_path / "nse" / "2024-05-24T15-30"
    folder.mkdir(parents=True)
    shutil.copy(OPTIONS / "nse_option_chains" / "option-chain-ED-NIFTY-30-May-2024.csv", folder)
    quotes = option_files.read_nse_chain(folder / "option-chain-ED-NIFTY-30-May-2024.csv")
    at = {(r["strike"], r["option_type"]): r for r in quotes.iter_rows(named=True)}
    call, put = at[(22500.0, "C")], at[(22500.0, "P")]
    assert (call["oi"], call["oi_change"], call["volume"], call["iv"], call["ltp"]) == (
        91472,
        9137,
        155971,
        pytest.approx(0.1099),
        343.9,
    )
    assert (call["bid_qty"], call["bid"], call["ask"], call["ask_qty"]) == (50, 341.0, 343.85, 475)
    assert (put["bid_qty"], put["bid"], put["ask"], put["ask_qty"]) == (1675, 286.85, 286.9, 425)
    assert (put["ltp"], put["iv"], put["volume"], put["oi_change"], put["oi"]) == (
        286.85,
        pytest.approx(0.1453),
        279620,
        -25498,
        109584,
    )
    assert at[(21500.0, "P")]["volume"] == 141256
    assert call["expires_at"].isoformat() == "2024-05-30T10:00:00+00:00"  # 15:30 in Kolkata
    good, rejects = options.reject_quotes(quotes)
    assert rejects.is_empty() and good.height == quotes.height
    # No underlying in the export: put-call parity at the strike where call and put are closest (22,550: call
    # 320.25, put 306.00, 14.25 apart; at 22,500 they are 57.05 apart).
    snapshot = options.snapshot_rows(good)
    assert snapshot["underlying_price"].unique().to_list() == [pytest.approx(22550 + 320.25 - 306.0)]


@pytest.mark.skipif(not OPTIONS.exists(), reason="../shared/data is not beside the project")
def test_lean_universe_times_and_a_chain_without_open_interest() -> None:
    spy = option_files.read_lean_universe(OPTIONS / "lean_universes" / "option_spy" / "20240102.csv")
    first = spy.row(0, named=True)
    assert (first["underlying"], first["strike"], first["option_type"], first["oi"]) == ("SPY", 402.0, "C", 6)
    assert first["underlying_price"] == 472.65 and first["ts"].isoformat() == "2024-01-02T21:00:00+00:00"
    assert options.snapshot_rows(spy)["time_to_expiry_seconds"][0] == 86400
    spx = option_files.read_lean_universe(OPTIONS / "lean_universes" / "indexoption_spx" / "20151222.csv")
    assert spx["expires_at"][0].isoformat() == "2016-01-15T14:30:00+00:00"  # AM-settled: 09:30 New York
    # AAPL on 2014-06-06 (the day before its 7:1 split) lists no open interest at all.
    aapl = option_files.read_lean_universe(OPTIONS / "lean_universes" / "option_aapl" / "20140606.csv")
    row = options.features(options.snapshot_rows(aapl), NO_HISTORY).row(0, named=True)
    assert row["pcr_oi"] is None and row["max_pain"] is None and not row["complete"]


def _land_options(platform: Platform) -> Path:
    folder = trading.option_folder(platform.settings)
    spy = folder / "lean" / "option_spy"
    spy.mkdir(parents=True)
    for name in ("20231228.csv", "20231229.csv", "20240102.csv", "20240103.csv"):
        shutil.copy(OPTIONS / "lean_universes" / "option_spy" / name, spy)
    nse = folder / "nse" / "2024-05-24T15-30"
    nse.mkdir(parents=True)
    for name in ("option-chain-ED-NIFTY-30-May-2024.csv", "option-chain-ED-NIFTY-23-May-2024.csv"):
        shutil.copy(OPTIONS / "nse_option_chains" / name, nse)
    return folder


@pytest.mark.skipif(not OPTIONS.exists(), reason="../shared/data is not beside the project")
def test_option_assets_write_day_partitions_features_and_rejects(platform: Platform, conn: psycopg.Connection) -> None:
    _land_options(platform)
    months = ("2023-12-01", "2024-05-01")
    result = platform.materialize(trading.OPTION_CHAIN_SNAPSHOTS, trading.ML_FEATURES, partition_range=months)
    assert result.success
    snapshots = conn.execute(
        "select trade_date, exchange, underlying, count(*) from trading.option_chain_snapshots group by 1, 2, 3 "
        "order by 1"
    ).fetchall()
    assert [(d.isoformat(), e, u) for d, e, u, _ in snapshots] == [
        ("2023-12-28", "US", "SPY"), ("2023-12-29", "US", "SPY"), ("2024-01-02", "US", "SPY"),
        ("2024-01-03", "US", "SPY"), ("2024-05-24", "NSE", "NIFTY"),
    ]  # fmt: skip
    partitions = conn.execute(
        "select count(*) from pg_inherits where inhparent = 'trading.option_chain_snapshots'::regclass"
    ).fetchone()[0]
    assert partitions == 5  # one per day written
    # The May 23 expiry was over at the snapshot: every quote of that file is refused, with its reason.
    rejects = conn.execute(
        "select count(*), min(reason), max(reason) from trading.rejects where table_name = 'option_chain_snapshots'"
    ).fetchone()
    assert rejects == (84, "option past its expiry in a live chain", "option past its expiry in a live chain")
    features = conn.execute(
        "select underlying, pcr_oi, features ->> 'max_pain', complete from trading.ml_features order by ts"
    ).fetchall()
    assert len(features) == 5 and features[-1][0] == "NIFTY" and features[-1][3]
    checks = {(e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert checks[("option_chain_snapshots", trading.CHAIN_QUOTES_VALID)]
    # SPY's Lean universe lists calls only on some days: no ATM put, so those rows are incomplete (WARN).
    assert checks[("ml_features", trading.FEATURES_COMPLETE)] is False
    before = conn.execute("select * from trading.ml_features order by ts").fetchall()
    platform.materialize(trading.OPTION_CHAIN_SNAPSHOTS, trading.ML_FEATURES, partition_range=months)
    after = conn.execute("select * from trading.ml_features order by ts").fetchall()
    assert [r[:-1] for r in after] == [r[:-1] for r in before]


@pytest.mark.skipif(not OPTIONS.exists(), reason="../shared/data is not beside the project")
def test_option_checks_fail_on_crossed_off_grid_stale_and_missing_features(
    platform: Platform, conn: psycopg.Connection
) -> None:
    _land_options(platform)
    platform.materialize(trading.OPTION_CHAIN_SNAPSHOTS, partition_range=("2024-01-01", "2024-01-01"))
    conn.execute(
        "update trading.option_chain_snapshots set bid = 5, ask = 4 where strike = 402 and trade_date = '2024-01-02'"
    )
    conn.execute(
        "insert into trading.option_chain_snapshots (trade_date, ts, exchange, underlying, expiry, strike, "
        "option_type, expires_at, source_file, source_line) select trade_date, ts, exchange, underlying, expiry, "
        "402.5, 'C', expires_at, 'test', 0 from trading.option_chain_snapshots where strike = 402 "
        "and expiry = '2024-01-03' and trade_date = '2024-01-02'"
    )
    # Ten minutes after the last snapshot, during the session of that day.
    now = datetime(2024, 1, 3, 21, 0, tzinfo=UTC) - timedelta(hours=5, minutes=50)
    conn.execute(
        "update trading.option_chain_snapshots set ts = %s - interval '10 minutes' where trade_date = '2024-01-03'",
        (now,),
    )
    with conn.transaction():
        results = {r.check_name: r for r in trading.chain_checks(conn, now)}
        features = {r.check_name: r for r in trading.features_checks(conn)}
    assert not results[trading.CHAIN_QUOTES_VALID].passed
    assert (
        not results[trading.STRIKES_ON_GRID].passed and results[trading.STRIKES_ON_GRID].metadata["off_grid"].value == 1
    )
    assert not results[trading.CHAIN_FRESH_IN_SESSION].passed
    assert not features[trading.FEATURES_COMPLETE].passed
    # ml_features never ran: both January snapshots lack their row.
    assert features[trading.FEATURES_COMPLETE].metadata["snapshots_without_features"].value == 2
    with conn.transaction():
        after_hours = {r.check_name: r.passed for r in trading.chain_checks(conn, now + timedelta(hours=8))}
    assert after_hours[trading.CHAIN_FRESH_IN_SESSION]


INTRADAY = PROJECT_ROOT.parent / "shared" / "data" / "intraday"
DAILY = PROJECT_ROOT.parent / "shared" / "data" / "daily"
needs_intraday = pytest.mark.skipif(not INTRADAY.exists(), reason="../shared/data is not beside the project")


def _rolled(name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(minutes as read, bars of every resolution) of a whole real minute file."""
    chunk = minute_files.read_minutes(INTRADAY / name, 0, 0)
    days = chunk.rows["ts"].dt.date()
    calendar = intraday.sessions(chunk.rows["exchange"].unique().to_list(), days.min() - timedelta(days=3), days.max())
    rows = intraday.minute_rows(chunk.rows, calendar)
    clock = {chunk.rows["exchange"][0]: chunk.rows["ts"].max() + timedelta(minutes=1)}
    return chunk.rows, pl.concat([rows.drop("source_file", "source_line"), intraday.roll_up(rows, calendar, clock)])


@needs_intraday
@pytest.mark.parametrize(
    ("name", "zone", "open_at", "close_at"),
    [
        ("lean_equity_usa_spy_1m_trade.csv", "America/New_York", "09:30", "16:00"),
        ("lean_equity_india_juniorbees_1m_trade.csv", "Asia/Kolkata", "09:15", "15:30"),
    ],
)
def test_bars_equal_a_pandas_resample_offset_to_the_session_open(
    name: str, zone: str, open_at: str, close_at: str
) -> None:
    minutes, bars = _rolled(name)
    frame = minutes.to_pandas().set_index("ts").tz_convert(zone)
    session = frame.between_time(open_at, close_at, inclusive="left")
    hours, mins = map(int, open_at.split(":"))
    for resolution, rule in (("5min", "5min"), ("15min", "15min"), ("1h", "60min")):
        expected = (
            session.resample(rule, origin="start_day", offset=pd.Timedelta(hours=hours, minutes=mins), closed="left")
            .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
            .dropna(subset=["open"])
        )
        ours = bars.filter(pl.col("resolution") == resolution).sort("bar_start").to_pandas()
        ours = ours.set_index(pd.DatetimeIndex(ours["bar_start"]).tz_convert(zone))
        assert list(ours.index) == list(expected.index), resolution
        for column in ("open", "high", "low", "close", "volume"):
            assert np.allclose(ours[column], expected[column], rtol=0, atol=1e-9), (resolution, column)
    # The last hourly bar of an NSE day closes at 15:30, not 16:15.
    hourly = bars.filter(pl.col("resolution") == "1h").sort("bar_start")
    last = hourly.row(-1, named=True)
    assert last["bar_end"].astimezone(ZoneInfo(zone)).strftime("%H:%M") == close_at
    assert not bars.filter(pl.col("resolution") != "1min", ~pl.col("in_session")).height


@needs_intraday
def test_daily_bar_from_minutes_equals_the_daily_file_of_the_same_instrument() -> None:
    _, bars = _rolled("lean_equity_usa_spy_1m_trade.csv")
    ours = bars.filter(pl.col("resolution") == "1D").sort("trade_date")
    daily = pl.read_csv(
        DAILY / "lean_equity_usa_spy_1d.csv", has_header=False, new_columns=["d", "o", "h", "l", "c", "v"]
    ).with_columns(trade_date=pl.col("d").str.slice(0, 8).str.to_date("%Y%m%d"))
    both = ours.join(daily, on="trade_date")
    assert both.height == 6  # the daily file ends in 2021: the 2023 day has no counterpart
    for ours_column, theirs in (("open", "o"), ("high", "h"), ("close", "c")):
        assert (both[ours_column] - both[theirs] / 10_000).abs().max() < 1e-9
    # Lean's daily file says 165.37 for the low of 2013-10-08, its minute file 165.36: a cent apart, once.
    gaps = (both["low"] - both["l"] / 10_000).abs()
    assert gaps.max() < 0.0100001 and (gaps > 1e-9).sum() == 1
    assert (both["volume"] == both["v"]).all()


def test_a_bar_is_written_when_its_window_closes_by_the_data_clock() -> None:
    """Minutes 09:30..10:06 ET of 2024-01-02: 5min bars through 10:05 are closed by the clock (10:07); the
    10:05-10:10 bar, the hour and the day are not. Pre-open minutes (09:25) stay out of every bar."""
    stamps = [datetime(2024, 1, 2, 14, 25, tzinfo=UTC)] + [
        datetime(2024, 1, 2, 14, 30, tzinfo=UTC) + timedelta(minutes=i) for i in range(37)
    ]
    minutes = pl.DataFrame(
        {
            "exchange": "US",
            "symbol": "XYZ",
            "ts": stamps,
            "open": 10.0,
            "high": [11.0 + i for i in range(len(stamps))],
            "low": 9.0,
            "close": 10.5,
            "volume": 100.0,
            "vwap": None,
            "trade_count": None,
            "oi": None,
        },
        schema=intraday.MINUTE_SCHEMA,
    )
    calendar = intraday.sessions(["US"], date(2024, 1, 1), date(2024, 1, 3))
    rows = intraday.minute_rows(minutes, calendar)
    assert rows.filter(~pl.col("in_session"))["bar_start"].to_list() == [stamps[0]]
    bars = intraday.roll_up(rows, calendar, {"US": stamps[-1] + timedelta(minutes=1)})
    five = bars.filter(pl.col("resolution") == "5min").sort("bar_start")
    assert five.height == 7 and five["bar_end"].max() == datetime(2024, 1, 2, 15, 5, tzinfo=UTC)
    assert five["high"][0] == 11.0 + 5  # 09:30-09:35: minutes 1..5 of the list (the pre-open one excluded)
    assert set(bars["resolution"]) == {"5min", "15min"}  # 09:30-09:45 and 09:45-10:00 closed; not the hour
    assert five["vwap"][0] == 10.5 and five["trade_count"][0] == 5


def _stored_bars(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "select trade_date, bar_start, exchange, symbol, resolution, bar_end, in_session, open, high, low, close, "
        "volume, vwap, trade_count from trading.multi_resolution_bars order by resolution, symbol, bar_start"
    ).fetchall()


@needs_intraday
def test_appended_minute_file_resumes_from_its_checkpoint_and_equals_one_read(
    platform: Platform, conn: psycopg.Connection
) -> None:
    folder = intraday_assets.intraday_folder(platform.settings)
    folder.mkdir(parents=True)
    source = (INTRADAY / "lean_equity_india_juniorbees_1m_trade.csv").read_bytes()
    target = folder / "lean_equity_india_juniorbees_1m_trade.csv"
    lines = source.splitlines(keepends=True)
    # Day one and half a line of day two (still being written).
    cut = next(i for i, line in enumerate(lines) if line.startswith(b"20190102"))
    target.write_bytes(b"".join(lines[:cut]) + lines[cut][:10])
    month = ("2019-01-01", "2019-01-01")
    first = platform.materialize(trading.MULTI_RESOLUTION_BARS, partition_range=month)
    assert first.success
    assert conn.execute("select bytes_read, lines_read from trading.intraday_files").fetchone() == (
        len(b"".join(lines[:cut])),
        cut,
    )
    days = conn.execute(
        "select resolution, count(*) from trading.multi_resolution_bars group by 1 order by 1"
    ).fetchall()
    assert dict(days)["1D"] == 1 and dict(days)["1min"] == cut - 1
    # The rest lands (the half line completed): the run reads from the checkpoint only.
    target.write_bytes(source)
    second = platform.materialize(trading.MULTI_RESOLUTION_BARS, partition_range=month)
    meta = second.get_asset_materialization_events()[0].materialization.metadata
    assert meta["minutes_written"].value == len(lines) - cut
    # Nothing new: the run reads nothing, writes nothing and succeeds.
    third = platform.materialize(trading.MULTI_RESOLUTION_BARS, partition_range=month)
    assert third.get_asset_materialization_events()[0].materialization.metadata["minutes_written"].value == 0
    incremental = _stored_bars(conn)
    # The same file read at once into a fresh table gives the same rows.
    conn.execute("truncate trading.multi_resolution_bars, trading.intraday_files")
    platform.materialize(trading.MULTI_RESOLUTION_BARS, partition_range=month)
    assert _stored_bars(conn) == incremental
    assert {r[4] for r in incremental} == {"1min", "5min", "15min", "1h", "1D"}


@needs_intraday
def test_intraday_sensor_asks_once_per_growth_for_the_months_of_the_new_lines(
    platform: Platform, conn: psycopg.Connection
) -> None:
    folder = intraday_assets.intraday_folder(platform.settings)
    folder.mkdir(parents=True)
    shutil.copy(INTRADAY / "lean_equity_india_juniorbees_1m_trade.csv", folder)
    sensor = next(s for s in platform.defs.sensors if s.name == "trading_intraday_sensor")
    with dg.build_sensor_context(instance=platform.instance, resources=platform.defs.resources) as context:
        result = sensor(context)
    (request,) = result.run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "2018-12-01"  # a day of margin either side
    assert request.tags["dagster/asset_partition_range_end"] == "2019-01-01"
    platform.materialize(trading.MULTI_RESOLUTION_BARS, partition_range=("2018-12-01", "2019-01-01"))
    with dg.build_sensor_context(instance=platform.instance, resources=platform.defs.resources) as context:
        assert isinstance(sensor(context), dg.SkipReason)  # read to the end: nothing to ask


@needs_intraday
def test_bar_checks_fail_outside_the_session_on_disordered_ohlc_and_unread_files(
    platform: Platform, conn: psycopg.Connection
) -> None:
    folder = intraday_assets.intraday_folder(platform.settings)
    folder.mkdir(parents=True)
    shutil.copy(INTRADAY / "lean_equity_india_juniorbees_1m_trade.csv", folder)
    platform.materialize(trading.MULTI_RESOLUTION_BARS, partition_range=("2019-01-01", "2019-01-01"))
    conn.execute(
        "update trading.multi_resolution_bars set bar_start = bar_start - interval '1 hour' "
        "where resolution = '1h' and bar_start = (select min(bar_start) from trading.multi_resolution_bars)"
    )
    conn.execute(
        "update trading.multi_resolution_bars set high = low - 1 "
        "where resolution = '5min' and trade_date = '2019-01-02'"
    )
    with conn.transaction():
        results = {r.check_name: r for r in intraday_assets.bar_checks(conn, {"late.csv": 3})}
    assert not results[intraday_assets.BARS_IN_SESSION].passed
    assert not results[intraday_assets.BARS_OHLC_ORDERED].passed
    assert not results[intraday_assets.FILES_CAUGHT_UP].passed


def test_partitions_of_the_coming_days_are_made_ahead(platform: Platform, conn: psycopg.Connection) -> None:
    job = platform.defs.resolve_job_def(trading.PARTITIONS_AHEAD_JOB)
    assert job.execute_in_process(instance=platform.instance, resources=platform.defs.resources).success
    today = datetime.now(UTC).date()
    names = {
        name
        for (name,) in conn.execute(
            "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid "
            "join pg_class p on p.oid = i.inhparent where p.relname in "
            "('option_chain_snapshots', 'ml_features', 'multi_resolution_bars')"
        )
    }
    assert len(names) == 3 * (trading.DAYS_AHEAD + 1)
    assert f"ml_features_p{(today + timedelta(days=trading.DAYS_AHEAD)):%Y%m%d}" in names
    assert job.execute_in_process(instance=platform.instance, resources=platform.defs.resources).success  # idempotent


def test_two_spot_files_disagreeing_on_a_date_are_refused_by_name(tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("DATE,VIX,SP500\n2020-01-02,12.5,3257.85\n2020-01-03,14.0,3234.85\n")
    second.write_text("DATE,VIX,SP500\n2020-01-03,14.0,3234.85\n2020-01-06,13.9,3246.28\n")
    frames = [vix_files.read_spot(p, "SP500")[0] for p in (first, second)]
    assert vix_files.merged_spot([first, second], frames)["trade_date"].to_list() == [
        date(2020, 1, 2),
        date(2020, 1, 3),
        date(2020, 1, 6),
    ]
    second.write_text("DATE,VIX,SP500\n2020-01-03,14.2,3234.85\n")
    frames = [vix_files.read_spot(p, "SP500")[0] for p in (first, second)]
    with pytest.raises(InputError, match=r"a\.csv, b\.csv: 2020-01-03 is given different VIX"):
        vix_files.merged_spot([first, second], frames)


def test_a_malformed_landed_file_fails_the_run_naming_the_file_line_and_reason(
    platform: Platform, conn: psycopg.Connection
) -> None:
    folder = intraday_assets.intraday_folder(platform.settings)
    folder.mkdir(parents=True)
    (folder / "US_XYZ.csv").write_text("time,o,h,l,c,v\n2024-01-02T14:30:00Z,1,1,1,1,1\n")
    result = platform.materialize(
        trading.MULTI_RESOLUTION_BARS, partition_range=("2024-01-01", "2024-01-01"), raise_on_error=False
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.cause.message if failure.step_failure_data.error.cause else ""
    message += failure.step_failure_data.error.message
    assert "US_XYZ.csv, line 1: 'time,o,h,l,c,v' is not the header ts,open,high,low,close,volume" in message
    assert conn.execute("select count(*) from trading.intraday_files").fetchone()[0] == 0


def test_cli_runs_a_named_job_over_the_months_asked(
    cli_env: Settings, conn: psycopg.Connection, capsys: pytest.CaptureFixture
) -> None:
    folder = trading.trade_folder(cli_env)
    folder.mkdir(parents=True)
    (folder / "day1.csv").write_text(TRADES)
    assert main(["run", "trading_tables", "--start", "2024-01-01", "--end", "2024-01-31"]) == 0
    assert "== run trading_tables: succeeded" in capsys.readouterr().out
    assert conn.execute("select count(*) from trading.trade_history").fetchone()[0] == 2  # January's (A7 is February's)
    assert main(["run", "no_such_job"]) == 2
    assert "no job 'no_such_job'" in capsys.readouterr().err


def test_a_commit_that_fails_records_no_materialization(platform: Platform, conn: psycopg.Connection) -> None:
    """The materialization is reported after the commit: a write refused at commit time (here a deferred
    constraint trigger) leaves the run failed and the partition not marked done."""
    conn.execute(
        "create function public.refuse_at_commit() returns trigger language plpgsql as "
        "$$ begin raise exception 'refused at commit'; end $$"
    )
    conn.execute(
        "create constraint trigger refuse_at_commit after insert on trading.trade_history "
        "deferrable initially deferred for each row execute function public.refuse_at_commit()"
    )
    _land_trades(platform, "day1.csv", TRADES)
    result = platform.materialize(
        trading.TRADE_HISTORY, partition_range=("2024-01-01", "2024-01-01"), raise_on_error=False
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "refused at commit" in str(failure.step_failure_data.error.to_string())
    assert not result.get_asset_materialization_events()
    assert conn.execute("select count(*) from trading.trade_history").fetchone()[0] == 0
