"""The trading group: macro signals without look-ahead, the VIX term structure from real VX futures, permanent
paper trades, and day/month partitions the platform makes itself."""

from datetime import date

import pandas as pd
import polars as pl
import psycopg
import pytest

from trading_assets.compute import macro
from trading_assets.config import PROJECT_ROOT
from trading_assets.defs.metadata.assets import DIM_SERIES, FACT_SERIES_VALUE
from trading_assets.defs.trading import assets as trading
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
