"""The EMA kernel and families by the SEMANTICS §D cases (numbers in the test names), against TA-Lib and
pandas on real files, and incremental == full as a property."""

from datetime import date, timedelta

import numpy as np
import pandas as pd
import polars as pl
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from trading_assets.compute.ema import GROUP, dual_ema, ema, ema_columns, per_timeframe, v2_ema, window_extremes
from trading_assets.sources.price_files import read_price_file
from trading_assets_tests.conftest import SHARED_DATA

DAILY_FILES = sorted((SHARED_DATA / "daily").glob("*.csv"))
PERIODS = [9, 10, 21, 50, 100, 200]


def _grid(closes: list[float | None], canonical_every: int = 1, tf: str = "1D") -> pl.DataFrame:
    n = len(closes)
    return pl.DataFrame(
        {
            "asset_id": [1] * n,
            "tf": [tf] * n,
            "trade_date": [date(2024, 1, 1) + timedelta(days=i) for i in range(n)],
            "close": closes,
            "canonical": [(i + 1) % canonical_every == 0 for i in range(n)],
        },
        schema_overrides={"close": pl.Float64},
    )


def long_rows(wide: pl.DataFrame, periods: list[int]) -> pl.DataFrame:
    """The contract's long shape: one row per period from its seed on."""
    emas, bars = ema_columns(periods)
    parts = [
        wide.select(
            *GROUP, "trade_date", pl.lit(p, pl.Int64).alias("period"), "tf_days", "roll",
            pl.col(e).alias("ema"), pl.col(b).alias("ema_bar"),
        ).filter(pl.col("ema").is_not_null())
        for p, e, b in zip(periods, emas, bars, strict=True)
    ]  # fmt: skip
    return pl.concat(parts).sort(*GROUP, "period", "trade_date")


def _kernel(values: list[float | None], period: int) -> list[float | None]:
    return ema(pl.Series("x", values, pl.Float64), period).to_list()


def test_d16_sma_seed() -> None:
    assert _kernel([1, 2, 3, 4, 5], 3) == [None, None, 2.0, 3.0, 4.0]


def test_d17_null_input_carries() -> None:
    assert _kernel([1, 2, 3, None, 5], 3) == [None, None, 2.0, 2.0, 3.5]


def test_d18_dual_ema_worked_example() -> None:
    rows = long_rows(dual_ema(_grid([float(c) for c in range(10, 18)], 2, "2D"), 2, [2]), [2])
    assert rows["trade_date"].dt.day().to_list() == [4, 5, 6, 7, 8]  # no rows before the seed on day 4
    assert rows["ema_bar"].to_list() == pytest.approx([12, 13 + 1 / 3, 14, 15 + 1 / 3, 16], rel=1e-12)
    assert rows["ema"].to_list() == pytest.approx([12, 12.8, 13.68, 14.608, 15.5648], rel=1e-12)
    assert rows["roll"].to_list() == [False, True, False, True, False]


def test_d19_v2_daily_ema_with_the_timeframe_horizon() -> None:
    rows = long_rows(v2_ema(_grid([float(c) for c in range(1, 11)], tf="2D"), 2, [2]), [2])
    assert rows["trade_date"].dt.day().to_list() == list(range(4, 11))  # index 3 on
    assert rows["ema"].to_list() == pytest.approx([2.5 + i for i in range(7)], rel=1e-12)
    assert [not r for r in rows["roll"]] == [True, False, True, False, True, False, True]  # indices 3, 5, 7, 9
    assert rows["ema_bar"].null_count() == rows.height


@pytest.mark.skipif(not DAILY_FILES, reason="../shared/data is not beside the project")
@pytest.mark.parametrize("path", DAILY_FILES, ids=lambda p: p.stem)
def test_tf_1d_agrees_with_talib_and_pandas_on_real_files(path) -> None:
    closes = read_price_file(path, price_divisor=1).prices.sort("trade_date")["close"]
    grid = _grid(closes.to_list())
    wide = dual_ema(grid, 1, PERIODS)
    emas, bars = ema_columns(PERIODS)
    for period, ema_column, bar_column in zip(PERIODS, emas, bars, strict=True):
        if closes.len() < period:
            assert wide[ema_column].null_count() == wide.height
            continue
        reference = talib.EMA(closes.to_numpy(), timeperiod=period)
        seeded = pd.Series(closes.to_numpy()).copy()
        seeded.iloc[: period - 1] = np.nan
        seeded.iloc[period - 1] = closes.head(period).mean()
        by_pandas = seeded.ewm(alpha=2 / (period + 1), adjust=False).mean().to_numpy().copy()
        by_pandas[: period - 1] = np.nan
        for column in (ema_column, bar_column):
            ours = wide[column].to_numpy()
            np.testing.assert_array_equal(np.isnan(ours), np.isnan(reference))
            np.testing.assert_allclose(ours, reference, rtol=1e-9, equal_nan=True)
            np.testing.assert_allclose(ours, by_pandas, rtol=1e-9, equal_nan=True)


@pytest.mark.skipif(not DAILY_FILES, reason="../shared/data is not beside the project")
def test_ema_bar_on_canonical_weekly_rows_is_the_ema_of_weekly_closes() -> None:
    closes = read_price_file(SHARED_DATA / "daily" / "binance_BTCUSDT_1d.csv").prices.sort("trade_date")["close"]
    grid = _grid(closes.to_list(), 7, "7D")
    wide = dual_ema(grid, 7, [10]).filter(~pl.col("roll"))
    weekly = grid.filter(pl.col("canonical"))["close"].to_numpy()
    np.testing.assert_allclose(wide["ema_bar_10"].to_numpy(), talib.EMA(weekly, timeperiod=10), rtol=1e-9)


def _carry_at(full: pl.DataFrame, start: date) -> pl.DataFrame:
    """What the store hands an incremental run: the state after the last row before `start`."""
    before = full.filter(pl.col("trade_date") < start).sort(*GROUP, "trade_date")
    last = before.group_by(GROUP).agg(pl.all().last())
    _, bars = ema_columns(sorted({int(c.rsplit("_", 1)[1]) for c in full.columns if c.startswith("ema_bar_")}))
    canonical = before.filter(~pl.col("roll")).group_by(GROUP).agg(pl.col(bars).last())
    return last.drop(bars).join(canonical, on=GROUP, how="left")


@settings(max_examples=80, deadline=None)
@given(
    closes=st.lists(st.floats(min_value=1, max_value=1000), min_size=30, max_size=90),
    every=st.integers(min_value=1, max_value=9),
    cut=st.integers(min_value=1, max_value=89),
    v2=st.booleans(),
)
def test_property_recompute_from_any_day_with_the_carry_equals_full(
    closes: list[float], every: int, cut: int, v2: bool
) -> None:
    grid = _grid(closes, every, f"{every}D")
    periods = [2, 3, 7]
    build = v2_ema if v2 else dual_ema
    full = build(grid, every, periods)
    start = grid["trade_date"][min(cut, grid.height - 1)]
    tail = build(grid.filter(pl.col("trade_date") >= start), every, periods, _carry_at(full, start))
    assert tail.equals(full.filter(pl.col("trade_date") >= start))


def test_window_extremes_agree_with_the_closes_of_each_window() -> None:
    # Two assets with gaps; windows of many lengths, longer than the history, starting before it, and empty.
    rng = np.random.default_rng(7)
    days = [date(2020, 1, 1) + timedelta(days=int(d)) for d in np.sort(rng.choice(900, 500, replace=False))]
    closes = pl.concat(
        pl.DataFrame({"asset_id": asset, "trade_date": days, "close": rng.lognormal(3, 0.5, len(days))})
        for asset in (3, 11)
    )
    windows = pl.DataFrame(
        {
            "asset_id": rng.choice([3, 11, 12], 2_000),
            "trade_date": [date(2019, 12, 1) + timedelta(days=int(d)) for d in rng.integers(0, 960, 2_000)],
            "days": rng.choice([1, 2, 7, 30, 63, 365, 2_000], 2_000),
        }
    ).with_columns(first=pl.col("trade_date") - pl.duration(days=pl.col("days") - 1))
    lowest, highest = window_extremes(closes, windows)
    # The definition, by brute force: the closes of the asset dated after day - length, up to day.
    by_asset = {
        asset: list(zip(days, closes.filter(pl.col("asset_id") == asset)["close"], strict=True)) for asset in (3, 11)
    }
    reference = []
    for asset, day, length in windows.select("asset_id", "trade_date", "days").iter_rows():
        held = [c for d, c in by_asset.get(asset, []) if day - timedelta(days=length) < d <= day]
        reference.append((min(held), max(held)) if held else (None, None))
    assert lowest.to_list() == [low for low, _ in reference]
    assert highest.to_list() == [high for _, high in reference]
    assert lowest.null_count() > 0 and lowest.null_count() < 2_000


def test_one_pass_over_several_timeframes_equals_one_pass_per_timeframe() -> None:
    # Two assets, three timeframes each (every group with its own days, so its own smoothing and seed),
    # laid out in key order; then each timeframe alone. A kernel taking one group's days for all would differ.
    rng = np.random.default_rng(3)
    days = {"2D": 2, "5D": 5, "9D": 9}
    grids = [
        _grid(list(rng.lognormal(4, 0.2, 60)), every, tf).with_columns(asset_id=pl.lit(asset, pl.Int64))
        for asset in (4, 7)
        for tf, every in days.items()
    ]
    periods = [2, 3, 7]
    together = dual_ema(pl.concat(grids), days, periods)
    alone = pl.concat(dual_ema(grid, days[grid["tf"][0]], periods) for grid in grids)
    assert together.equals(alone)
    daily = grids[0].select("asset_id", "trade_date", "close", "canonical").with_columns(tf=pl.lit("1D"))
    daily = pl.concat([daily, daily.with_columns(asset_id=pl.lit(9, pl.Int64))])
    laid_out = per_timeframe(daily, list(days))
    expected = (
        daily.drop("tf")
        .join(pl.DataFrame({"tf": list(days), "rank": [0, 1, 2]}), how="cross")
        .sort("asset_id", "rank", "trade_date")
    )
    assert laid_out.equals(expected.select(laid_out.columns))
    together = v2_ema(laid_out, days, periods)
    alone = pl.concat(
        v2_ema(laid_out.filter((pl.col("asset_id") == a) & (pl.col("tf") == tf)), d, periods)
        for a in (4, 9)
        for tf, d in days.items()
    )
    assert together.equals(alone)


def test_a_grid_out_of_order_is_refused() -> None:
    grid = _grid([float(c) for c in range(1, 11)])
    with pytest.raises(ValueError, match="together and in date order"):
        dual_ema(grid.reverse(), 1, [3])
    split = pl.concat([grid.head(3), grid.with_columns(tf=pl.lit("2D")).head(3), grid.tail(7)])
    with pytest.raises(ValueError, match="together and in date order"):
        dual_ema(split, {"1D": 1, "2D": 2}, [3])
