"""Corporate-action adjustment: the events a factor file states, and how they show in a security's prices.

Factor rows (security, factor_date, price_factor, split_factor) hold cumulative factors: a row applies to the
dates after the previous row's date up to its own. Between two consecutive rows an action takes effect on the
first trading date after the earlier row's date (its ex-date): a split when the split factor changes (ratio
later / earlier: 2 for a 2-for-1), a dividend when the price factor does.
"""

from __future__ import annotations

import polars as pl

SPLIT_TOLERANCE = 0.25
JUMP_THRESHOLD = 0.30

EVENT_SCHEMA = {
    "security": pl.String,
    "last_date_before": pl.Date,
    "split_ratio": pl.Float64,
    "dividend_factor": pl.Float64,
}


def action_events(factors: pl.DataFrame) -> pl.DataFrame:
    """The actions between consecutive factor rows (EVENT_SCHEMA): `split_ratio` (1 without a split) and
    `dividend_factor` (earlier price factor / later; 1 without a dividend), effective after last_date_before."""
    following = [pl.col(c).shift(-1).over("security") for c in ("split_factor", "price_factor")]
    return (
        factors.sort("security", "factor_date")
        .with_columns(next_split=following[0], next_price=following[1])
        .filter(pl.col("next_split").is_not_null())
        .select(
            "security",
            last_date_before="factor_date",
            split_ratio=pl.col("next_split") / pl.col("split_factor"),
            dividend_factor=pl.col("price_factor") / pl.col("next_price"),
        )
        .filter((pl.col("split_ratio") != 1) | (pl.col("dividend_factor") != 1))
    )


def _day_moves(bars: pl.DataFrame) -> pl.DataFrame:
    """Each bar of (security, trade_date, close) with the previous bar's date and close."""
    return bars.sort("security", "trade_date").with_columns(
        previous_date=pl.col("trade_date").shift(1).over("security"),
        previous_close=pl.col("close").shift(1).over("security"),
    )


def split_mismatches(events: pl.DataFrame, raw_bars: pl.DataFrame, tolerance: float = SPLIT_TOLERANCE) -> pl.DataFrame:
    """The splits whose price jump on the ex-date does not match their ratio: raw close over the previous
    close, times the ratio, off 1 by more than `tolerance`. `raw_bars`: security, trade_date, close (raw).
    Splits without a bar on both sides are not judged."""
    splits = events.filter(pl.col("split_ratio") != 1).sort("security", "last_date_before")
    moves = _day_moves(raw_bars).filter(pl.col("previous_date").is_not_null())
    # The ex-date bar: the first bar after last_date_before (its previous bar is on or before that date).
    judged = (
        splits.with_columns(day_after=pl.col("last_date_before") + pl.duration(days=1))
        .join_asof(
            moves.with_columns(ex_date=pl.col("trade_date")),
            left_on="day_after",
            right_on="trade_date",
            by="security",
            strategy="forward",
            check_sortedness=False,
        )
        .filter(pl.col("previous_close").is_not_null())
    )
    return (
        judged.with_columns(
            raw_move=pl.col("close") / pl.col("previous_close"),
            adjusted_move=pl.col("close") / pl.col("previous_close") * pl.col("split_ratio"),
        )
        .filter((pl.col("adjusted_move") - 1).abs() > tolerance)
        .select("security", "ex_date", "split_ratio", "previous_close", "close", "raw_move", "adjusted_move")
    )


def unexplained_jumps(adjusted_bars: pl.DataFrame, threshold: float = JUMP_THRESHOLD) -> pl.DataFrame:
    """Day-to-day moves of split-adjusted closes (security, trade_date, close) larger than `threshold`: a
    split the factor file lacks shows as one (a 2-for-1 as -50%); so does a real crash."""
    return (
        _day_moves(adjusted_bars)
        .with_columns(move=pl.col("close") / pl.col("previous_close") - 1)
        .filter(pl.col("move").abs() > threshold)
        .select("security", "trade_date", "previous_date", "previous_close", "close", "move")
    )
