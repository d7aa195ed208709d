"""EMAs over every bar family (DESIGN §6, SEMANTICS §A.4).

One smoothing rule, `alpha(h) = 2 / (h + 1)`, serves every EMA here. The kernel seeds with the simple
mean of the first `h` non-null values (placed on the h-th of them), is null before, and carries its
previous value through a null input.

The dual EMA of a timeframe runs over its daily grid (one row per daily close, canonical where a bar
completes): `ema_bar` is the EMA of period p over canonical closes, re-anchored between them
(`alpha(p) * close + (1 - alpha(p)) * last canonical ema_bar`); `ema` is the continuous daily EMA with
`alpha(p * tf_days)`, seeded with the first canonical `ema_bar`. v2 is the daily EMA with horizon
`p * tf_days`, canonical on every tf_days-th daily row.

Incremental runs pass the grid from any date on plus the `carry`: per (asset_id, tf) the state after the
last stored row before that date (closes seen, their sum, the last `ema` and the last canonical `ema_bar`
of each period). The carry enters as a first row of its group, so every sum and recursion continues with
the very operations of a full build, and a partial recompute equals it exactly.
"""

from __future__ import annotations

import polars as pl

GROUP = ["asset_id", "tf"]
GRID_SCHEMA = {
    "asset_id": pl.Int64,
    "tf": pl.String,
    "trade_date": pl.Date,
    "close": pl.Float64,
    "canonical": pl.Boolean,
}


def alpha(horizon: float) -> float:
    """The smoothing factor of an EMA over `horizon` values."""
    return 2.0 / (horizon + 1.0)


def ema_columns(periods: list[int]) -> tuple[list[str], list[str]]:
    """Names of the per-period value columns of `dual_ema` / `v2_ema` output: (ema, ema_bar)."""
    return [f"ema_{p}" for p in periods], [f"ema_bar_{p}" for p in periods]


def carry_schema(periods: list[int]) -> dict[str, pl.DataType]:
    emas, bars = ema_columns(periods)
    return {
        "asset_id": pl.Int64,
        "tf": pl.String,
        "n_closes": pl.Int64,
        "close_sum": pl.Float64,
        **dict.fromkeys(emas, pl.Float64),
        **dict.fromkeys(bars, pl.Float64),
    }


def _seed_start(value: pl.Expr, count: pl.Expr, total: pl.Expr, horizon: int) -> pl.Expr:
    """The recursion's input: null until `horizon` values were seen, their mean on the horizon-th, then the values.
    `count`/`total` are the running count and sum of the non-null values."""
    return (
        pl.when(value.is_null() | (count < horizon))
        .then(None)
        .when(count == horizon)
        .then(total / horizon)
        .otherwise(value)
    )


def _recursion(start: pl.Expr, horizon: int) -> pl.Expr:
    """EMA with alpha(horizon) of a prepared input; a null input carries the previous value."""
    return start.ewm_mean(alpha=alpha(horizon), adjust=False, ignore_nulls=True).forward_fill()


def ema(values: pl.Expr, period: int) -> pl.Expr:
    """The kernel: SMA-seeded EMA of `values` in row order (wrap in `.over(...)` for groups)."""
    count = values.is_not_null().cast(pl.Int64).cum_sum()
    return _recursion(_seed_start(values, count, values.fill_null(0.0).cum_sum(), period), period)


def _carried(start: pl.Expr, carried: str, horizon: int) -> pl.Expr:
    """The recursion per (asset_id, tf), started on the carry row at its stored value."""
    return _recursion(pl.when(pl.col("_is_carry")).then(pl.col(carried)).otherwise(start), horizon).over(GROUP)


def _with_carry(grid: pl.DataFrame, carry: pl.DataFrame | None, periods: list[int]) -> pl.DataFrame:
    """The grid with each group's carry as its first row (`_is_carry`), sorted by group and date."""
    schema = carry_schema(periods)
    rows = grid.select(list(GRID_SCHEMA)).cast(GRID_SCHEMA).with_columns(_is_carry=pl.lit(False))
    state = pl.DataFrame(schema=schema) if carry is None else carry.select(list(schema)).cast(schema)
    state = state.join(rows.select(GROUP).unique(), on=GROUP, how="semi").with_columns(_is_carry=pl.lit(True))
    rows = pl.concat([state, rows], how="diagonal")
    return rows.sort(*GROUP, "_is_carry", "trade_date", descending=[False, False, True, False], nulls_last=False)


def _closes_seen(value: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """Running count and sum of the non-null `value`s of each group, continuing the carry's."""
    carry = pl.col("_is_carry")
    count = pl.when(carry).then(pl.col("n_closes")).otherwise(value.is_not_null().cast(pl.Int64))
    total = pl.when(carry).then(pl.col("close_sum")).otherwise(value.fill_null(0.0))
    return count.cum_sum().over(GROUP), total.cum_sum().over(GROUP)


def _finish(frame: pl.DataFrame, tf_days: int, canonical: pl.Expr, periods: list[int]) -> pl.DataFrame:
    """Drop the carry rows; add roll, is_partial_end (after the group's last canonical row) and tf_days."""
    emas, bars = ema_columns(periods)
    last_canonical = pl.col("trade_date").filter(canonical).max().over(GROUP)
    return (
        frame.with_columns(
            roll=~canonical,
            is_partial_end=last_canonical.is_null() | (pl.col("trade_date") > last_canonical),
            tf_days=pl.lit(tf_days, pl.Int64),
        )
        .filter(~pl.col("_is_carry"))
        .select(
            *GROUP, "trade_date", "close", "tf_days", "roll", "is_partial_end", "n_closes", "close_sum", *emas, *bars
        )
    )


def dual_ema(grid: pl.DataFrame, tf_days: int, periods: list[int], carry: pl.DataFrame | None = None) -> pl.DataFrame:
    """`ema` and `ema_bar` of every period on the daily grid of one timeframe (GRID_SCHEMA columns).

    Returns one row per grid row with n_closes / close_sum (canonical closes so far) and the per-period
    columns of `ema_columns`; a period's values are null before its seed.
    """
    rows = _with_carry(grid, carry, periods)
    canonical = pl.col("canonical").fill_null(False)
    bar_close = pl.when(canonical).then(pl.col("close"))
    count, total = _closes_seen(bar_close)
    rows = rows.with_columns(n_closes=count, close_sum=total)
    count, total = pl.col("n_closes"), pl.col("close_sum")
    emas, bars = ema_columns(periods)
    # The bar EMA on canonical rows; between them it holds the last canonical value (null input carries).
    rows = rows.with_columns(
        _carried(_seed_start(bar_close, count, total, p), bar, p).alias(f"_canonical_{p}")
        for p, bar in zip(periods, bars, strict=True)
    )
    preview = [(pl.col("close") * alpha(p), pl.col(f"_canonical_{p}") * (1.0 - alpha(p))) for p in periods]
    rows = rows.with_columns(
        pl.when(canonical).then(pl.col(f"_canonical_{p}")).otherwise(new + held).alias(bar)
        for p, bar, (new, held) in zip(periods, bars, preview, strict=True)
    )
    daily = [
        pl.when(canonical & (count == p)).then(pl.col(f"_canonical_{p}")).when(count >= p).then(pl.col("close"))
        for p in periods
    ]
    rows = rows.with_columns(
        _carried(value, column, tf_days * p).alias(column)
        for p, value, column in zip(periods, daily, emas, strict=True)
    )
    return _finish(rows, tf_days, canonical, periods)


def v2_ema(daily: pl.DataFrame, tf_days: int, periods: list[int], carry: pl.DataFrame | None = None) -> pl.DataFrame:
    """The daily EMA of horizon `p * tf_days` on daily closes (GRID_SCHEMA, `canonical` ignored); a row is
    canonical (roll = false) on every tf_days-th daily close from the asset's first one. ema_bar is null."""
    rows = _with_carry(daily.with_columns(canonical=pl.lit(True)), carry, periods)
    close = pl.col("close")
    count, total = _closes_seen(close)
    rows = rows.with_columns(n_closes=count, close_sum=total)
    emas, bars = ema_columns(periods)
    rows = rows.with_columns(
        *(
            _carried(
                _seed_start(close, pl.col("n_closes"), pl.col("close_sum"), tf_days * p), column, tf_days * p
            ).alias(column)
            for p, column in zip(periods, emas, strict=True)
        ),
        *(pl.lit(None, pl.Float64).alias(bar) for bar in bars),
    )
    return _finish(rows, tf_days, pl.col("n_closes") % tf_days == 0, periods)


def long_rows(wide: pl.DataFrame, periods: list[int]) -> pl.DataFrame:
    """The contract's long shape (one row per period from its seed on) of `dual_ema` / `v2_ema` output,
    with the day's close."""
    emas, bars = ema_columns(periods)
    parts = [
        wide.select(
            *GROUP, "trade_date", pl.lit(p, pl.Int64).alias("period"), "tf_days", "roll",
            pl.col(e).alias("ema"), pl.col(b).alias("ema_bar"), "is_partial_end", "close",
        ).filter(pl.col("ema").is_not_null())
        for p, e, b in zip(periods, emas, bars, strict=True)
    ]  # fmt: skip
    return pl.concat(parts).sort(*GROUP, "period", "trade_date")


def value_violations(rows: pl.DataFrame) -> pl.DataFrame:
    """Long EMA rows whose ema or ema_bar is NaN, infinite or negative: (keys, value_column, value, violation)."""
    found = []
    for column in ("ema", "ema_bar"):
        value = pl.col(column)
        violation = (
            pl.when(value.is_nan())
            .then(pl.lit("nan"))
            .when(value.is_infinite())
            .then(pl.lit("infinity"))
            .when(value < 0)
            .then(pl.lit("negative"))
        )
        found.append(
            rows.select(
                *GROUP,
                "period",
                "trade_date",
                pl.lit(column).alias("value_column"),
                value.alias("value"),
                violation.alias("violation_type"),
                pl.col("close").alias("source_close"),
            ).filter(pl.col("violation_type").is_not_null())
        )
    return pl.concat(found)


def price_bound_candidates(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows that may leave [0.5 x min, 2 x max] of their window's closes: the window holds the row's own
    close, so an EMA within [0.5, 2] x that close cannot (and the window need not be read)."""
    ema_value = pl.col("ema")
    return rows.filter((ema_value < 0.5 * pl.col("close")) | (ema_value > 2.0 * pl.col("close")))


def price_bound_violations(candidates: pl.DataFrame, closes: pl.DataFrame) -> pl.DataFrame:
    """Out-of-bounds EMAs: below 0.5 x the minimum or above 2 x the maximum daily close of the row's own
    window (`period * tf_days` days up to its date, never wall-clock now).

    `candidates`: long rows with `close`; `closes`: daily (asset_id, trade_date, close) covering the windows.
    """
    if candidates.is_empty():
        return candidates.select(*GROUP, "period", "trade_date", "ema").with_columns(
            min_close=pl.lit(None, pl.Float64), max_close=pl.lit(None, pl.Float64), window_days=pl.lit(0, pl.Int64)
        )
    windows = candidates.with_columns(window_days=pl.col("period") * pl.col("tf_days")).with_columns(
        window_start=pl.col("trade_date") - pl.duration(days=pl.col("window_days") - 1)
    )
    daily = closes.select("asset_id", day="trade_date", day_close="close")
    bounds = (
        windows.join(daily, on="asset_id")
        .filter(pl.col("day").is_between(pl.col("window_start"), pl.col("trade_date")))
        .group_by(*GROUP, "period", "trade_date", "ema", "window_days")
        .agg(min_close=pl.col("day_close").min(), max_close=pl.col("day_close").max())
    )
    outside = (pl.col("ema") < 0.5 * pl.col("min_close")) | (pl.col("ema") > 2.0 * pl.col("max_close"))
    return bounds.filter(outside).sort(*GROUP, "period", "trade_date")
