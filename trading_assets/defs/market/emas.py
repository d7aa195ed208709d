"""EMAs over every bar family: ema_multi_tf (with tf 1D on daily bars), the four calendar families and v2.

Like the bars, each family rebuilds each queued asset from its earliest changed date (`market.bars_dirty`,
marked by the bar assets), continuing from the state stored just before it, so a one-day refresh reads
one day and a late revision anywhere reaches every later row. Assets whose newest daily bar closed longer
ago than the staleness threshold stay queued (the freshness gate) unless the run skips the gate.
"""

import json
import time
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl
import psycopg

from trading_assets.compute.calendars import Timeframe
from trading_assets.compute.ema import (
    GROUP,
    dual_ema,
    price_bound_candidates,
    price_bound_violations,
    stored_values,
    v2_ema,
    value_violations,
)
from trading_assets.config import Settings
from trading_assets.defs.market.assets import (
    BAR_KEYS,
    FOLLOW_PARENTS,
    BarsConfig,
    asset_chunks,
    family_timeframes,
    rebuild_starts,
)
from trading_assets.defs.market.assets import (
    GROUP as MARKET_GROUP,
)
from trading_assets.defs.partitions import run_date_window
from trading_assets.defs.resources import Warehouse
from trading_assets.io import ema_store, market_store

EMA_KEYS = {family: dg.AssetKey([MARKET_GROUP, family]) for family in ema_store.EMA_FAMILIES}
DAILY = Timeframe.parse(market_store.DAILY_TF)
EMA_CHECKS = {
    "ema_values_valid": "no EMA written is NaN, infinite or negative (blocking; the run is rolled back)",
    "ema_within_price_bounds": "EMAs within [0.5 x min, 2 x max] of the closes of their own window (p x tf_days days)",
}


class EmaConfig(BarsConfig):
    """As for bars, and `skip_stale_check`: build assets whose bars are stale too; `staleness_hours`: the
    gate's threshold (default TRADING_ASSETS_MARKET_STALENESS_HOURS)."""

    skip_stale_check: bool = False
    staleness_hours: float | None = None


def ema_timeframes(conn: psycopg.Connection, family: str) -> list[Timeframe]:
    """The timeframes of an EMA family: its bars' active ones (v2: those of multi_tf), plus 1D for multi_tf."""
    if family == "ema_multi_tf":
        return [DAILY, *family_timeframes(conn, "multi_tf")]
    if family == "ema_multi_tf_v2":
        return family_timeframes(conn, "multi_tf")
    return family_timeframes(conn, ema_store.EMA_SOURCES[family][0])


def stale_assets(conn: psycopg.Connection, asset_ids: list[int], hours: float, now: datetime) -> list[int]:
    """Assets whose newest daily bar closed more than `hours` before `now` (or that have none)."""
    closed = ema_store.newest_bar_close(conn, asset_ids)
    limit = now - timedelta(hours=hours)
    return sorted(a for a in asset_ids if a not in closed or closed[a] < limit)


class EmaTally:
    """Rows written and validation findings over the chunks of one run."""

    def __init__(self) -> None:
        self.rows = 0
        self.packed_rows = 0
        self.invalid = pl.DataFrame()
        self.out_of_bounds = 0
        self.rejects: list[pl.DataFrame] = []
        self.dates: list[date] = []

    def add(
        self, rows: int, dates: tuple[date, ...], packed: int, invalid: pl.DataFrame, rejects: pl.DataFrame, bounds: int
    ) -> None:
        self.rows += rows
        self.dates += dates
        self.packed_rows += packed
        self.invalid = pl.concat([self.invalid, invalid], how="diagonal_relaxed")
        self.out_of_bounds += bounds
        self.rejects.append(rejects)

    def check_results(self) -> list[dg.AssetCheckResult]:
        sample = self.invalid.head(20).to_dicts() if self.invalid.height else []
        return [
            dg.AssetCheckResult(
                check_name="ema_values_valid",
                passed=self.invalid.is_empty(),
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"violations": self.invalid.height, "sample": json.dumps(sample, default=str)},
            ),
            dg.AssetCheckResult(
                check_name="ema_within_price_bounds",
                passed=self.out_of_bounds == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"violations": self.out_of_bounds},
            ),
        ]


def _rejects(invalid: pl.DataFrame, bounds: pl.DataFrame) -> pl.DataFrame:
    """Rows of market.ema_rejects: invalid values, and out-of-bounds EMAs with their bounds as JSON."""
    bounded = bounds.select(
        *GROUP,
        "period",
        "trade_date",
        value_column=pl.lit("ema"),
        value="ema",
        violation_type=pl.lit("out_of_price_bounds"),
        bounds=pl.struct(
            "min_close",
            "max_close",
            (pl.col("min_close") * 0.5).alias("lower"),
            (pl.col("max_close") * 2.0).alias("upper"),
            "window_days",
        ).struct.json_encode(),
        source_close="close",
    )
    return pl.concat([invalid, bounded], how="diagonal_relaxed")


def _rebuild_emas(
    conn: psycopg.Connection, family: str, timeframes: list[Timeframe], periods: list[int], starts: dict[int, date]
) -> tuple[int, tuple[date, ...], int, pl.DataFrame, pl.DataFrame, int]:
    """Rewrite each asset's EMAs of every timeframe from its start date.

    Returns (long rows written, their first and last date, packed rows written, invalid values, rejects,
    out-of-bounds count).
    """
    from_dates = pl.DataFrame(
        {"asset_id": list(starts), "from_date": list(starts.values())},
        schema={"asset_id": pl.Int64, "from_date": pl.Date},
    )
    rewrite_from = from_dates.join(pl.DataFrame({"tf": [t.label for t in timeframes]}), how="cross")
    carry = ema_store.read_carry(conn, family, rewrite_from, periods)
    v2 = family == "ema_multi_tf_v2"
    grid = ema_store.read_grid(conn, family, from_dates.with_columns(tf=pl.lit(DAILY.label)) if v2 else rewrite_from)
    frames = []
    for timeframe in timeframes:
        if v2:
            frames.append(v2_ema(grid.with_columns(tf=pl.lit(timeframe.label)), timeframe.nominal_days, periods, carry))
        else:
            rows = grid.filter(pl.col("tf") == timeframe.label)
            frames.append(dual_ema(rows, timeframe.nominal_days, periods, carry))
    wide = pl.concat(frames)
    packed = ema_store.replace_emas(conn, family, wide, rewrite_from, periods)
    invalid = value_violations(wide, periods)
    candidates = price_bound_candidates(wide, periods)
    bounds = price_bound_violations(candidates, ema_store.daily_closes(conn, _windows(candidates)))
    bounds = bounds.join(
        candidates.select(*GROUP, "period", "trade_date", "close"), on=[*GROUP, "period", "trade_date"]
    )
    rejects = _rejects(invalid, bounds)
    ema_store.replace_rejects(conn, family, starts, rejects)
    dates = (wide["trade_date"].min(), wide["trade_date"].max()) if wide.height else ()
    return stored_values(wide, periods), dates, packed, invalid, rejects, bounds.height


def _windows(candidates: pl.DataFrame) -> pl.DataFrame:
    return candidates.select(
        "asset_id",
        "trade_date",
        window_start=pl.col("trade_date") - pl.duration(days=pl.col("period") * pl.col("tf_days") - 1),
    )


def build_ema_assets(settings: Settings, partitions: dg.MonthlyPartitionsDefinition) -> list[dg.AssetsDefinition]:
    freshness = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=settings.market_staleness_hours))

    def ema_asset(family: str) -> dg.AssetsDefinition:
        key = EMA_KEYS[family]

        @dg.asset(
            key=key,
            deps=[BAR_KEYS[bars] for bars in ema_store.EMA_SOURCES[family]],
            group_name=MARKET_GROUP,
            kinds={"postgres", "polars"},
            partitions_def=partitions,
            backfill_policy=dg.BackfillPolicy.single_run(),
            freshness_policy=freshness,
            automation_condition=FOLLOW_PARENTS,
            check_specs=[
                dg.AssetCheckSpec(name, asset=key, blocking=name == "ema_values_valid", description=text)
                for name, text in EMA_CHECKS.items()
            ],
            description=f"EMAs of every active period (market.dim_ema_period) over the {family} timeframes: "
            "one row per period and daily close from the period's seed on (ema, ema_bar, roll, is_partial_end), "
            f"stored packed in market.{family}_packed and read through the view market.{family}.",
        )
        def emas_of_family(
            context: dg.AssetExecutionContext, config: EmaConfig, warehouse: Warehouse
        ) -> dg.MaterializeResult:
            started = time.perf_counter()
            window_start, _ = run_date_window(context)
            tally, stale = EmaTally(), []
            with warehouse.transaction() as conn:
                periods = ema_store.active_periods(conn)
                timeframes = ema_timeframes(conn, family)
                starts = rebuild_starts(conn, family, "price_bars_1d", window_start, config)
                if periods and ema_store.stored_periods(conn, family) != periods:
                    # The arrays are laid out by period: a changed period list rebuilds the family.
                    starts = ema_store.first_bar_dates(conn, None)
                    ema_store.set_periods(conn, family, periods)
                if not config.skip_stale_check and starts:
                    hours = config.staleness_hours or settings.market_staleness_hours
                    stale = stale_assets(conn, list(starts), hours, datetime.now(UTC))
                    market_store.mark_dirty(conn, family, {a: starts.pop(a) for a in stale})
                if periods and timeframes:
                    for chunk in asset_chunks(conn, "price_bars_1d", starts):
                        tally.add(*_rebuild_emas(conn, family, timeframes, periods, chunk))
                if tally.invalid.height:
                    # Invalid values never replace stored ones; their rejects are kept to show why.
                    conn.rollback()
                    ema_store.replace_rejects(conn, family, starts, pl.concat(tally.rejects, how="diagonal_relaxed"))
            first, last = (str(min(tally.dates)), str(max(tally.dates))) if tally.dates else ("", "")
            return dg.MaterializeResult(
                check_results=tally.check_results(),
                metadata={
                    "rows": 0 if tally.invalid.height else tally.rows,
                    "packed_rows": 0 if tally.invalid.height else tally.packed_rows,
                    "rejects": sum(r.height for r in tally.rejects),
                    "assets": len(starts),
                    "stale_assets_waiting": len(stale),
                    "periods": ", ".join(map(str, periods)),
                    "first_date": first,
                    "last_date": last,
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )

        return emas_of_family

    return [ema_asset(family) for family in ema_store.EMA_FAMILIES]
