"""Row rules shared by every input: repeated keys, date windows, plausible prices."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

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


# A row of an input file refused, with its file, its line and why (the trading tables' rejects).
REJECT_SCHEMA = {"source_file": pl.String, "source_line": pl.Int32, "reason": pl.String, "raw": pl.String}


def rows_in_window(frame: pl.DataFrame, column: str, start: date | None, end: date) -> pl.DataFrame:
    """Rows with `start <= column < end`; no start means everything before `end`."""
    condition = pl.col(column) < end
    if start is not None:
        condition &= pl.col(column) >= start
    return frame.filter(condition)


@dataclass(frozen=True)
class PriceBounds:
    """What a plausible daily price row is: dated from `earliest` (inside every calendar's range) to
    tomorrow, prices finite, positive and at most `max_price`, volume finite and non-negative. A file whose
    share of rejected rows passes `max_reject_share` (and counts more than `reject_allowance` rows) is
    refused whole: it is more likely the wrong file, or the wrong options, than a file with a few bad rows."""

    earliest: date = date(1900, 1, 1)
    max_price: float = 1e9
    max_reject_share: float = 0.05
    reject_allowance: int = 10

    @property
    def latest(self) -> date:
        # Tomorrow in UTC is still today somewhere east of it.
        return datetime.now(UTC).date() + timedelta(days=1)


DEFAULT_BOUNDS = PriceBounds()


def symbol_of(text: str) -> str:
    """An asset symbol as stored: trimmed and upper-cased, so `spy`, ` SPY ` and `SPY` are one asset."""
    symbol = text.strip().upper()
    if not symbol or re.search(r"\s", symbol):
        raise ValueError(f"symbol {text!r} is empty or contains spaces")
    return symbol


def implausible(columns: list[str], bounds: PriceBounds) -> pl.Expr:
    """Why a row is not a plausible price row (null when it is): its trade_date outside `bounds`, or a price of
    `columns` missing, not finite, not positive or above the bounds' maximum."""
    day = pl.col("trade_date")
    finite_positive = pl.all_horizontal(
        [pl.col(c).is_not_null() & pl.col(c).is_finite() & (pl.col(c) > 0) for c in columns]
    )
    return (
        pl.when(day < bounds.earliest)
        .then(pl.format("trade_date {} is before {}", day, pl.lit(str(bounds.earliest))))
        .when(day > bounds.latest)
        .then(pl.format("trade_date {} is in the future", day))
        .when(~finite_positive)
        .then(pl.lit("price missing, not finite or not positive"))
        .when(pl.any_horizontal([pl.col(c) > bounds.max_price for c in columns]))
        .then(pl.lit(f"price above the plausible maximum {bounds.max_price:g}"))
    )


def implausible_assets(frame: pl.DataFrame, columns: list[str], bounds: PriceBounds) -> dict[int, str]:
    """Per asset with rows that are not plausible (see `implausible`), its first such row as a reason."""
    bad = (
        frame.with_columns(why=implausible(columns, bounds))
        .filter(pl.col("why").is_not_null())
        .sort("asset_id", "trade_date")
        .unique("asset_id", keep="first", maintain_order=True)
    )
    return {
        row["asset_id"]: f"implausible input row on {row['trade_date']} ({row['why']}): "
        + ", ".join(f"{c}={row[c]}" for c in columns)
        for row in bad.iter_rows(named=True)
    }
