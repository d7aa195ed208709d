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
of each period). Each group starts from its carry, so every sum and recursion continues with the very
operations of a full build, and a partial recompute equals it exactly.

The recursions are small loops compiled with numba: seeding, carrying and holding in one pass cost about
what polars' own `ewm_mean` costs, where the same logic as polars expressions cost two to four times more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numba
import numpy as np
import polars as pl

from trading_assets.compute.runs import group_starts

GROUP = ["asset_id", "tf"]
GRID_SCHEMA = {
    "asset_id": pl.Int64,
    "tf": pl.String,
    "trade_date": pl.Date,
    "close": pl.Float64,
    "canonical": pl.Boolean,
}


WIDE_COLUMNS = [*GROUP, "trade_date", "close", "tf_days", "roll", "n_closes", "close_sum"]


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


@numba.njit(cache=True, nogil=True)
def _running_closes(values, taken, group_starts, first_count, first_total):  # pragma: no cover (compiled)
    """Per row, how many values of its group were taken so far and their sum, continuing each group's carry."""
    count = np.empty(values.size, np.int64)
    total = np.empty(values.size, np.float64)
    for g in range(group_starts.size - 1):
        n, s = first_count[g], first_total[g]
        for i in range(group_starts[g], group_starts[g + 1]):
            if taken[i]:
                n += 1
                s += values[i]
            count[i], total[i] = n, s
    return count, total


@numba.njit(cache=True, nogil=True)
def _seeded(values, taken, group_starts, horizons, smoothings, first_count, first_total, first_ema):  # pragma: no cover
    """The kernel: per group g, null until `horizons[g]` values were taken (counting and summing on from the
    carry's count and sum, exactly as `_running_closes`), their mean on the horizon-th, then `smoothings[g] *
    value + (1 - smoothings[g]) * previous` on every taken value; a row not taken holds the previous value. A
    group whose carry has an EMA (`first_ema` not NaN) continues it. Returns (values, defined)."""
    out = np.empty(values.size, np.float64)
    defined = np.zeros(values.size, np.bool_)
    for g in range(group_starts.size - 1):
        horizon, smoothing = horizons[g], smoothings[g]
        keep = 1.0 - smoothing
        current = first_ema[g]
        seeded = not np.isnan(current)
        n, s = first_count[g], first_total[g]
        for i in range(group_starts[g], group_starts[g + 1]):
            if taken[i]:
                if seeded:
                    current = smoothing * values[i] + keep * current
                else:
                    n += 1
                    s += values[i]
                    if n == horizon:
                        current = s / horizon
                        seeded = True
            out[i] = current
            defined[i] = seeded
    return out, defined


@numba.njit(cache=True, nogil=True)
def _continued(values, starts_here, start_values, group_starts, smoothings, first_ema):  # pragma: no cover
    """An EMA (smoothing `smoothings[g]` in group g) over every row of a group that starts at the first row
    flagged `starts_here` with that row's `start_values` (or continues the carry's EMA). Returns (values,
    defined)."""
    out = np.empty(values.size, np.float64)
    defined = np.zeros(values.size, np.bool_)
    for g in range(group_starts.size - 1):
        smoothing = smoothings[g]
        keep = 1.0 - smoothing
        current = first_ema[g]
        seeded = not np.isnan(current)
        for i in range(group_starts[g], group_starts[g + 1]):
            if seeded:
                current = smoothing * values[i] + keep * current
            elif starts_here[i]:
                current = start_values[i]
                seeded = True
            out[i] = current
            defined[i] = seeded
    return out, defined


def _series(name: str, values: np.ndarray, defined: np.ndarray) -> pl.Series:
    """A float column, null where the EMA is not defined (a NaN that is defined stays NaN)."""
    return pl.select(pl.when(pl.Series(defined)).then(pl.Series(values, dtype=pl.Float64)).alias(name)).to_series()


def ema(values: pl.Series, period: int, group_lengths: list[int] | None = None) -> pl.Series:
    """The kernel on its own: SMA-seeded EMA of `values` in order (per consecutive group of the given lengths)."""
    lengths = group_lengths or [values.len()]
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    x = values.cast(pl.Float64).fill_null(np.nan).to_numpy()
    taken = values.is_not_null().to_numpy()
    groups = len(lengths)
    none = np.zeros(groups, np.int64), np.zeros(groups), np.full(groups, np.nan)
    horizons, smoothings = np.full(groups, period), np.full(groups, alpha(period))
    return _series(values.name, *_seeded(x, taken, starts, horizons, smoothings, *none))


def _prepared(
    grid: pl.DataFrame, carry: pl.DataFrame | None, periods: list[int], tf_days: int | Mapping[str, int]
) -> tuple[pl.DataFrame, dict]:
    """The grid's rows, and per group (asset_id, tf) in their order its carry and its timeframe's days
    (`tf_days`: one for all, or per tf label; `row_days` repeats them per row) as numpy arrays. The rows of a
    group must be together and in date order (as the tables' primary keys hold them); the groups may come in
    any order."""
    rows = grid.select(list(GRID_SCHEMA)).cast(GRID_SCHEMA)
    starts = group_starts(rows.select(GROUP))
    keys = rows.select(GROUP)[starts[:-1]]
    dates = rows["trade_date"].to_physical().to_numpy()
    within = np.ones(max(dates.size - 1, 0), np.bool_)
    within[starts[1:-1] - 1] = False
    if keys.n_unique() < keys.height or (np.diff(dates)[within] <= 0).any():
        raise ValueError("the grid's rows of each (asset_id, tf) must be together and in date order")
    schema = carry_schema(periods)
    state = pl.DataFrame(schema=schema) if carry is None else carry.select(list(schema)).cast(schema)
    aligned = keys.join(state, on=GROUP, how="left", maintain_order="left")
    days = (
        np.full(keys.height, tf_days, np.int64)
        if isinstance(tf_days, int)
        else keys["tf"].replace_strict(dict(tf_days), return_dtype=pl.Int64).to_numpy()
    )
    arrays = {
        "starts": starts,
        "tf_days": days,
        "row_days": np.repeat(days, np.diff(starts)),
        "n_closes": aligned["n_closes"].fill_null(0).to_numpy(),
        "close_sum": aligned["close_sum"].fill_null(0.0).to_numpy(),
        **{c: aligned[c].fill_null(np.nan).to_numpy() for c in schema if c.startswith("ema_")},
    }
    return rows, arrays


def _finish(rows: pl.DataFrame, state: dict, canonical: np.ndarray, columns: list[pl.Series]) -> pl.DataFrame:
    """Add roll, tf_days and the value columns. (Whether a preview row belongs to a bar still forming depends
    on later rows: the views derive is_partial_end when read.)"""
    return rows.with_columns(*columns, roll=pl.Series(~canonical), tf_days=pl.Series(state["row_days"]))


def dual_ema(
    grid: pl.DataFrame, tf_days: int | Mapping[str, int], periods: list[int], carry: pl.DataFrame | None = None
) -> pl.DataFrame:
    """`ema` and `ema_bar` of every period on the daily grid (GRID_SCHEMA columns) of one or more timeframes
    (`tf_days`: the timeframe's days, or per tf label), each (asset_id, tf)'s rows together in date order.

    Returns one row per grid row, in its order, with n_closes / close_sum (canonical closes so far) and the
    per-period columns of `ema_columns`; a period's values are null before its seed.
    """
    rows, state = _prepared(grid, carry, periods, tf_days)
    starts = state["starts"]
    close = rows["close"].to_numpy()
    canonical = rows["canonical"].fill_null(False).to_numpy()
    count, total = _running_closes(close, canonical, starts, state["n_closes"], state["close_sum"])
    columns = [pl.Series("n_closes", count), pl.Series("close_sum", total)]
    emas, bars = ema_columns(periods)
    for p, ema_column, bar_column in zip(periods, emas, bars, strict=True):
        # The bar EMA over canonical closes; between them it holds the last canonical value.
        carried = state["n_closes"], state["close_sum"], state[bar_column]
        horizons = np.full(starts.size - 1, p)
        held, defined = _seeded(close, canonical, starts, horizons, alpha(horizons), *carried)
        preview = alpha(p) * close + (1.0 - alpha(p)) * held
        columns.append(_series(bar_column, np.where(canonical, held, preview), defined))
        seed_row = canonical & (count == p)
        daily, seeded = _continued(close, seed_row, held, starts, alpha(p * state["tf_days"]), state[ema_column])
        columns.append(_series(ema_column, daily, seeded))
    return _finish(rows, state, canonical, columns).select(WIDE_COLUMNS + emas + bars)


def v2_ema(
    daily: pl.DataFrame, tf_days: int | Mapping[str, int], periods: list[int], carry: pl.DataFrame | None = None
) -> pl.DataFrame:
    """The daily EMA of horizon `p * tf_days` on daily closes (GRID_SCHEMA, `canonical` ignored; each
    (asset_id, tf)'s rows together in date order, see `per_timeframe`); a row is canonical (roll = false) on
    every tf_days-th daily close from the asset's first one. ema_bar is null."""
    rows, state = _prepared(daily, carry, periods, tf_days)
    starts = state["starts"]
    close = rows["close"].to_numpy()
    every = np.ones(close.size, np.bool_)
    count, total = _running_closes(close, every, starts, state["n_closes"], state["close_sum"])
    columns = [pl.Series("n_closes", count), pl.Series("close_sum", total)]
    emas, bars = ema_columns(periods)
    nulls = pl.repeat(None, close.size, dtype=pl.Float64, eager=True)
    for p, ema_column, bar_column in zip(periods, emas, bars, strict=True):
        horizons = p * state["tf_days"]
        carried = state["n_closes"], state["close_sum"], state[ema_column]
        values, defined = _seeded(close, every, starts, horizons, alpha(horizons), *carried)
        columns += [_series(ema_column, values, defined), nulls.alias(bar_column)]
    canonical = count % state["row_days"] == 0
    return _finish(rows, state, canonical, columns).select(WIDE_COLUMNS + emas + bars)


def per_timeframe(daily: pl.DataFrame, labels: list[str]) -> pl.DataFrame:
    """The rows of `daily` (each asset's together, in date order) once per tf of `labels`, in the order (asset,
    tf as listed, date): v2's grid of each timeframe is the asset's daily closes."""
    starts = group_starts(daily.select("asset_id"))
    lengths = np.repeat(np.diff(starts), len(labels))
    first = np.repeat(starts[:-1], len(labels))
    # Row i of block b (an asset's tf) is daily row first[b] + i.
    block_offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    rows = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(first - block_offsets, lengths)
    tf = pl.Series("tf", labels, pl.String).gather(np.repeat(np.tile(np.arange(len(labels)), starts.size - 1), lengths))
    return daily[rows].with_columns(tf)


def _period_rows(wide: pl.DataFrame, periods: list[int], keep: Callable[[pl.Expr, pl.Expr], pl.Expr]) -> pl.DataFrame:
    """Long rows (keys, period, tf_days, close, ema, ema_bar) of the wide rows whose period columns pass
    `keep(ema, ema_bar)`: only the few rows a check wants are ever put in the long shape."""
    emas, bars = ema_columns(periods)
    return pl.concat(
        [
            wide.filter(keep(pl.col(e), pl.col(b))).select(
                *GROUP, "trade_date", pl.lit(p, pl.Int64).alias("period"), "tf_days", "close",
                pl.col(e).alias("ema"), pl.col(b).alias("ema_bar"),
            )
            for p, e, b in zip(periods, emas, bars, strict=True)
        ]
    )  # fmt: skip


def value_violations(wide: pl.DataFrame, periods: list[int]) -> pl.DataFrame:
    """EMA values (of `dual_ema` / `v2_ema` output) that are NaN, infinite or negative: keys, period,
    value_column, value, violation_type, source_close."""

    def invalid(value: pl.Expr) -> pl.Expr:
        return value.is_nan() | value.is_infinite() | (value < 0)

    rows = _period_rows(wide, periods, lambda e, b: invalid(e) | invalid(b))
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


def price_bound_candidates(wide: pl.DataFrame, periods: list[int]) -> pl.DataFrame:
    """Long rows whose finite ema may leave [0.5 x min, 2 x max] of its window's closes: the window holds
    the row's own close, so an EMA within [0.5, 2] x that close cannot (and the window need not be read)."""
    close = pl.col("close")
    return _period_rows(wide, periods, lambda e, _: e.is_finite() & ((e < 0.5 * close) | (e > 2.0 * close)))


def values_per_row(periods: list[int]) -> pl.Expr:
    """How many long rows (one per period from its seed on) each wide row holds."""
    emas, _ = ema_columns(periods)
    return pl.sum_horizontal(pl.col(e).is_not_null() for e in emas).cast(pl.Int64)


def price_bound_violations(candidates: pl.DataFrame, closes: pl.DataFrame) -> pl.DataFrame:
    """Out-of-bounds EMAs: below 0.5 x the minimum or above 2 x the maximum daily close of the row's own
    window (`period * tf_days` days up to its date, never wall-clock now).

    `candidates`: long rows with `close`; `closes`: daily (asset_id, trade_date, close) covering the windows.
    """
    windows = candidates.select(
        *GROUP, "period", "trade_date", "ema", window_days=(pl.col("period") * pl.col("tf_days")).cast(pl.Int64)
    )
    first = pl.col("trade_date") - pl.duration(days=pl.col("window_days") - 1)
    lowest, highest = window_extremes(closes, windows.select("asset_id", "trade_date", first=first))
    bounds = windows.with_columns(min_close=lowest, max_close=highest).select(
        *GROUP, "period", "trade_date", "ema", "min_close", "max_close", "window_days"
    )
    outside = (pl.col("ema") < 0.5 * pl.col("min_close")) | (pl.col("ema") > 2.0 * pl.col("max_close"))
    return bounds.filter(outside).sort(*GROUP, "period", "trade_date")


def window_extremes(closes: pl.DataFrame, windows: pl.DataFrame) -> tuple[pl.Series, pl.Series]:
    """The lowest and highest close of each window (asset_id, first, trade_date: the days first..trade_date)
    among `closes` (asset_id, trade_date, close); null where the window holds no close.

    Range-minimum tables over the closes sorted by asset and date (level k: the extreme of 2**k closes from
    each position) answer every window with two lookups, whatever the mix of window lengths: one rolling pass
    per length cost 20 ms each, and a family has dozens of lengths.
    """
    daily = closes.select("asset_id", "trade_date", "close").sort("asset_id", "trade_date")
    keys = _day_keys(daily["asset_id"], daily["trade_date"])
    first = np.searchsorted(keys, _day_keys(windows["asset_id"], windows["first"]), "left")
    last = np.searchsorted(keys, _day_keys(windows["asset_id"], windows["trade_date"]), "right")
    span = last - first
    held = span > 0
    level = np.zeros(span.size, np.int64)
    level[held] = np.floor(np.log2(span[held])).astype(np.int64)
    values = daily["close"].to_numpy()
    lowest, highest = np.full(span.size, np.nan), np.full(span.size, np.nan)
    low, high = values, values
    for k in range(int(level.max(initial=0)) + 1):
        if k:
            width = 1 << (k - 1)
            low, high = np.minimum(low[:-width], low[width:]), np.maximum(high[:-width], high[width:])
        at = held & (level == k)
        start, end = first[at], last[at] - (1 << k)
        lowest[at] = np.minimum(low[start], low[end])
        highest[at] = np.maximum(high[start], high[end])
    return (
        pl.Series("min_close", lowest).fill_nan(None),
        pl.Series("max_close", highest).fill_nan(None),
    )


def _day_keys(asset_ids: pl.Series, days: pl.Series) -> np.ndarray:
    """(asset, day) as one sortable integer: the asset in the high 32 bits, the day (offset to be positive) low."""
    return (asset_ids.cast(pl.Int64).to_numpy() << 32) + (days.cast(pl.Int32).cast(pl.Int64).to_numpy() + 2**31)
