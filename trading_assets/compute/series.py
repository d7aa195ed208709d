"""Rules of the series-metadata slice: what a valid dim_series row and a valid observation are."""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import date, timedelta

import polars as pl

from trading_assets.compute.validation import duplicate_problems
from trading_assets.errors import Problem

MODEL_COL_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL truncates longer identifiers

# How old the newest observation of a series may be before it counts as stale: the publication lag of
# each frequency (e.g. a monthly series is stamped on the 1st and published weeks after the month ends).
MAX_OBSERVATION_AGE = {
    "D": timedelta(days=7),
    "W": timedelta(days=21),
    "M": timedelta(days=75),
    "Q": timedelta(days=200),
    "A": timedelta(days=550),
}


def series_config_problems(frame: pl.DataFrame) -> list[Problem]:
    """Every reason a dim_series file cannot become the golden table, by file and line."""
    problems = []
    for row in frame.to_dicts():
        at = (row["source_file"], row["line"])
        model_col = row["model_col"]
        if not MODEL_COL_PATTERN.match(model_col):
            problems.append(
                Problem(*at, f"model_col {model_col!r} must be lower snake_case matching ^[a-z][a-z0-9_]*$")
            )
        elif len(model_col.encode()) > MAX_IDENTIFIER_BYTES:
            problems.append(Problem(*at, f"model_col {model_col!r} is longer than 63 bytes"))
        if not row["series_code"]:
            problems.append(Problem(*at, "series_code is empty"))
        if row["freq"] not in MAX_OBSERVATION_AGE:
            problems.append(Problem(*at, f"freq {row['freq']!r} is not one of {', '.join(MAX_OBSERVATION_AGE)}"))
    problems += duplicate_problems(frame, ["model_col"], "model_col")
    problems += duplicate_problems(frame.filter(pl.col("series_code") != ""), ["series_code"], "series_code")
    return problems


def observation_problems(frame: pl.DataFrame, known_series: Collection[str], before: date) -> list[Problem]:
    """Observations naming a series dim_series does not know, dated on or after `before`, or repeated."""
    problems = [
        Problem(row["source_file"], row["line"], f"unknown series {row['series_code']!r} (not in dim_series)")
        for row in frame.filter(~pl.col("series_code").is_in(list(known_series))).to_dicts()
    ]
    problems += [
        Problem(row["source_file"], row["line"], f"obs_date {row['obs_date']} is on or after {before}")
        for row in frame.filter(pl.col("obs_date") >= before).to_dicts()
    ]
    problems += duplicate_problems(frame, ["series_code", "obs_date"], "observation for this series and date")
    return problems


def stale_series(latest: pl.DataFrame, today: date) -> pl.DataFrame:
    """Series (columns series_code, freq, last_obs_date) whose newest observation is older than its frequency allows."""
    allowed = pl.col("freq").replace_strict(
        {freq: age.days for freq, age in MAX_OBSERVATION_AGE.items()}, return_dtype=pl.Int64
    )
    age_days = (pl.lit(today) - pl.col("last_obs_date")).dt.total_days()
    return (
        latest.with_columns(age_days=age_days, allowed_days=allowed)
        .filter(pl.col("last_obs_date").is_null() | (pl.col("age_days") > pl.col("allowed_days")))
        .sort("series_code")
    )
