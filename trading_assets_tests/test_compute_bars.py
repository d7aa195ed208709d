"""Bar windowing by the SEMANTICS §D cases (numbers in the test names) and DESIGN §6's pinned rules."""

from datetime import date, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading_assets.compute.bars import calendar_bars, multi_tf_bars, validate_daily, with_bar_times
from trading_assets.compute.calendars import EVERY_DAY, Timeframe, session_table


def _daily(days: list[date], calendar: str = EVERY_DAY, asset_id: int = 1) -> pl.DataFrame:
    n = len(days)
    return pl.DataFrame(
        {
            "asset_id": [asset_id] * n,
            "trade_date": days,
            "open": [100.0 + i for i in range(n)],
            "high": [102.0 + i for i in range(n)],
            "low": [99.0 + i for i in range(n)],
            "close": [101.0 + i for i in range(n)],
            "volume": [10.0] * n,
            "calendar": [calendar] * n,
        }
    ).with_columns(row_index=pl.int_range(pl.len(), dtype=pl.Int64), first_trade_date=pl.col("trade_date").min())


def _span(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


SESSIONS = session_table([EVERY_DAY, "XNYS"], date(2018, 1, 1), date(2026, 12, 31))


def _canonical(bars: pl.DataFrame) -> list[date]:
    return bars.filter(~pl.col("is_partial_end"))["trade_date"].to_list()


def test_d6_multi_tf_blocks_of_seven_rows() -> None:
    days = _span(date(2024, 1, 1), date(2024, 1, 20))
    bars = multi_tf_bars(_daily(days), Timeframe.parse("7D"), SESSIONS)
    assert bars.height == 20
    assert bars["bar_seq"].unique().sort().to_list() == [1, 2, 3]
    assert _canonical(bars) == [days[6], days[13]]
    assert bars["count_days_remaining"][-1] == 1
    day3 = bars.row(2, named=True)
    assert (day3["open"], day3["high"], day3["close"], day3["volume"]) == (100.0, 104.0, 103.0, 30.0)


def test_d8_extreme_dates_keep_the_earliest_tie_and_move_on_a_strictly_higher_high() -> None:
    days = _span(date(2024, 1, 1), date(2024, 1, 7))
    daily = _daily(days).with_columns(
        high=pl.Series([102.0, 110.0, 105.0, 110.0, 112.0, 111.0, 112.0]),
        low=pl.Series([99.0, 95.0, 95.0, 98.0, 99.0, 94.0, 99.0]),
        open=pl.lit(100.0),
        close=pl.lit(101.0),
    )
    bars = multi_tf_bars(daily, Timeframe.parse("7D"), SESSIONS)
    jan = [date(2024, 1, d) for d in (1, 2, 2, 2, 5, 5, 5)]
    assert bars["high_date"].to_list() == jan  # the tie on 01-04 keeps 01-02; 112 on 01-05 moves it
    assert bars["low_date"].to_list() == [date(2024, 1, d) for d in (1, 2, 2, 2, 2, 6, 6)]
    assert bars["high"].to_list() == [102.0, 110.0, 110.0, 110.0, 112.0, 112.0, 112.0]


def test_d7_multi_tf_gap_spans_more_days() -> None:
    days = [*_span(date(2024, 1, 1), date(2024, 1, 5)), *_span(date(2024, 1, 7), date(2024, 1, 9))]
    bars = multi_tf_bars(_daily(days), Timeframe.parse("7D"), SESSIONS)
    first_bar = bars.filter(pl.col("bar_seq") == 1)
    assert first_bar["trade_date"].to_list() == days[:7]
    day8 = first_bar.row(-1, named=True)
    assert (day8["is_partial_end"], day8["count_missing_days"], day8["is_missing_days"]) == (False, 1, True)
    assert bars.filter(pl.col("bar_seq") == 2)["trade_date"].to_list() == [date(2024, 1, 9)]


def test_d9_iso_and_us_week_boundaries() -> None:
    days = _span(date(2024, 1, 3), date(2024, 1, 21))
    iso = calendar_bars(_daily(days), Timeframe.parse("1W_CAL_ISO"), SESSIONS)
    us = calendar_bars(_daily(days), Timeframe.parse("1W_CAL_US"), SESSIONS)
    assert iso["trade_date"].min() == date(2024, 1, 8) and us["trade_date"].min() == date(2024, 1, 7)
    first_iso = iso.filter(pl.col("bar_seq") == 1)
    assert (first_iso["bar_start"][0], first_iso["bar_end"][0]) == (date(2024, 1, 8), date(2024, 1, 14))
    first_us = us.filter(pl.col("bar_seq") == 1)
    assert (first_us["bar_start"][0], first_us["bar_end"][0]) == (date(2024, 1, 7), date(2024, 1, 13))
    # Sunday 2024-01-14 closes the ISO bar and opens a US bar.
    assert iso.filter(pl.col("trade_date") == date(2024, 1, 14))["is_partial_end"].item() is False
    sunday_us = us.filter(pl.col("trade_date") == date(2024, 1, 14)).row(0, named=True)
    assert (sunday_us["bar_seq"], sunday_us["pos_in_bar"]) == (2, 1)


def test_d10_week_53_and_year_crossing() -> None:
    days = _span(date(2020, 12, 1), date(2021, 1, 20))
    iso = calendar_bars(_daily(days), Timeframe.parse("1W_CAL_ISO"), SESSIONS)
    bar = iso.filter(pl.col("trade_date") == date(2021, 1, 1)).row(0, named=True)
    assert (bar["bar_start"], bar["bar_end"], bar["tf_days"]) == (date(2020, 12, 28), date(2021, 1, 3), 7)
    week = iso.filter(pl.col("bar_start") == date(2020, 12, 28))
    assert _canonical(week) == [date(2021, 1, 3)]
    us = calendar_bars(_daily(days), Timeframe.parse("1W_CAL_US"), SESSIONS)
    us_bar = us.filter(pl.col("trade_date") == date(2021, 1, 1)).row(0, named=True)
    assert (us_bar["bar_start"], us_bar["bar_end"]) == (date(2020, 12, 27), date(2021, 1, 2))


def test_d11_full_months_only_and_quarters_from_january() -> None:
    days = _span(date(2024, 1, 15), date(2024, 8, 31))
    monthly = calendar_bars(_daily(days), Timeframe.parse("1M_CAL"), SESSIONS)
    assert monthly["trade_date"].min() == date(2024, 2, 1)
    feb = monthly.filter(pl.col("bar_seq") == 1)
    assert (feb["tf_days"][0], _canonical(feb)) == (29, [date(2024, 2, 29)])
    quarterly = calendar_bars(_daily(days), Timeframe.parse("3M_CAL"), SESSIONS)
    # Quarters are Jan/Apr/Jul/Oct; the partial first quarter is dropped, so data starts 2024-04-01.
    assert quarterly["trade_date"].min() == date(2024, 4, 1)
    assert _canonical(quarterly) == [date(2024, 6, 30)]
    assert quarterly.filter(pl.col("bar_seq") == 2)["bar_start"][0] == date(2024, 7, 1)


def test_d12_interior_gap_keeps_a_canonical_row_flagged_missing() -> None:
    days = [d for d in _span(date(2024, 1, 8), date(2024, 1, 14)) if d != date(2024, 1, 10)]
    bars = calendar_bars(_daily(days), Timeframe.parse("1W_CAL_ISO"), SESSIONS)
    sunday = bars.row(-1, named=True)
    assert (sunday["trade_date"], sunday["is_partial_end"]) == (date(2024, 1, 14), False)
    assert (sunday["count_missing_days"], sunday["is_missing_days"], sunday["pos_in_bar"]) == (1, True, 6)


def test_d13_anchor_partial_start() -> None:
    days = _span(date(2024, 1, 15), date(2024, 2, 29))
    bars = calendar_bars(_daily(days), Timeframe.parse("1M_CAL_ANCHOR"), SESSIONS)
    january = bars.filter(pl.col("bar_seq") == 1)
    assert january["tf_days"][0] == 31 and january["is_partial_start"].all()
    assert january["count_days_remaining"].to_list()[:1] == [16] and _canonical(january) == [date(2024, 1, 31)]
    assert january["count_days_remaining"][-1] == 0 and january["count_missing_days"].max() == 0
    february = bars.filter(pl.col("bar_seq") == 2)
    assert not february["is_partial_start"].any() and february["bar_anchor_offset"][0] == 31


def test_d14_anchor_in_progress_window_has_no_canonical_row() -> None:
    days = _span(date(2024, 2, 1), date(2024, 3, 10))
    march = calendar_bars(_daily(days), Timeframe.parse("1M_CAL_ANCHOR"), SESSIONS).filter(pl.col("bar_seq") == 2)
    assert _canonical(march) == []
    assert (march["is_partial_end"][-1], march["count_days_remaining"][-1]) == (True, 21)


def test_d15_anchor_windows_are_global() -> None:
    a = calendar_bars(_daily(_span(date(2024, 1, 3), date(2024, 3, 1))), Timeframe.parse("2W_CAL_ANCHOR_ISO"), SESSIONS)
    b = calendar_bars(
        _daily(_span(date(2024, 1, 10), date(2024, 3, 1)), asset_id=2), Timeframe.parse("2W_CAL_ANCHOR_ISO"), SESSIONS
    )
    starts_a, starts_b = set(a["bar_start"].to_list()), set(b["bar_start"].to_list())
    assert starts_a & starts_b == starts_b - {b["bar_start"].min()} | ({b["bar_start"].min()} & starts_a)
    assert all((s - date(1970, 1, 5)).days % 14 == 0 for s in starts_a | starts_b)
    years = calendar_bars(_daily(_span(date(2021, 6, 1), date(2024, 2, 1))), Timeframe.parse("2Y_CAL_ANCHOR"), SESSIONS)
    assert sorted(set(years["bar_start"].to_list())) == [date(2020, 1, 1), date(2022, 1, 1), date(2024, 1, 1)]


def test_equity_week_with_a_friday_holiday_is_canonical_on_thursday() -> None:
    # Good Friday 2024-03-29: XNYS closed.
    days = [date(2024, 3, 25), date(2024, 3, 26), date(2024, 3, 27), date(2024, 3, 28), date(2024, 4, 1)]
    bars = calendar_bars(_daily(days, calendar="XNYS"), Timeframe.parse("1W_CAL_ISO"), SESSIONS)
    assert _canonical(bars) == [date(2024, 3, 28)]
    assert bars.filter(pl.col("trade_date") == date(2024, 3, 28))["count_missing_days"].item() == 0


def test_incremental_slice_from_a_window_start_equals_the_full_build() -> None:
    days = [d for d in _span(date(2023, 11, 20), date(2024, 4, 30)) if d.day % 9 != 0]
    full_daily = _daily(days)
    for label in ["1W_CAL_ISO", "1M_CAL", "3M_CAL", "1M_CAL_ANCHOR", "2W_CAL_ANCHOR_US"]:
        timeframe = Timeframe.parse(label)
        full = calendar_bars(full_daily, timeframe, SESSIONS)
        cut = {"1M": date(2024, 3, 1), "3M": date(2024, 4, 1)}.get(
            label[:2], date(2024, 2, 19 if "ISO" in label else 18)
        )
        tail = calendar_bars(full_daily.filter(pl.col("trade_date") >= cut), timeframe, SESSIONS)
        assert tail.equals(full.filter(pl.col("trade_date") >= cut)), label
    full = multi_tf_bars(full_daily, Timeframe.parse("7D"), SESSIONS)
    cut_row = 14 * 7
    tail = multi_tf_bars(full_daily.filter(pl.col("row_index") >= cut_row), Timeframe.parse("7D"), SESSIONS)
    assert tail.equals(full.filter(pl.col("trade_date") >= days[cut_row]))


def test_validate_daily_rejects_and_repairs() -> None:
    raw = pl.DataFrame(
        {
            "asset_id": [1] * 5,
            "trade_date": _span(date(2024, 1, 1), date(2024, 1, 5)),
            "open": [10.0, 10.0, float("nan"), -1.0, 10.0],
            "high": [15.0, 9.0, 11.0, 11.0, 12.0],
            "low": [9.0, 9.5, 9.0, 9.0, 9.0],
            "close": [12.0, 10.5, 10.0, 10.0, 11.0],
            "volume": [None, 5.0, 5.0, 5.0, -3.0],
        }
    )
    daily, rejects = validate_daily(raw)
    assert daily["trade_date"].to_list() == [date(2024, 1, 1), date(2024, 1, 2)]
    kept = daily.row(0, named=True)
    assert (kept["high"], kept["volume"], kept["repaired_high"]) == (15.0, None, False)  # §D 2/3: keep the 15
    crossed = daily.row(1, named=True)
    assert (crossed["high"], crossed["low"], crossed["repaired_high"], crossed["repaired_low"]) == (
        10.5,
        9.5,
        True,
        False,
    )
    assert dict(zip(rejects["trade_date"].to_list(), rejects["reject_reason"].to_list(), strict=True)) == {
        date(2024, 1, 2): "high below max(open, close); repaired",
        date(2024, 1, 3): "price missing, not finite or not positive",
        date(2024, 1, 4): "price missing, not finite or not positive",
        date(2024, 1, 5): "volume negative or not finite",
    }


@pytest.mark.parametrize("label", ["7W_CAL", "1W_CAL", "3D_CAL_ISO", "2M", "0D", "1M_CAL_ISO"])
def test_bad_timeframe_labels(label: str) -> None:
    with pytest.raises(ValueError, match=label):
        Timeframe.parse(label)


@settings(max_examples=60, deadline=None)
@given(
    kept=st.lists(st.booleans(), min_size=120, max_size=120),
    cut=st.integers(min_value=1, max_value=110),
    label=st.sampled_from(["5D", "7D", "1W_CAL_ISO", "2W_CAL_US", "1M_CAL", "3M_CAL_ANCHOR", "1M_CAL_ANCHOR"]),
)
def test_property_recompute_from_any_day_with_the_carry_equals_full_build(
    kept: list[bool], cut: int, label: str
) -> None:
    """Random gaps; recomputing from any day, continuing the last earlier snapshot row, gives the full build's rows."""
    days = [d for d, keep in zip(_span(date(2023, 12, 20), date(2024, 4, 17)), kept, strict=True) if keep]
    if len(days) < 2:
        return
    timeframe = Timeframe.parse(label)
    # Highs and lows that rise, fall and repeat, so the running extremes and their dates move and tie.
    i = pl.col("row_index")
    daily = _daily(days).with_columns(
        volume=pl.when(i % 5 == 2).then(None).otherwise("volume"),
        open=100.0 + i % 3,
        close=100.0 + i % 4,
        high=104.0 + (i * 7) % 5,
        low=96.0 - (i * 3) % 4,
    )
    build = multi_tf_bars if timeframe.unit == "D" else calendar_bars
    full = build(daily, timeframe, SESSIONS)
    start = days[min(cut, len(days) - 1)]
    carry = (
        full.filter(pl.col("trade_date") < start).group_by("asset_id", "tf").agg(pl.all().sort_by("trade_date").last())
    )
    tail = build(daily.filter(pl.col("trade_date") >= start), timeframe, SESSIONS, carry)
    assert tail.equals(full.filter(pl.col("trade_date") >= start))


def test_bar_times_are_local_midnights_per_asset_timezone_and_rows_keep_their_order() -> None:
    # New York crosses into daylight saving time on 2024-03-10; asset 3 has no timezone row (UTC).
    bars = pl.DataFrame(
        {
            "asset_id": [2, 1, 3, 1],
            "bar_start": [date(2024, 3, 9), date(2024, 3, 9), date(2024, 3, 9), date(2024, 3, 10)],
            "bar_end": [date(2024, 3, 9), date(2024, 3, 10), date(2024, 3, 9), date(2024, 3, 10)],
        }
    )
    zones = pl.DataFrame({"asset_id": [1, 2], "timezone": ["America/New_York", "Asia/Tokyo"]})
    timed = with_bar_times(bars, zones)
    assert timed["asset_id"].to_list() == [2, 1, 3, 1]
    assert [t.isoformat() for t in timed["time_open_bar"]] == [
        "2024-03-08T15:00:00+00:00", "2024-03-09T05:00:00+00:00", "2024-03-09T00:00:00+00:00",
        "2024-03-10T05:00:00+00:00",
    ]  # fmt: skip
    assert [t.isoformat() for t in timed["time_close_bar"]] == [
        "2024-03-09T15:00:00+00:00", "2024-03-11T04:00:00+00:00", "2024-03-10T00:00:00+00:00",
        "2024-03-11T04:00:00+00:00",
    ]  # fmt: skip


def test_bar_times_skip_days_without_a_bar_whose_local_midnight_does_not_exist() -> None:
    # Havana springs forward at midnight: 2024-03-10 00:00 does not exist there. No bar opens or closes at it,
    # so the bars on either side get their times.
    bars = pl.DataFrame({"asset_id": [1, 1], "bar_start": [date(2024, 3, 8), date(2024, 3, 12)]}).with_columns(
        bar_end=pl.col("bar_start")
    )
    timed = with_bar_times(bars, pl.DataFrame({"asset_id": [1], "timezone": ["America/Havana"]}))
    assert [t.isoformat() for t in timed["time_open_bar"]] == ["2024-03-08T05:00:00+00:00", "2024-03-12T04:00:00+00:00"]
    assert [t.isoformat() for t in timed["time_close_bar"]] == [
        "2024-03-09T05:00:00+00:00",
        "2024-03-13T04:00:00+00:00",
    ]
