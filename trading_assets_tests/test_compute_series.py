"""Pure rules of the series slice, by hand-worked cases."""

from datetime import date

import polars as pl

from trading_assets.compute.series import stale_series
from trading_assets.compute.validation import rows_in_window


def test_window_is_half_open_and_open_at_the_start_for_the_first_partition() -> None:
    frame = pl.DataFrame({"obs_date": [date(1989, 12, 31), date(1990, 1, 1), date(1990, 1, 31), date(1990, 2, 1)]})
    assert rows_in_window(frame, "obs_date", date(1990, 1, 1), date(1990, 2, 1))["obs_date"].to_list() == [
        date(1990, 1, 1),
        date(1990, 1, 31),
    ]
    assert rows_in_window(frame, "obs_date", None, date(1990, 2, 1)).height == 3


def test_staleness_depends_on_frequency() -> None:
    latest = pl.DataFrame(
        {
            "series_code": ["DAILY_OK", "DAILY_OLD", "MONTHLY_OK", "MONTHLY_OLD", "EMPTY"],
            "freq": ["D", "D", "M", "M", "A"],
            "last_obs_date": [date(2026, 11, 16), date(2026, 11, 15), date(2026, 9, 9), date(2026, 9, 8), None],
        }
    )
    stale = stale_series(latest, date(2026, 11, 23))
    assert stale["series_code"].to_list() == ["DAILY_OLD", "EMPTY", "MONTHLY_OLD"]
    assert stale.filter(pl.col("series_code") == "DAILY_OLD")["age_days"].item() == 8
