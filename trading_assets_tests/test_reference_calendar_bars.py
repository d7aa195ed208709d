"""The calendar and calendar-anchored bar families against an independent pandas reference, on real files.

Two real daily files (a slice of about two years each) go through the platform as users load them:
`price_histories` from the file, then the daily bars and every multi-day family, through Dagster on
PostgreSQL. The rows read back from the database are compared with a pandas computation that shares no
code with `trading_assets.compute` (windows from pandas Periods, aggregation by groupby):

- AAPL (QuantConnect Lean daily trade bars, headerless, prices x 10000, America/New_York, calendar XNYS:
  holidays such as Good Friday, Thanksgiving, New Year and the 2018-12-05 national day of mourning);
- BTCUSDT (Binance spot klines, UTC day, every day a session).

The contract (DESIGN §6, SEMANTICS §A.2-A.3): windows are fixed calendar periods (ISO weeks start on
Monday and count from 1970-01-05, US weeks on Sunday from 1970-01-04; N-month groups from January; years);
a snapshot row per daily row while the bar forms, with open = first open, high = running max, low =
running min, close = the day's close, volume = running sum; the canonical row (`is_partial_end = false`)
is the one on the period's last expected session of the asset's calendar; `cal` keeps full periods only
(the first period is dropped when an expected session of it precedes the asset's first row), `cal_anchor`
keeps that partial first period too, flagged `is_partial_start`. The period of a row is read back from
`time_open_bar` / `time_close_bar`: the local midnights that open the period's first day and follow its last.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import exchange_calendars
import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg import sql

from trading_assets.config import PROJECT_ROOT, Settings
from trading_assets.defs.jobs import TABLE_CHECKS
from trading_assets.defs.market.assets import BAR_KEYS, PRICE_HISTORIES
from trading_assets_tests.conftest import SHARED_DATA, Platform, database_copy

DAILY = SHARED_DATA / "daily"
FIRST, LAST = pd.Timestamp("2018-12-03"), pd.Timestamp("2021-01-15")  # a Monday .. a Friday
MONTHS = ("2019-01-01", "2021-01-01")  # partitions from 2019; the first one owns every earlier date


@dataclass(frozen=True)
class Source:
    symbol: str
    file: str
    lean: bool
    calendar: str
    timezone: str
    divisor: float


SOURCES = {
    "AAPL": Source("AAPL", "lean_equity_usa_aapl_1d.csv", True, "XNYS", "America/New_York", 10000.0),
    "BTCUSDT": Source("BTCUSDT", "binance_BTCUSDT_1d.csv", False, "24/7", "UTC", 1.0),
}
FAMILIES = {
    "cal_iso": ("price_bars_multi_tf_cal_iso", False),
    "cal_us": ("price_bars_multi_tf_cal_us", False),
    "cal_anchor_iso": ("price_bars_multi_tf_cal_anchor_iso", True),
    "cal_anchor_us": ("price_bars_multi_tf_cal_anchor_us", True),
}
TIMEFRAMES = {
    "cal_iso": ["1W_CAL_ISO", "2W_CAL_ISO", "1M_CAL", "3M_CAL", "6M_CAL", "1Y_CAL"],
    "cal_us": ["1W_CAL_US", "2W_CAL_US", "1M_CAL", "3M_CAL", "6M_CAL", "1Y_CAL"],
    "cal_anchor_iso": [
        "1W_CAL_ANCHOR_ISO", "2W_CAL_ANCHOR_ISO", "1M_CAL_ANCHOR", "3M_CAL_ANCHOR", "6M_CAL_ANCHOR", "1Y_CAL_ANCHOR",
    ],
    "cal_anchor_us": [
        "1W_CAL_ANCHOR_US", "2W_CAL_ANCHOR_US", "1M_CAL_ANCHOR", "3M_CAL_ANCHOR", "6M_CAL_ANCHOR", "1Y_CAL_ANCHOR",
    ],
}  # fmt: skip
CASES = [(symbol, family) for symbol in SOURCES for family in FAMILIES]
RELATIVE = 1e-9

needs_shared = pytest.mark.skipif(
    not all((DAILY / s.file).exists() for s in SOURCES.values()), reason="../shared/data is not beside the project"
)
pytestmark = needs_shared


# ---------------------------------------------------------------------------------------------------------------
# The independent reference: pandas only.


def read_daily(source: Source) -> pd.DataFrame:
    """The file's rows in [FIRST, LAST] as pandas reads them (no platform reader involved)."""
    path = DAILY / source.file
    if source.lean:
        raw = pd.read_csv(path, header=None, names=["stamp", "open", "high", "low", "close", "volume"])
        dates = pd.to_datetime(raw["stamp"], format="%Y%m%d %H:%M").dt.normalize()
    else:
        raw = pd.read_csv(path)
        dates = pd.to_datetime(raw["timestamp"], format="%Y-%m-%d")
    frame = pd.DataFrame({"date": dates})
    for column in ("open", "high", "low", "close"):
        frame[column] = raw[column].astype("float64") / source.divisor
    frame["volume"] = raw["volume"].astype("float64")
    return frame[frame["date"].between(FIRST, LAST)].sort_values("date").reset_index(drop=True)


def expected_sessions(calendar: str) -> pd.DatetimeIndex:
    """Every expected session from 2017 to 2022 (every day for a 24/7 asset)."""
    if calendar == "24/7":
        return pd.date_range("2017-01-01", "2022-12-31", freq="D")
    sessions = exchange_calendars.get_calendar(calendar, start="2017-01-01", end="2022-12-31").sessions
    return pd.DatetimeIndex(sessions).tz_localize(None).normalize()


_LABEL = re.compile(r"^(\d+)([WMY])_CAL(?:_ANCHOR)?(?:_(ISO|US))?$")
WEEK_PERIOD = {"ISO": "W-SUN", "US": "W-SAT"}  # weeks ending Sunday (start Monday) / ending Saturday (start Sunday)
WEEK_EPOCH = {"ISO": pd.Timestamp("1970-01-05"), "US": pd.Timestamp("1970-01-04")}
ONE_DAY = pd.Timedelta(days=1)


def calendar_windows(dates: pd.Series, tf: str) -> pd.DataFrame:
    """First and last day of the calendar window of `tf` holding each date, from pandas Periods."""
    match = _LABEL.match(tf)
    assert match, tf
    n, unit, scheme = int(match.group(1)), match.group(2), match.group(3)
    if unit == "W":
        week = dates.dt.to_period(WEEK_PERIOD[scheme])
        start = week.dt.start_time
        if n > 1:  # groups of n weeks counted from the scheme's epoch week
            weeks = (start - WEEK_EPOCH[scheme]).dt.days // 7
            start = WEEK_EPOCH[scheme] + pd.to_timedelta((weeks // n) * 7 * n, unit="D")
        end = start + pd.to_timedelta(7 * n - 1, unit="D")
    elif (unit, n) in {("M", 1), ("M", 3), ("M", 12), ("Y", 1)}:
        period = dates.dt.to_period({("M", 1): "M", ("M", 3): "Q", ("M", 12): "Y", ("Y", 1): "Y"}[(unit, n)])
        start, end = period.dt.start_time, period.dt.end_time.dt.normalize()
    elif unit == "M":  # n-month groups from January (6M = halves)
        first_month = (dates.dt.month - 1) // n * n + 1
        start = pd.to_datetime(pd.DataFrame({"year": dates.dt.year, "month": first_month, "day": 1}))
        end = start + pd.DateOffset(months=n) - ONE_DAY
    else:  # n-year groups starting in years divisible by n
        first_year = dates.dt.year // n * n
        start = pd.to_datetime(pd.DataFrame({"year": first_year, "month": 1, "day": 1}))
        end = start + pd.DateOffset(years=n) - ONE_DAY
    return pd.DataFrame({"bar_start": start.to_numpy(), "bar_end": end.to_numpy()}, index=dates.index)


def _last_session(bar_start: pd.Series, bar_end: pd.Series, sessions: pd.DatetimeIndex) -> pd.Series:
    """The last expected session of each window (NaT when the window holds none)."""
    position = np.searchsorted(sessions.to_numpy(), bar_end.to_numpy(), side="right") - 1
    last = pd.Series(sessions.to_numpy()[position], index=bar_start.index)
    return last.where(last >= bar_start)


def _windowed(daily: pd.DataFrame, tf: str, anchored: bool, sessions: pd.DatetimeIndex) -> pd.DataFrame:
    """Daily rows with their window, restricted to the windows the family keeps."""
    frame = pd.concat([daily, calendar_windows(daily["date"], tf)], axis=1)
    first_day = frame["date"].min()
    first_start = frame.loc[frame["date"] == first_day, "bar_start"].iloc[0]
    # The first window is partial when an expected session of it precedes the asset's first row.
    partial_first = bool(((sessions >= first_start) & (sessions < first_day)).any())
    if partial_first and not anchored:
        frame = frame[frame["bar_start"] != first_start]
    frame = frame.copy()
    frame["is_partial_start"] = partial_first & (frame["bar_start"] == first_start)
    frame["bar_anchor_offset"] = (frame["bar_start"] - first_start).dt.days
    frame["bar_seq"] = frame["bar_start"].rank(method="dense").astype("int64")
    frame["tf_days"] = (frame["bar_end"] - frame["bar_start"]).dt.days + 1
    frame["last_session"] = _last_session(frame["bar_start"], frame["bar_end"], sessions)
    return frame


def reference_canonical(daily: pd.DataFrame, tf: str, anchored: bool, sessions: pd.DatetimeIndex) -> pd.DataFrame:
    """One row per completed window: groupby aggregation (first/max/min/last/sum) of its daily rows.

    A window is complete when its last daily row falls on its last expected session.
    """
    frame = _windowed(daily, tf, anchored, sessions)
    grouped = frame.groupby("bar_start", sort=True)
    bars = grouped.agg(
        trade_date=("date", "last"),
        bar_end=("bar_end", "first"),
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
        pos_in_bar=("date", "size"),
        tf_days=("tf_days", "first"),
        bar_seq=("bar_seq", "first"),
        bar_anchor_offset=("bar_anchor_offset", "first"),
        is_partial_start=("is_partial_start", "first"),
        last_session=("last_session", "first"),
    )
    # The first date the window's high (low) was reached: idxmax / idxmin keep the first occurrence.
    bars["high_date"] = frame.loc[grouped["high"].idxmax(), "date"].to_numpy()
    bars["low_date"] = frame.loc[grouped["low"].idxmin(), "date"].to_numpy()
    bars = bars[bars["trade_date"] == bars["last_session"]].drop(columns="last_session")
    return bars.reset_index().assign(tf=tf)


def reference_snapshots(daily: pd.DataFrame, tf: str, anchored: bool, sessions: pd.DatetimeIndex) -> pd.DataFrame:
    """Every snapshot row: cumulative first/cummax/cummin/cumsum within the window up to the row's day."""
    frame = _windowed(daily, tf, anchored, sessions)
    grouped = frame.groupby("bar_start", sort=True)
    return pd.DataFrame(
        {
            "tf": tf,
            "trade_date": frame["date"],
            "bar_start": frame["bar_start"],
            "bar_end": frame["bar_end"],
            "open": grouped["open"].transform("first"),
            "high": grouped["high"].cummax(),
            "low": grouped["low"].cummin(),
            "close": frame["close"],
            "volume": grouped["volume"].cumsum(),
            "pos_in_bar": grouped.cumcount() + 1,
            "tf_days": frame["tf_days"],
            "bar_seq": frame["bar_seq"],
            "bar_anchor_offset": frame["bar_anchor_offset"],
            "is_partial_start": frame["is_partial_start"],
            "is_partial_end": frame["date"] != frame["last_session"],
        }
    ).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------------
# The platform: load the slices, build every bar family once for the module, read the rows back.


def _slice_file(source: Source, folder: Path) -> Path:
    """The source file's lines between FIRST and LAST, byte for byte (header kept for headed files)."""
    lines = (DAILY / source.file).read_text().splitlines(keepends=True)
    header, body = ([], lines) if source.lean else (lines[:1], lines[1:])
    first, last = (
        (FIRST.strftime("%Y%m%d"), LAST.strftime("%Y%m%d")) if source.lean else (str(FIRST.date()), str(LAST.date()))
    )
    kept = [line for line in body if first <= line[: len(first)] <= last]
    path = folder / source.file
    path.write_text("".join(header + kept))
    return path


@dataclass
class Built:
    bars: dict[str, dict[str, pd.DataFrame]]  # symbol -> family -> rows of the family
    timeframes: dict[str, list[str]]
    rejects: int


def _read_family(conn: psycopg.Connection, table: str, anchored: bool, symbol: str) -> pd.DataFrame:
    offset = ", b.bar_anchor_offset" if anchored else ""
    query = sql.SQL(
        "select b.tf, b.bar_seq, b.trade_date, b.open, b.high, b.low, b.close, b.volume, b.tf_days, b.pos_in_bar, "
        "b.is_partial_start, b.is_partial_end, b.high_date, b.low_date, "
        "(b.time_open_bar at time zone a.timezone)::date as bar_start, "
        "(b.time_close_bar at time zone a.timezone)::date - 1 as bar_end" + offset + " "
        "from market.{} b join market.dim_assets a using (asset_id) where a.symbol = %s order by b.tf, b.trade_date"
    ).format(sql.Identifier(table))
    cursor = conn.execute(query, (symbol,))
    frame = pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description])
    for column in ("trade_date", "high_date", "low_date", "bar_start", "bar_end"):
        frame[column] = pd.to_datetime(frame[column])
    return frame


@pytest.fixture(scope="module")
def built(server_url: str, template_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """One database and one platform for the module: loading and building once keeps every case fast."""
    home = tmp_path_factory.mktemp("reference_calendar_bars")
    with database_copy(server_url, template_database) as url:
        with pytest.MonkeyPatch.context() as env, dg.DagsterInstance.ephemeral() as instance:
            config = home / "dim_series.csv"
            shutil.copy(PROJECT_ROOT / "config" / "dim_series.csv", config)
            env.setenv("TRADING_ASSETS_HOME", str(home / "home"))
            env.setenv("TRADING_ASSETS_DATABASE_URL", url)
            env.setenv("TRADING_ASSETS_SERIES_CONFIG", str(config))
            env.setenv("TRADING_ASSETS_START_DATE", MONTHS[0])
            env.delenv("DAGSTER_PG_URL", raising=False)
            platform = Platform(Settings.from_env(), instance)
            files = [
                {
                    "path": str(_slice_file(s, home)),
                    "symbol": s.symbol,
                    "price_divisor": s.divisor,
                    "calendar": s.calendar,
                    "timezone": s.timezone,
                }
                for s in SOURCES.values()
            ]
            platform.run(
                dg.AssetSelection.assets(PRICE_HISTORIES),
                partition_range=MONTHS,
                ops={"market__price_histories": {"files": files}},
            )
            bars = dg.AssetSelection.assets(BAR_KEYS["1d"], *(BAR_KEYS[f] for f in FAMILIES)) - TABLE_CHECKS
            platform.run(bars, partition_range=MONTHS)
        with psycopg.connect(url, autocommit=True) as conn:
            timeframes = {
                family: [tf for (tf,) in conn.execute(
                    "select tf from market.dim_timeframe where family = %s and is_active order by sort_order", (family,)
                )]
                for family in FAMILIES
            }  # fmt: skip
            rejects = conn.execute("select count(*) from market.price_rejects").fetchone()[0]
            rows = {
                symbol: {f: _read_family(conn, table, anchored, symbol) for f, (table, anchored) in FAMILIES.items()}
                for symbol in SOURCES
            }
        yield Built(bars=rows, timeframes=timeframes, rejects=rejects)


@pytest.fixture(scope="module")
def daily() -> dict[str, pd.DataFrame]:
    return {symbol: read_daily(source) for symbol, source in SOURCES.items()}


@pytest.fixture(scope="module")
def sessions() -> dict[str, pd.DatetimeIndex]:
    return {symbol: expected_sessions(source.calendar) for symbol, source in SOURCES.items()}


# ---------------------------------------------------------------------------------------------------------------
# Comparison.

KEY = ["tf", "trade_date"]
EXACT = ["bar_start", "bar_end", "open", "high", "low", "close", "pos_in_bar", "tf_days", "bar_seq", "is_partial_start"]


def _matched(platform: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Platform and reference rows side by side; fails listing the rows only one side has."""
    merged = platform.merge(reference, on=KEY, how="outer", suffixes=("_platform", "_pandas"), indicator=True)
    lonely = merged[merged["_merge"] != "both"][[*KEY, "_merge"]]
    assert lonely.empty, f"rows on one side only (left_only = platform, right_only = pandas):\n{lonely.to_string()}"
    return merged


def _describe(row: pd.Series, column: str) -> str:
    platform, pandas = row[f"{column}_platform"], row[f"{column}_pandas"]
    return f"{row['tf']} {row['trade_date'].date()} {column}: platform {platform!r}, pandas {pandas!r}"


def _differences(merged: pd.DataFrame, exact: list[str], relative: list[str]) -> list[str]:
    problems = []
    for column in exact:
        left, right = merged[f"{column}_platform"], merged[f"{column}_pandas"]
        bad = merged[left.to_numpy() != right.to_numpy()]
        problems += [_describe(r, column) for _, r in bad.head(5).iterrows()]
    for column in relative:
        left = merged[f"{column}_platform"].astype("float64").to_numpy()
        right = merged[f"{column}_pandas"].astype("float64").to_numpy()
        close = np.isclose(left, right, rtol=RELATIVE, atol=0.0) | (np.isnan(left) & np.isnan(right))
        problems += [_describe(r, column) for _, r in merged[~close].head(5).iterrows()]
    return problems


def test_the_slices_loaded_cleanly_and_the_families_hold_the_seeded_timeframes(
    built: Built, daily: dict[str, pd.DataFrame]
) -> None:
    assert built.rejects == 0  # nothing refused, no high/low repaired: the daily bars are the file's rows
    assert built.timeframes == TIMEFRAMES
    for symbol, frames in built.bars.items():
        for family, rows in frames.items():
            assert set(rows["tf"]) == set(TIMEFRAMES[family]), (symbol, family)
    # The reference data is what it should be: XNYS closed on its holidays, BTC traded every day.
    aapl, btc = daily["AAPL"], daily["BTCUSDT"]
    holidays = pd.to_datetime(["2018-12-05", "2018-12-25", "2019-01-01", "2019-04-19", "2019-11-28", "2020-01-01"])
    assert not aapl["date"].isin(holidays).any()
    assert len(btc) == (LAST - FIRST).days + 1
    assert len(aapl) == len(expected_sessions("XNYS").to_series().loc[FIRST:LAST])


@pytest.mark.parametrize(("symbol", "family"), CASES)
def test_canonical_rows_equal_pandas_period_aggregates(
    built: Built,
    daily: dict[str, pd.DataFrame],
    sessions: dict[str, pd.DatetimeIndex],
    symbol: str,
    family: str,
) -> None:
    anchored = FAMILIES[family][1]
    rows = built.bars[symbol][family]
    platform = rows[~rows["is_partial_end"]]
    reference = pd.concat(
        [reference_canonical(daily[symbol], tf, anchored, sessions[symbol]) for tf in TIMEFRAMES[family]]
    )
    merged = _matched(platform, reference)
    exact = [*EXACT, "high_date", "low_date"] + (["bar_anchor_offset"] if anchored else [])
    problems = _differences(merged, exact, ["volume"])
    assert not problems, "\n".join(problems)
    assert len(merged) > 0


@pytest.mark.parametrize(("symbol", "family"), CASES)
def test_every_snapshot_equals_pandas_cumulative_within_its_period(
    built: Built,
    daily: dict[str, pd.DataFrame],
    sessions: dict[str, pd.DatetimeIndex],
    symbol: str,
    family: str,
) -> None:
    anchored = FAMILIES[family][1]
    reference = pd.concat(
        [reference_snapshots(daily[symbol], tf, anchored, sessions[symbol]) for tf in TIMEFRAMES[family]]
    )
    merged = _matched(built.bars[symbol][family], reference)
    exact = [*EXACT, "is_partial_end"] + (["bar_anchor_offset"] if anchored else [])
    problems = _differences(merged, exact, ["volume"])
    assert not problems, "\n".join(problems)
    if anchored:  # the anchored families keep every daily row of the slice in every timeframe
        assert len(merged) == len(daily[symbol]) * len(TIMEFRAMES[family])


# Periods named on purpose: (symbol, family, tf, first day, last day, canonical row's date, daily rows in it).
NAMED = [
    # ISO week 1 of 2020 starts on Monday 2019-12-30 and holds the New Year holiday.
    ("AAPL", "cal_iso", "1W_CAL_ISO", "2019-12-30", "2020-01-05", "2020-01-03", 4),
    ("BTCUSDT", "cal_iso", "1W_CAL_ISO", "2019-12-30", "2020-01-05", "2020-01-05", 7),
    # ISO week 1 of 2019 starts on Monday 2018-12-31.
    ("AAPL", "cal_anchor_iso", "1W_CAL_ANCHOR_ISO", "2018-12-31", "2019-01-06", "2019-01-04", 4),
    ("BTCUSDT", "cal_anchor_iso", "1W_CAL_ANCHOR_ISO", "2018-12-31", "2019-01-06", "2019-01-06", 7),
    # ISO week 53 of 2020 runs into 2021; XNYS closes it on Thursday 2020-12-31.
    ("AAPL", "cal_iso", "1W_CAL_ISO", "2020-12-28", "2021-01-03", "2020-12-31", 4),
    ("BTCUSDT", "cal_iso", "1W_CAL_ISO", "2020-12-28", "2021-01-03", "2021-01-03", 7),
    # The US week across the year boundary starts on Sunday 2019-12-29.
    ("AAPL", "cal_us", "1W_CAL_US", "2019-12-29", "2020-01-04", "2020-01-03", 4),
    ("BTCUSDT", "cal_us", "1W_CAL_US", "2019-12-29", "2020-01-04", "2020-01-04", 7),
    # Good Friday 2019-04-19: the week closes on Thursday.
    ("AAPL", "cal_iso", "1W_CAL_ISO", "2019-04-15", "2019-04-21", "2019-04-18", 4),
    ("AAPL", "cal_anchor_us", "1W_CAL_ANCHOR_US", "2019-04-14", "2019-04-20", "2019-04-18", 4),
    # Thanksgiving 2019-11-28 (the half day after it is a session).
    ("AAPL", "cal_us", "1W_CAL_US", "2019-11-24", "2019-11-30", "2019-11-29", 4),
    # December 2018 holds the 2018-12-05 day of mourning and Christmas; XNYS has no session on Dec 1-2,
    # so the month is full for AAPL (kept by cal) and partial-start for BTC (dropped by cal, kept by cal_anchor).
    ("AAPL", "cal_iso", "1M_CAL", "2018-12-01", "2018-12-31", "2018-12-31", 19),
    ("BTCUSDT", "cal_anchor_iso", "1M_CAL_ANCHOR", "2018-12-01", "2018-12-31", "2018-12-31", 29),
    # The year 2019 and the quarter holding New Year 2020, and the 2W window across the ISO year boundary.
    ("AAPL", "cal_us", "1Y_CAL", "2019-01-01", "2019-12-31", "2019-12-31", 252),
    ("BTCUSDT", "cal_anchor_us", "3M_CAL_ANCHOR", "2020-01-01", "2020-03-31", "2020-03-31", 91),
    ("AAPL", "cal_iso", "2W_CAL_ISO", "2019-12-30", "2020-01-12", "2020-01-10", 9),
]


@pytest.mark.parametrize(("symbol", "family", "tf", "first", "last", "closes_on", "days"), NAMED)
def test_named_periods_across_holidays_and_year_boundaries(
    built: Built,
    daily: dict[str, pd.DataFrame],
    sessions: dict[str, pd.DatetimeIndex],
    symbol: str,
    family: str,
    tf: str,
    first: str,
    last: str,
    closes_on: str,
    days: int,
) -> None:
    first_day, last_day, close_day = pd.Timestamp(first), pd.Timestamp(last), pd.Timestamp(closes_on)
    anchored = FAMILIES[family][1]
    # The reference agrees with the hand-written period (its windows are what the test says they are) ...
    reference = reference_canonical(daily[symbol], tf, anchored, sessions[symbol]).set_index("bar_start")
    expected = reference.loc[first_day]
    assert (expected["bar_end"], expected["trade_date"], expected["pos_in_bar"]) == (last_day, close_day, days)
    period_rows = daily[symbol][daily[symbol]["date"].between(first_day, last_day)]
    assert (expected["open"], expected["close"]) == (period_rows["open"].iloc[0], period_rows["close"].iloc[-1])
    # ... and the platform has exactly one canonical row for it, on that day, with the same values.
    rows = built.bars[symbol][family]
    in_period = rows[(rows["tf"] == tf) & (rows["bar_start"] == first_day)]
    assert list(in_period["trade_date"]) == list(period_rows["date"])
    canonical = in_period[~in_period["is_partial_end"]]
    assert len(canonical) == 1
    row = canonical.iloc[0]
    assert (row["trade_date"], row["bar_end"], row["pos_in_bar"]) == (close_day, last_day, days)
    assert (row["open"], row["high"], row["low"], row["close"]) == (
        expected["open"],
        expected["high"],
        expected["low"],
        expected["close"],
    )
    assert row["volume"] == pytest.approx(expected["volume"], rel=RELATIVE)
