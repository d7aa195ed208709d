"""Bars: validated daily bars and the snapshot rows of multi-day bars (DESIGN §6, SEMANTICS §A.2-A.3).

Every multi-day family derives from daily bars. A multi-day bar is stored as one snapshot row per
daily close while it forms: open is the bar's first open, high/low the running extremes, close the
day's close, volume the running sum. The row on which the bar completes is canonical
(`is_partial_end = false`); that is decided from the data and the calendar alone.

Inputs are daily rows of one or more assets (`asset_id, trade_date, open, high, low, close, volume`).
Callers that recompute only the end of a history pass the daily rows from any date on, the per-asset
context these functions document (row index, first trade date), and the `carry`: each asset's last
stored snapshot row before that date. A bar in progress continues from it, so a one-day refresh reads
one day, and a partial recompute yields exactly the rows of a full one.
"""

from __future__ import annotations

from datetime import date, timedelta

import numba
import numpy as np
import polars as pl

from trading_assets.compute.calendars import Timeframe, session_table, sessions_up_to, window_start_end
from trading_assets.compute.runs import group_starts
from trading_assets.compute.validation import DEFAULT_BOUNDS, PriceBounds, implausible

PRICES = ("open", "high", "low", "close")

SNAPSHOT_COLUMNS = [
    "asset_id",
    "tf",
    "bar_seq",
    "trade_date",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "tf_days",
    "pos_in_bar",
    "count_days",
    "count_days_remaining",
    "is_partial_start",
    "is_partial_end",
    "is_missing_days",
    "count_missing_days",
    "high_date",
    "low_date",
    "bar_start",
    "bar_end",
]


def value_rejects(prices: pl.DataFrame, bounds: PriceBounds = DEFAULT_BOUNDS) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split prices into (acceptable rows, rejected rows with `reject_reason`): rows that are not plausible
    (see validation.implausible), and negative or non-finite volume; a null volume stays."""
    bad_volume = pl.col("volume").is_not_null() & (~pl.col("volume").is_finite() | (pl.col("volume") < 0))
    reason = pl.coalesce(
        implausible(list(PRICES), bounds), pl.when(bad_volume).then(pl.lit("volume negative or not finite"))
    )
    checked = prices.with_columns(reject_reason=reason)
    rejected = checked.filter(pl.col("reject_reason").is_not_null())
    return checked.filter(pl.col("reject_reason").is_null()).drop("reject_reason"), rejected


def repair_high_low(prices: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(bars, originals of repaired rows with `reject_reason`): high/low repaired to max/min(open, close, high/low)."""
    # high >= max(open, close) >= min(open, close) >= low also rules out a crossed high/low.
    high_bad = pl.col("high") < pl.max_horizontal("open", "close")
    low_bad = pl.col("low") > pl.min_horizontal("open", "close")
    flagged = prices.with_columns(repaired_high=high_bad, repaired_low=low_bad)
    originals = flagged.filter(pl.col("repaired_high") | pl.col("repaired_low")).with_columns(
        reject_reason=pl.concat_str(
            pl.when(pl.col("repaired_high")).then(pl.lit("high below max(open, close); repaired")),
            pl.when(pl.col("repaired_low")).then(pl.lit("low above min(open, close); repaired")),
            separator="; ",
            ignore_nulls=True,
        )
    )
    bars = flagged.with_columns(
        high=pl.when("repaired_high").then(pl.max_horizontal("open", "close", "high")).otherwise("high"),
        low=pl.when("repaired_low").then(pl.min_horizontal("open", "close", "low")).otherwise("low"),
    )
    return bars, originals.drop("repaired_high", "repaired_low")


def validate_daily(prices: pl.DataFrame, bounds: PriceBounds = DEFAULT_BOUNDS) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split raw daily prices into (daily bars, rejects): refused rows and the originals of repaired ones."""
    acceptable, rejected = value_rejects(prices, bounds)
    bars, repaired = repair_high_low(acceptable)
    rejects = pl.concat([rejected, repaired], how="diagonal_relaxed").sort("asset_id", "trade_date")
    return bars.sort("asset_id", "trade_date"), rejects


# What a bar in progress carries from its last stored snapshot row into the rows after it.
CARRY_SCHEMA = {
    "asset_id": pl.Int64,
    "tf": pl.String,
    "bar_seq": pl.Int64,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "volume": pl.Float64,
    "pos_in_bar": pl.Int64,
    "high_date": pl.Date,
    "low_date": pl.Date,
    "bar_start": pl.Date,
}


def _with_carry(frame: pl.DataFrame, carry: pl.DataFrame | None, timeframe: Timeframe) -> pl.DataFrame:
    """Join each row to the carried state of its bar (`carry_*` columns; null where the bar starts here)."""
    state = pl.DataFrame(schema=CARRY_SCHEMA) if carry is None else carry.select(list(CARRY_SCHEMA))
    state = state.filter(pl.col("tf") == timeframe.label).drop("tf").cast({"asset_id": pl.Int64, "bar_seq": pl.Int64})
    renamed = state.rename({c: f"carry_{c}" for c in CARRY_SCHEMA if c not in ("asset_id", "tf", "bar_seq")})
    return frame.join(renamed, on=["asset_id", "bar_seq"], how="left", maintain_order="left")


# A day that is not there (dates travel to the kernel as days since 1970).
_NO_DAY = np.iinfo(np.int32).min


@numba.njit(cache=True, nogil=True)
def _snapshot_values(
    group_starts, days, opens, highs, lows, volumes, carry_open, carry_high, carry_low, carry_volume, carry_position,
    carry_high_day, carry_low_day,
):  # pragma: no cover (compiled)  # fmt: skip
    """Per row, its bar's values so far, continuing the group's carry (NaN / _NO_DAY: none): open, high, low,
    volume (NaN while no volume was seen), position in the bar, and the first days of the high and of the low
    (ties keep the earlier day). Volumes add up in the order a full build adds them (a carried sum enters with
    the bar's first new row), so a partial recompute equals a full one exactly."""
    rows = days.size
    open_out, high_out, low_out = np.empty(rows), np.empty(rows), np.empty(rows)
    volume_out, position = np.empty(rows), np.empty(rows, np.int64)
    high_day, low_day = np.empty(rows, np.int32), np.empty(rows, np.int32)
    for g in range(group_starts.size - 1):
        first = group_starts[g]
        opening = opens[first] if np.isnan(carry_open[g]) else carry_open[g]
        top, top_day, bottom, bottom_day = carry_high[g], carry_high_day[g], carry_low[g], carry_low_day[g]
        carried = not np.isnan(carry_volume[g])
        seen, total = carried, 0.0
        for i in range(first, group_starts[g + 1]):
            if np.isnan(top) or highs[i] > top:
                top, top_day = highs[i], days[i]
            if np.isnan(bottom) or lows[i] < bottom:
                bottom, bottom_day = lows[i], days[i]
            volume = 0.0 if np.isnan(volumes[i]) else volumes[i]
            seen = seen or not np.isnan(volumes[i])
            if i == first:
                total = carry_volume[g] + volume if carried else volume
            else:
                total += volume
            open_out[i], high_out[i], low_out[i] = opening, top, bottom
            volume_out[i] = total if seen else np.nan
            position[i] = i - first + 1 + carry_position[g]
            high_day[i], low_day[i] = top_day, bottom_day
    return open_out, high_out, low_out, volume_out, position, high_day, low_day


def _with_running(frame: pl.DataFrame, group: list[str]) -> pl.DataFrame:
    """The snapshot values of each row's bar as of that row (open, high, low, volume, pos_in_bar, high_date,
    low_date), continuing the carry; rows sorted by date within `group`, each group's rows together."""
    starts = group_starts(frame.select(group))
    firsts = frame[starts[:-1]]

    def floats(source: pl.DataFrame, column: str) -> np.ndarray:
        return source[column].cast(pl.Float64).fill_null(np.nan).to_numpy()

    def days(source: pl.DataFrame, column: str) -> np.ndarray:
        return source[column].cast(pl.Int32).fill_null(_NO_DAY).to_numpy()

    values = _snapshot_values(
        starts, days(frame, "trade_date"), *(floats(frame, c) for c in ("open", "high", "low", "volume")),
        *(floats(firsts, f"carry_{c}") for c in ("open", "high", "low", "volume")),
        firsts["carry_pos_in_bar"].fill_null(0).cast(pl.Int64).to_numpy(),
        days(firsts, "carry_high_date"), days(firsts, "carry_low_date"),
    )  # fmt: skip
    opens, highs, lows, volumes, position, high_day, low_day = values
    return frame.with_columns(
        pl.Series("open", opens),
        pl.Series("high", highs),
        pl.Series("low", lows),
        pl.Series("volume", volumes).fill_nan(None),
        pl.Series("pos_in_bar", position),
        *(pl.Series(name, day).replace(_NO_DAY, None).cast(pl.Date) for name, day in (
            ("high_date", high_day), ("low_date", low_day)
        )),
    )  # fmt: skip


def multi_tf_bars(
    daily: pl.DataFrame, timeframe: Timeframe, sessions: pl.DataFrame, carry: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Non-overlapping blocks of `n` available daily rows from each asset's first row.

    `daily` needs `row_index` (0-based position of the row in the asset's whole daily history) and
    `calendar`; where it starts inside a block, `carry` holds that block's last earlier row (with its
    `bar_start`, the block's first date).
    """
    n = timeframe.n
    group = ["asset_id", "bar_seq"]
    rows = _with_carry(
        daily.sort("asset_id", "trade_date").with_columns(bar_seq=pl.col("row_index") // n + 1), carry, timeframe
    )
    rows = _with_running(rows, group).with_columns(
        bar_start=pl.coalesce("carry_bar_start", pl.col("trade_date").first().over(group))
    )
    rows = sessions_up_to(rows, sessions, sessions_to_date=pl.col("trade_date"), first_sessions=pl.col("bar_start"))
    snapshots = rows.with_columns(
        count_missing_days=(pl.col("sessions_to_date") - pl.col("first_sessions") + 1 - pl.col("pos_in_bar")).clip(
            lower_bound=0
        ),
        is_partial_end=pl.col("pos_in_bar") < n,
    )
    return snapshots.with_columns(
        tf=pl.lit(timeframe.label),
        tf_days=pl.lit(n, dtype=pl.Int64),
        count_days=pl.col("pos_in_bar"),
        count_days_remaining=n - pl.col("pos_in_bar"),
        is_partial_start=pl.lit(False),
        is_missing_days=pl.col("count_missing_days") > 0,
        bar_end=pl.col("bar_start") + pl.duration(days=n - 1),
    ).select(SNAPSHOT_COLUMNS)


def calendar_bars(
    daily: pl.DataFrame, timeframe: Timeframe, sessions: pl.DataFrame, carry: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Snapshot rows of fixed calendar windows (weeks, months, years).

    `daily` needs `first_trade_date` (the asset's first daily row ever) and `calendar`; where it starts
    inside a window, `carry` holds that window's last earlier row. Anchored timeframes keep the asset's
    partial first window and add `bar_anchor_offset`; the others keep full windows only. A row is
    canonical on the window's last expected session. bar_seq counts windows from the first kept one.
    """
    index, start, end = window_start_end(pl.col("trade_date"), timeframe)
    first_index, first_start, _ = window_start_end(pl.col("first_trade_date"), timeframe)
    frame = daily.sort("asset_id", "trade_date").with_columns(
        window=index,
        bar_start=start,
        bar_end=end,
        first_window=first_index,
        first_window_start=first_start,
    )
    day = pl.duration(days=1)
    frame = sessions_up_to(
        frame,
        sessions,
        sessions_to_date=pl.col("trade_date"),
        sessions_before_date=pl.col("trade_date") - day,
        sessions_to_end=pl.col("bar_end"),
        sessions_before_window=pl.col("bar_start") - day,
        sessions_before_first=pl.col("first_trade_date") - day,
        sessions_before_first_window=pl.col("first_window_start") - day,
    )

    # The first window starts partially when an expected session of it precedes the asset's first row;
    # that depends on first_trade_date only, so any slice of the history agrees on it.
    first_partial = pl.col("sessions_before_first") > pl.col("sessions_before_first_window")
    first_kept = pl.col("first_window") + (first_partial & (not timeframe.anchored)).cast(pl.Int64)
    frame = frame.with_columns(
        is_partial_start=(pl.col("window") == pl.col("first_window")) & first_partial,
        bar_seq=pl.col("window") - first_kept + 1,
    ).filter(pl.col("bar_seq") >= 1)

    group = ["asset_id", "window"]
    sessions_before_start = (
        pl.when("is_partial_start").then("sessions_before_first").otherwise("sessions_before_window")
    )
    is_session = pl.col("sessions_to_date") > pl.col("sessions_before_date")
    frame = (
        _with_running(_with_carry(frame, carry, timeframe), group)
        .with_columns(
            tf=pl.lit(timeframe.label),
            tf_days=(pl.col("bar_end") - pl.col("bar_start")).dt.total_days() + 1,
            count_days=pl.col("pos_in_bar"),
            count_days_remaining=(pl.col("sessions_to_end") - pl.col("sessions_to_date")).clip(lower_bound=0),
            count_missing_days=(pl.col("sessions_to_date") - sessions_before_start - pl.col("pos_in_bar")).clip(
                lower_bound=0
            ),
            is_partial_end=~(is_session & (pl.col("sessions_to_date") == pl.col("sessions_to_end"))),
        )
        .with_columns(is_missing_days=pl.col("count_missing_days") > 0)
    )
    columns = list(SNAPSHOT_COLUMNS)
    if timeframe.anchored:
        frame = frame.with_columns(
            bar_anchor_offset=(pl.col("bar_start") - pl.col("first_window_start")).dt.total_days()
        )
        columns.append("bar_anchor_offset")
    return frame.select(columns)


def daily_bars(daily: pl.DataFrame, context: pl.DataFrame, sessions: pl.DataFrame) -> pl.DataFrame:
    """Daily bars of validated prices (validate_daily) that start, per asset, after the stored rows of
    `context` (asset_id, calendar, rows_before, previous_trade_date).

    bar_seq is the row's 1-based position in the asset's whole daily history; count_missing_days the
    sessions of the asset's calendar (`sessions`, see session_table) between the previous row and this one.
    """
    bars = (
        daily.join(context.select("asset_id", "calendar", "rows_before", "previous_trade_date"), on="asset_id")
        .sort("asset_id", "trade_date")
        .with_columns(
            bar_seq=pl.col("rows_before").fill_null(0) + pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("asset_id"),
            bar_start=pl.col("trade_date"),
            bar_end=pl.col("trade_date"),
            _previous=pl.col("trade_date").shift(1).over("asset_id"),
        )
        .with_columns(
            _previous=pl.coalesce("_previous", "previous_trade_date", "trade_date"),
            _day_before=pl.col("trade_date") - pl.duration(days=1),
        )
    )
    bars = sessions_up_to(
        bars, sessions, _sessions_to_previous=pl.col("_previous"), _sessions_before=pl.col("_day_before")
    )
    missing = (pl.col("_sessions_before") - pl.col("_sessions_to_previous")).clip(lower_bound=0).cast(pl.Int32)
    bars = bars.with_columns(count_missing_days=missing).with_columns(is_missing_days=pl.col("count_missing_days") > 0)
    return bars.drop(
        "rows_before",
        "previous_trade_date",
        "calendar",
        "_previous",
        "_day_before",
        "_sessions_to_previous",
        "_sessions_before",
    )


def daily_bars_of_history(
    prices: pl.DataFrame, assets: pl.DataFrame, bounds: PriceBounds = DEFAULT_BOUNDS
) -> pl.DataFrame:
    """The daily bars the 1d build makes of each asset's whole price history (`prices`: asset_id, trade_date,
    OHLCV; `assets`: asset_id, calendar, timezone), for reads that recompute bars instead of reading the
    stored ones: as known at a past time, or on adjusted prices."""
    daily, _ = validate_daily(prices, bounds)
    context = assets.select(
        "asset_id", "calendar", rows_before=pl.lit(0, pl.Int64), previous_trade_date=pl.lit(None, pl.Date)
    )
    if daily.is_empty():
        sessions = session_table([], date.min, date.min)
    else:
        calendars = context.join(daily.select("asset_id").unique(), on="asset_id")["calendar"].unique().to_list()
        sessions = session_table(calendars, daily["trade_date"].min() - timedelta(days=1), daily["trade_date"].max())
    return with_bar_times(daily_bars(daily, context, sessions), assets)


def with_bar_times(frame: pl.DataFrame, timezones: pl.DataFrame) -> pl.DataFrame:
    """Add time_open_bar / time_close_bar: local midnight of bar_start and of the day after bar_end, in UTC.

    `timezones` maps asset_id to its IANA timezone (none: UTC). Rows keep their order.
    """
    zone_of = dict(timezones.select("asset_id", "timezone").iter_rows())
    zones = frame["asset_id"].replace_strict(zone_of, default="UTC", return_dtype=pl.String).fill_null("UTC")
    opens = frame["bar_start"].cast(pl.Int32).to_numpy()
    closes = frame["bar_end"].cast(pl.Int32).to_numpy() + 1
    open_us, close_us = np.zeros(frame.height, np.int64), np.zeros(frame.height, np.int64)
    distinct = zones.unique()
    # Each zone's local midnights are computed once per distinct day of its rows (only those: a day without a
    # bar whose midnight does not exist must not fail), then looked up by day.
    for zone in distinct:
        rows = slice(None) if len(distinct) == 1 else (zones == zone).to_numpy()
        zone_opens, zone_closes = opens[rows], closes[rows]
        first = int(min(zone_opens.min(), zone_closes.min()))
        present = np.zeros(int(max(zone_opens.max(), zone_closes.max())) - first + 1, bool)
        present[zone_opens - first] = present[zone_closes - first] = True
        days = np.flatnonzero(present) + first
        midnights = np.zeros(present.size, np.int64)
        midnights[days - first] = (
            pl.Series(days, dtype=pl.Int32)
            .cast(pl.Date)
            .cast(pl.Datetime("us"))
            .dt.replace_time_zone(zone)
            .dt.convert_time_zone("UTC")
            .to_physical()
            .to_numpy()
        )
        open_us[rows] = midnights[zone_opens - first]
        close_us[rows] = midnights[zone_closes - first]
    return frame.with_columns(
        pl.Series("time_open_bar", open_us).cast(pl.Datetime("us", "UTC")),
        pl.Series("time_close_bar", close_us).cast(pl.Datetime("us", "UTC")),
    )


def invariant_violations(bars: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The rows breaking what must always hold, per invariant: OHLC order, and one canonical row per bar."""
    ohlc_ok = (
        (pl.col("high") >= pl.max_horizontal("open", "close"))
        & (pl.col("low") <= pl.min_horizontal("open", "close"))
        & (pl.col("low") > 0)
    )
    key = [c for c in ("asset_id", "tf", "bar_seq", "bar_anchor_offset") if c in bars.columns]
    shown = [*key, *(c for c in ("trade_date", *PRICES, "is_partial_end") if c in bars.columns and c not in key)]
    canonical = bars.filter(~pl.col("is_partial_end")) if "is_partial_end" in bars.columns else bars
    duplicated = canonical.filter(pl.len().over(key) > 1) if key else canonical.clear()
    return {
        "ohlc_consistent": bars.filter(~ohlc_ok).select(shown),
        "one_canonical_row_per_bar": duplicated.select(shown),
    }


def outlier_days(daily: pl.DataFrame, jump: float = 0.25, wick: float = 2.0) -> pl.DataFrame:
    """Daily bars that look like bad prints: a wick far outside the body, or a jump that reverses next day."""
    body_high = pl.max_horizontal("open", "close")
    body_low = pl.min_horizontal("open", "close")
    move = (pl.col("close") / pl.col("close").shift(1)).log().over("asset_id", order_by="trade_date")
    back = (pl.col("close").shift(-1) / pl.col("close")).log().over("asset_id", order_by="trade_date")
    reverting = (move.abs() > jump) & (back.abs() > jump) & (move.sign() != back.sign())
    wick_spike = (pl.col("high") > wick * body_high) | (pl.col("low") < body_low / wick)
    return daily.filter(reverting | wick_spike).select("asset_id", "trade_date", "open", "high", "low", "close")
