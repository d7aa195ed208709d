"""Calendar arithmetic for bars: fixed calendar windows and trading sessions.

Windows never depend on where an asset's data starts: N-week windows count from the epoch week of
their scheme (ISO weeks start Monday 1970-01-05, US weeks Sunday 1970-01-04), N-month windows group
the months of a year from January (3M = calendar quarters), N-year windows start in years divisible by N.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache

import numpy as np
import polars as pl

EVERY_DAY = "24/7"
WEEK_EPOCH = {"ISO": date(1970, 1, 5), "US": date(1970, 1, 4)}
_LABEL = re.compile(r"^(\d+)(D|W|M|Y)(?:_CAL(_ANCHOR)?(?:_(ISO|US))?)?$")

# Exchanges of the trading tables: their trading calendar (exchange_calendars code) and time zone. NSE has no
# calendar of its own there; BSE's (XBOM) keeps the same holidays and hours.
EXCHANGE_CALENDARS = {"US": "XNYS", "NSE": "XBOM"}
EXCHANGE_ZONES = {"US": "America/New_York", "NSE": "Asia/Kolkata"}


@cache
def exchange_calendar(exchange: str):
    """The exchange_calendars calendar of `exchange` (a key of EXCHANGE_CALENDARS), built once."""
    import exchange_calendars

    return exchange_calendars.get_calendar(EXCHANGE_CALENDARS[exchange])


def session_open(exchange: str, now: datetime) -> bool:
    """Whether `exchange` is in session at `now` (aware)."""
    minute = now.astimezone(UTC).replace(second=0, microsecond=0)
    return bool(exchange_calendar(exchange).is_open_on_minute(minute))


def exchange_date(ts: pl.Expr, exchange: pl.Expr) -> pl.Expr:
    """The date of instant `ts` in the time zone of `exchange` (a key of EXCHANGE_ZONES)."""
    expr = pl.lit(None, pl.Date)
    for name, zone in EXCHANGE_ZONES.items():
        expr = pl.when(exchange == name).then(ts.dt.convert_time_zone(zone).dt.date()).otherwise(expr)
    return expr


@dataclass(frozen=True)
class Timeframe:
    """A bar timeframe parsed from its label: `7D`, `1W_CAL_ISO`, `3M_CAL`, `1M_CAL_ANCHOR`, `2W_CAL_ANCHOR_US`."""

    label: str
    unit: str  # D (row blocks), W, M or Y (calendar windows)
    n: int
    anchored: bool = False
    week_start: str | None = None  # ISO or US, for weeks only

    @property
    def nominal_days(self) -> int:
        """The timeframe's length in days as EMAs count it (months of 30 days, years of 365)."""
        return self.n * {"D": 1, "W": 7, "M": 30, "Y": 365}[self.unit]

    @classmethod
    def parse(cls, label: str) -> Timeframe:
        match = _LABEL.match(label)
        if not match or int(match.group(1)) < 1:
            raise ValueError(f"timeframe {label!r} is not like 7D, 1W_CAL_ISO, 3M_CAL or 1M_CAL_ANCHOR")
        n, unit, anchor, scheme = int(match.group(1)), match.group(2), bool(match.group(3)), match.group(4)
        calendar = "_CAL" in label
        if unit == "D" and calendar:
            raise ValueError(f"timeframe {label!r}: day timeframes are row blocks, not calendar windows")
        if unit != "D" and not calendar:
            raise ValueError(f"timeframe {label!r}: W, M and Y timeframes are calendar windows (_CAL...)")
        if (unit == "W") != (scheme is not None):
            raise ValueError(f"timeframe {label!r}: weeks need _ISO or _US, months and years take neither")
        return cls(label=label, unit=unit, n=n, anchored=anchor, week_start=scheme)


def window_start_end(day: pl.Expr, timeframe: Timeframe) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(window index, first day, last day) of the calendar window holding each date."""
    n = timeframe.n
    if timeframe.unit == "W":
        epoch = WEEK_EPOCH[timeframe.week_start or "ISO"]
        days = (day - pl.lit(epoch)).dt.total_days()
        index = days.floordiv(7 * n)
        start = pl.lit(epoch) + pl.duration(days=index * 7 * n)
        return index, start, start + pl.duration(days=7 * n - 1)
    if timeframe.unit == "M":
        per_year = -(-12 // n)
        slot = (day.dt.month() - 1).floordiv(n)
        index = day.dt.year().cast(pl.Int64) * per_year + slot
        start = pl.date(day.dt.year(), slot * n + 1, 1)
        last_month_start = pl.date(day.dt.year(), pl.min_horizontal(slot * n + n, 12), 1)
        return index, start, last_month_start.dt.month_end()
    if timeframe.unit == "Y":
        index = day.dt.year().cast(pl.Int64).floordiv(n)
        return index, pl.date(index * n, 1, 1), pl.date(index * n + n - 1, 12, 31)
    raise ValueError(f"timeframe {timeframe.label!r} has no calendar window")


@cache
def _sessions(calendar: str, start: date, end: date) -> tuple[date, ...]:
    if calendar == EVERY_DAY:
        return tuple(pl.date_range(start, end, "1d", eager=True).to_list())
    import exchange_calendars

    exchange = exchange_calendars.get_calendar(calendar, start=start.isoformat(), end=end.isoformat())
    return tuple(d.date() for d in exchange.sessions)


def last_session_before(calendar: str, day: date) -> date | None:
    """The last session of `calendar` before `day` (none within the month before it: none)."""
    sessions = _sessions(calendar, day - timedelta(days=31), day - timedelta(days=1))
    return sessions[-1] if sessions else None


def session_table(calendars: list[str], start: date, end: date) -> pl.DataFrame:
    """Expected sessions: calendar, session_date and its 1-based ordinal within the calendar.

    `start` must be on or before the first day of every window the table is used for: session counts
    are differences of ordinals, and days before the table count as no sessions.
    """
    frames = [
        pl.DataFrame({"session_date": list(_sessions(c, start, end))}, schema={"session_date": pl.Date}).with_columns(
            calendar=pl.lit(c), session_ordinal=pl.int_range(1, pl.len() + 1, dtype=pl.Int64)
        )
        for c in sorted(set(calendars))
    ]
    if not frames:
        return pl.DataFrame(schema={"calendar": pl.String, "session_date": pl.Date, "session_ordinal": pl.Int64})
    return pl.concat(frames).select("calendar", "session_date", "session_ordinal")


def sessions_up_to(frame: pl.DataFrame, sessions: pl.DataFrame, **days: pl.Expr) -> pl.DataFrame:
    """Add a column per keyword: how many sessions of the row's calendar fall on or before the day its
    expression gives (0 if none). `sessions` as session_table makes it: each calendar's sessions in date order."""
    values = frame.select(calendar="calendar", **{name: day.cast(pl.Int32) for name, day in days.items()})
    missing = {name: values[name].is_null().to_numpy() for name in days}
    wanted = {name: values[name].fill_null(0).to_numpy() for name in days}
    counts = {name: np.zeros(frame.height, np.int64) for name in days}
    calendars = values["calendar"].unique()
    # A binary search per row in its calendar's session dates: the count is the last ordinal at or before it.
    for calendar in calendars:
        rows = slice(None) if len(calendars) == 1 else (values["calendar"] == calendar).to_numpy()
        dates = sessions.filter(pl.col("calendar") == calendar)["session_date"].cast(pl.Int32).to_numpy()
        for name in days:
            counts[name][rows] = np.searchsorted(dates, wanted[name][rows], side="right")
    for name in days:
        counts[name][missing[name]] = 0
    return frame.with_columns(pl.Series(name, count) for name, count in counts.items())
