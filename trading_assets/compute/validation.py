"""Row rules shared by every input: repeated keys, date windows."""

from __future__ import annotations

from datetime import date

import polars as pl

from trading_assets.errors import Problem


def duplicate_problems(frame: pl.DataFrame, key: list[str], label: str) -> list[Problem]:
    """A problem for every row (by `source_file`, `line`) repeating the key of an earlier row."""
    repeated = frame.filter(pl.len().over(key) > 1)
    first_line = repeated.group_by(key).agg(pl.col("line").min().alias("first_line"))
    return [
        Problem(row["source_file"], row["line"], f"duplicate {label} (first seen on line {row['first_line']})")
        for row in repeated.join(first_line, on=key).filter(pl.col("line") != pl.col("first_line")).to_dicts()
    ]


def rows_in_window(frame: pl.DataFrame, column: str, start: date | None, end: date) -> pl.DataFrame:
    """Rows with `start <= column < end`; no start means everything before `end`."""
    condition = pl.col(column) < end
    if start is not None:
        condition &= pl.col(column) >= start
    return frame.filter(condition)
