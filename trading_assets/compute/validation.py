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


def implausible_assets(frame: pl.DataFrame, columns: list[str], bounds: PriceBounds) -> dict[int, str]:
    """Per asset with rows outside `bounds` (date, or a price in `columns` not finite, not positive or too
    large), the first such row as a reason."""
    price_bad = pl.any_horizontal(
        [~(pl.col(c).is_finite() & (pl.col(c) > 0) & (pl.col(c) <= bounds.max_price)) for c in columns]
    )
    day = pl.col("trade_date")
    bad = frame.filter(price_bad | (day < bounds.earliest) | (day > bounds.latest)).sort("asset_id", "trade_date")
    first = bad.unique("asset_id", keep="first", maintain_order=True)
    return {
        row["asset_id"]: f"implausible input row on {row['trade_date']}: " + ", ".join(f"{c}={row[c]}" for c in columns)
        for row in first.iter_rows(named=True)
    }
