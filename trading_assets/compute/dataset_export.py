"""A research dataset in the Stage 1 client's own formats: its dataset CSV layout (`Date,Time,Open,High,Low,
Close,<indicators>,TargetClose`, as in its exports) and the rows of its QuestDB `indicator_bars` measurement."""

from __future__ import annotations

import polars as pl

# The platform computes no prediction target: the client's TargetClose column is there, empty.
TARGET = "TargetClose"


def client_csv_frame(measurements: pl.DataFrame, indicators: list[str]) -> pl.DataFrame:
    """`measurements` (ts UTC, open, high, low, close and the `indicators` columns) in the client's CSV layout:
    Date YYYY-MM-DD and Time HHMMSS of the bar's UTC start, indicator columns upper-cased without `_`."""
    return measurements.sort("ts").select(
        Date=pl.col("ts").dt.strftime("%Y-%m-%d"),
        Time=pl.col("ts").dt.strftime("%H%M%S"),
        Open="open",
        High="high",
        Low="low",
        Close="close",
        **{name.upper().replace("_", ""): name for name in indicators},
        **{TARGET: pl.lit(None, pl.Float64)},
    )


def indicator_bar_rows(measurements: pl.DataFrame, indicators: list[str]) -> pl.DataFrame:
    """The fields of each `indicator_bars` line as the client writes them: date_i, time_i and timestamp_unix of
    the bar start, the prices and the indicators; `ns` its designated timestamp in nanoseconds."""
    return measurements.sort("ts").select(
        date_i=pl.col("ts").dt.strftime("%Y%m%d").cast(pl.Int64),
        time_i=pl.col("ts").dt.strftime("%H%M%S").cast(pl.Int64),
        timestamp_unix=pl.col("ts").dt.epoch("s"),
        open="open",
        high="high",
        low="low",
        close="close",
        **{name: name for name in indicators},
        ns=pl.col("ts").dt.epoch("ns"),
    )
