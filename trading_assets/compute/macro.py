"""Macro signals from FRED series, as known on each date (no look-ahead).

A daily Treasury yield for date D is known at the end of D. A monthly value is stamped by FRED with the first
day of its reference month M but published in the month after: it is taken as known from day RELEASE_DAY of
M + 1. The days are the latest regular release days of recent decades (CPI: the 10th-15th, a few later; the
Employment Situation: the first Friday, at the latest the 10th). Releases delayed further (the 2013 shutdown)
would still leak a few days early; exact dates need the series' vintages (ALFRED), which the inputs lack. Only
the current vintage is held, so a revised value is seen as if first published that way.
"""

from datetime import date

import polars as pl

from trading_assets.compute.validation import rows_in_window

DAILY_SERIES = {"DGS10": "dgs10", "DGS2": "dgs2", "DGS3MO": "dgs3mo"}
MONTHLY_SERIES = {"CPIAUCSL": "cpi", "UNRATE": "unrate"}
RELEASE_DAY = {"CPIAUCSL": 20, "UNRATE": 10}
# Months of monthly history a date's signals need: CPI twelve months back, known one month late.
MONTHS_BEFORE = 14

OBSERVATION_SCHEMA = {"series_code": pl.String, "obs_date": pl.Date, "value": pl.Float64}
SIGNAL_SCHEMA = {
    "trade_date": pl.Date,
    "dgs10": pl.Float64,
    "dgs2": pl.Float64,
    "dgs3mo": pl.Float64,
    "slope_10y_2y": pl.Float64,
    "slope_10y_3m": pl.Float64,
    "cpi": pl.Float64,
    "cpi_month": pl.Date,
    "cpi_yoy_pct": pl.Float64,
    "unrate": pl.Float64,
    "unrate_month": pl.Date,
    "unrate_change": pl.Float64,
}


def known_from(month: pl.Expr, series_code: str) -> pl.Expr:
    """The first date on which the value of reference `month` (its first day) is known."""
    return month.dt.offset_by("1mo") + pl.duration(days=RELEASE_DAY[series_code] - 1)


def _monthly(observations: pl.DataFrame, series_code: str, months_back: int) -> pl.DataFrame:
    """Per reference month of `series_code`: when it is known, its value and the value `months_back` months
    earlier (by date: a missing month gives a null, never the row before it)."""
    values = observations.filter(pl.col("series_code") == series_code).select(
        month=pl.col("obs_date").dt.month_start(), value="value"
    )
    earlier = values.select(month=pl.col("month").dt.offset_by(f"{months_back}mo"), earlier="value")
    return (
        values.join(earlier, on="month", how="left")
        .with_columns(known_from=known_from(pl.col("month"), series_code))
        .sort("known_from")
    )


def macro_signals(observations: pl.DataFrame, first: date | None, end: date) -> pl.DataFrame:
    """Signals (SIGNAL_SCHEMA) for each date in [first, end) with a 10-year yield, from `observations`
    (OBSERVATION_SCHEMA) of the daily and monthly series, which reach MONTHS_BEFORE months before `first`."""
    daily = (
        observations.filter(pl.col("series_code").is_in(list(DAILY_SERIES)))
        .pivot(on="series_code", index="obs_date", values="value")
        .rename({"obs_date": "trade_date"})
    )
    for code in DAILY_SERIES:
        if code not in daily.columns:
            daily = daily.with_columns(pl.lit(None, pl.Float64).alias(code))
    daily = rows_in_window(daily.rename(DAILY_SERIES).filter(pl.col("dgs10").is_not_null()), "trade_date", first, end)
    signals = daily.sort("trade_date").with_columns(
        slope_10y_2y=pl.col("dgs10") - pl.col("dgs2"), slope_10y_3m=pl.col("dgs10") - pl.col("dgs3mo")
    )
    cpi = _monthly(observations, "CPIAUCSL", 12).select(
        "known_from", cpi="value", cpi_month="month", cpi_yoy_pct=(pl.col("value") / pl.col("earlier") - 1) * 100
    )
    unrate = _monthly(observations, "UNRATE", 1).select(
        "known_from", unrate="value", unrate_month="month", unrate_change=pl.col("value") - pl.col("earlier")
    )
    for monthly in (cpi, unrate):
        signals = signals.join_asof(monthly, left_on="trade_date", right_on="known_from").drop("known_from")
    return signals.select([pl.col(name).cast(dtype) for name, dtype in SIGNAL_SCHEMA.items()])
