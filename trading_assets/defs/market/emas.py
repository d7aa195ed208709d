"""EMAs over every bar family: ema_multi_tf (with tf 1D on daily bars), the four calendar families and v2.

Like the bars (see rebuild.py), a run rewrites its window per asset from its changed dates (queued by the
bar assets) or over the whole window, continuing from the state stored just before, so a one-day refresh
reads one day. Assets whose newest daily bar closed longer ago than the staleness threshold stay queued
(the freshness gate) unless the run skips the gate. A changed list of periods changes the layout of every
stored row, so it needs a run over all months (automation starts one when dim_ema_period changes).
"""

import json
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime

import dagster as dg
import polars as pl
import psycopg

from trading_assets.compute import staleness
from trading_assets.compute.calendars import Timeframe
from trading_assets.compute.ema import (
    GROUP,
    carry_schema,
    dual_ema,
    per_timeframe,
    price_bound_candidates,
    price_bound_violations,
    v2_ema,
    value_violations,
    values_per_row,
)
from trading_assets.compute.rebuild import restrict
from trading_assets.compute.validation import PriceBounds, implausible_assets
from trading_assets.config import Settings
from trading_assets.defs.market.assets import (
    BAR_KEYS,
    BarsConfig,
    asset_chunks,
    family_timeframes,
    stream_slices,
)
from trading_assets.defs.market.assets import (
    GROUP as MARKET_GROUP,
)
from trading_assets.defs.market.dimensions import DIM_EMA_PERIOD, DIM_TIMEFRAME, timeframes_of
from trading_assets.defs.market.rebuild import (
    EndStates,
    ImplausibleInput,
    announce_requeued,
    build_quarantining,
    changes_applied_spec,
    derived_series,
    materialization,
    quarantine_spec,
    selected_checks,
    settle,
    start_family_run,
    written_in_groups,
)
from trading_assets.defs.partitions import partitions_end
from trading_assets.defs.resources import Warehouse
from trading_assets.defs.table_metadata import ends, preview
from trading_assets.io import ema_store, market_store

# Grid rows (one per asset, timeframe and day) of a group of assets computed while the previous group is stored.
_STREAM_GRID_ROWS = 250_000

EMA_KEYS = {family: dg.AssetKey([MARKET_GROUP, family]) for family in ema_store.EMA_FAMILIES}
EMAS_CODE_VERSION = "4"
DAILY = Timeframe.parse(market_store.DAILY_TF)
EMA_CHECKS = {
    "ema_values_valid": "no EMA written is NaN, infinite or negative (blocking; the run is rolled back)",
    "ema_within_price_bounds": "EMAs within [0.5 x min, 2 x max] of the closes of their own window (p x tf_days days)",
    "bars_fresh": "every asset queued for this run had fresh daily bars; a stale one is left queued, listed here "
    "and alerted, and never holds back another asset",
}


class EmaConfig(BarsConfig):
    """As for bars, and `skip_stale_check`: build assets whose bars are stale too; `staleness_hours`: the
    gate's threshold (default TRADING_ASSETS_MARKET_STALENESS_HOURS)."""

    skip_stale_check: bool = False
    staleness_hours: float | None = None


def timeframe_family(family: str) -> str:
    """The bar family whose timeframes (market.dim_timeframe) an EMA family has: v2 has those of multi_tf."""
    return "multi_tf" if family == "ema_multi_tf_v2" else ema_store.EMA_SOURCES[family][-1]


def ema_timeframes(conn: psycopg.Connection, family: str) -> list[Timeframe]:
    """The timeframes of an EMA family: its bars' active ones, plus 1D for multi_tf."""
    daily = [DAILY] if family == "ema_multi_tf" else []
    return [*daily, *family_timeframes(conn, timeframe_family(family))]


def stale_assets(conn: psycopg.Connection, asset_ids: list[int], hours: float, now: datetime) -> list[int]:
    """Those of `asset_ids` whose daily bars are stale at `now` (compute/staleness.py)."""
    return staleness.stale_assets(ema_store.newest_bar_closes(conn, asset_ids), now, hours)


def stale_bars_text(ids: list[int], symbols: list[str]) -> str:
    """The runbook's line for stale assets (its grep and its readers know it)."""
    return f"Bars stale for IDs: [{', '.join(map(str, ids))}] ({', '.join(symbols)})"


def bars_fresh_result(conn: psycopg.Connection, stale: list[int], skipped: bool) -> dg.AssetCheckResult:
    symbols = market_store.symbols_of(conn, stale)
    return dg.AssetCheckResult(
        check_name="bars_fresh",
        passed=not stale,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "stale_asset_ids": dg.MetadataValue.json(stale),
            "stale_symbols": dg.MetadataValue.json(symbols),
            "gate_skipped": skipped,
            **({"alert": stale_bars_text(stale, symbols)} if stale else {}),
        },
    )


@dataclass
class EmaBuild:
    """What one rewrite of a group of assets wrote and found: per wide row written its asset, date and long rows
    (`written`), its first and last wide rows (`sample`), packed rows, invalid values, rejects and the number of
    EMAs out of their price bounds."""

    written: pl.DataFrame
    sample: pl.DataFrame
    packed_rows: int
    invalid: pl.DataFrame
    rejects: pl.DataFrame
    out_of_bounds: int


class EmaTally:
    """Rows written and validation findings over the chunks of one run."""

    def __init__(self) -> None:
        self.packed_rows = 0
        self.invalid = pl.DataFrame()
        self.out_of_bounds = 0
        self.rejects: list[pl.DataFrame] = []
        self.dates: list[date] = []
        self.sample: list[pl.DataFrame] = []

    def add(self, built: EmaBuild) -> None:
        self.packed_rows += built.packed_rows
        self.invalid = pl.concat([self.invalid, built.invalid], how="diagonal_relaxed")
        self.out_of_bounds += built.out_of_bounds
        self.rejects.append(built.rejects)
        if built.written.height:
            self.dates += [built.written["trade_date"].min(), built.written["trade_date"].max()]
            self.sample.append(built.sample)

    def check_results(self) -> list[dg.AssetCheckResult]:
        sample = self.invalid.head(20).to_dicts() if self.invalid.height else []
        return [
            dg.AssetCheckResult(
                check_name="ema_values_valid",
                passed=self.invalid.is_empty(),
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "violations": self.invalid.height,
                    "rolled_back": bool(self.invalid.height),
                    "sample": dg.MetadataValue.json(json.loads(json.dumps(sample, default=str))),
                },
            ),
            dg.AssetCheckResult(
                check_name="ema_within_price_bounds",
                passed=self.out_of_bounds == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"violations": self.out_of_bounds, "rows": preview(self._out_of_bounds(), "violations")},
            ),
        ]

    def _out_of_bounds(self) -> pl.DataFrame:
        found = [r.filter(pl.col("violation_type") == "out_of_price_bounds").head(20) for r in self.rejects if r.height]
        if not found:
            return pl.DataFrame()
        return pl.concat(found, how="diagonal_relaxed").select(
            "asset_id", "tf", "period", "trade_date", "value", "bounds"
        )

    def metadata(self) -> dict[str, object]:
        first, last = (str(min(self.dates)), str(max(self.dates))) if self.dates else ("", "")
        rows = pl.concat(self.sample, how="diagonal_relaxed") if self.sample else pl.DataFrame()
        return {
            "run_packed_rows_written": self.packed_rows,
            "run_rejects": sum(r.height for r in self.rejects),
            "first_date": first,
            "last_date": last,
            "preview": preview(rows, "rows written"),
        }


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
    conn: psycopg.Connection,
    family: str,
    timeframes: list[Timeframe],
    retired: list[str],
    periods: list[int],
    starts: dict[int, date],
    end: date,
    bounds: PriceBounds,
    truncated: bool | None = None,
) -> EmaBuild:
    """Rewrite each asset's EMAs of every timeframe from its start date to `end` (rows of retired timeframes
    in that span are removed; `truncated`: as for rewrite_rows). Each group of assets is checked as it is
    stored, so that no more than one group's wide rows are held."""
    rewrite_from = market_store.keys_from(starts, [t.label for t in timeframes])
    # A table truncated for this run holds no row before any start (and, without its index, a lookup per key
    # would scan it).
    carry = (
        pl.DataFrame(schema=carry_schema(periods))
        if truncated
        else ema_store.read_carry(conn, family, rewrite_from, periods)
    )
    v2 = family == "ema_multi_tf_v2"
    grid = ema_store.read_grid(conn, family, market_store.keys_from(starts, [DAILY.label]) if v2 else rewrite_from, end)
    if implausible := implausible_assets(grid, ["close"], bounds):
        raise ImplausibleInput(implausible)
    labels = [t.label for t in market_store.timeframes_in_key_order(conn, timeframes)]
    days = {t.label: t.nominal_days for t in timeframes}
    written, samples, invalid, candidates = [], [], [], []

    def computed() -> Iterator[pl.DataFrame]:
        # A group of assets at a time, in asset order, its timeframes (the grid's, and v2's list) in the key's
        # order, which replace_emas keeps within each date: the server stores one group's rows while the next
        # group's are computed. (An empty grid still makes one empty frame: the checks below read its columns.)
        # v2's grid is the daily rows, each computed once per timeframe: its slices are sized by the rows made.
        size = _STREAM_GRID_ROWS // len(labels) if v2 else _STREAM_GRID_ROWS
        for part, part_carry in stream_slices(grid, carry, size) or [(grid, carry)]:
            if v2:
                wide = v2_ema(per_timeframe(part, labels), days, periods, part_carry)
            else:
                wide = dual_ema(part, days, periods, part_carry)
            written.append(wide.select("asset_id", "trade_date", long_rows=values_per_row(periods)))
            samples.append(ends(wide))
            invalid.append(value_violations(wide, periods))
            candidates.append(price_bound_candidates(wide, periods))
            yield wide

    expected = grid.height * (len(timeframes) if v2 else 1)
    replaced = pl.concat([rewrite_from, market_store.keys_from(starts, retired)])
    packed = ema_store.replace_emas(conn, family, computed(), replaced, periods, end, expected, truncated)
    found, outside = pl.concat(invalid), pl.concat(candidates)
    bounds = price_bound_violations(outside, ema_store.daily_closes(conn, _windows(outside)))
    bounds = bounds.join(outside.select(*GROUP, "period", "trade_date", "close"), on=[*GROUP, "period", "trade_date"])
    rejects = _rejects(found, bounds)
    ema_store.replace_rejects(conn, family, starts, rejects, end)
    sample = ends(samples[0], samples[-1])
    return EmaBuild(pl.concat(written), sample, packed, found, rejects, bounds.height)


def _windows(candidates: pl.DataFrame) -> pl.DataFrame:
    return candidates.select(
        "asset_id",
        "trade_date",
        window_start=pl.col("trade_date") - pl.duration(days=pl.col("period") * pl.col("tf_days") - 1),
    )


def build_ema_assets(settings: Settings, partitions: dg.MonthlyPartitionsDefinition) -> list[dg.AssetsDefinition]:
    last_day = partitions_end(partitions)

    def ema_asset(family: str) -> dg.AssetsDefinition:
        key = EMA_KEYS[family]
        bars = [BAR_KEYS[source] for source in ema_store.EMA_SOURCES[family]]
        # Every family reads the daily closes (its grid and the price bounds) besides its own bars.
        parents = list(dict.fromkeys([BAR_KEYS["1d"], *bars]))

        @derived_series(
            key,
            partitions,
            parents=parents,
            dimensions=[
                dg.AssetDep(DIM_TIMEFRAME, partition_mapping=timeframes_of(timeframe_family(family))),
                DIM_EMA_PERIOD,
            ],
            check_specs=[
                *(
                    dg.AssetCheckSpec(name, asset=key, blocking=name == "ema_values_valid", description=text)
                    for name, text in EMA_CHECKS.items()
                ),
                changes_applied_spec(key),
                quarantine_spec(key),
            ],
            code_version=EMAS_CODE_VERSION,
            description=f"EMAs of every active period (market.dim_ema_period) over the {family} timeframes: "
            "one row per period and daily close from the period's seed on (ema, ema_bar, roll, is_partial_end), "
            f"stored packed in market.{family}_packed and read through the view market.{family}.",
        )
        def emas_of_family(context: dg.AssetExecutionContext, config: EmaConfig, warehouse: Warehouse):
            started = time.perf_counter()
            table = market_store.qualified(family)
            tally, stale = EmaTally(), []
            with warehouse.transaction() as conn:
                periods = ema_store.active_periods(conn)
                timeframes = ema_timeframes(conn, family)
                retired = market_store.retired_timeframes(conn, timeframe_family(family))
                stored = ema_store.stored_periods(conn, family)
                if periods and stored is not None and stored != periods:
                    _require_full_history(context, family)
                    # The arrays are laid out by period: a changed period list rebuilds the family.
                    market_store.mark_dirty(conn, family, ema_store.first_bar_dates(conn, None))
                if periods and stored != periods:
                    ema_store.set_periods(conn, family, periods)
                run = start_family_run(context, conn, family, "price_bars_1d", config.asset_ids)
                if not config.skip_stale_check and run.plan.starts:
                    hours = config.staleness_hours or settings.market_staleness_hours
                    stale = stale_assets(conn, list(run.plan.starts), hours, datetime.now(UTC))
                    run.plan = restrict(run.plan, set(run.plan.starts) - set(stale))
                freshness = bars_fresh_result(conn, stale, config.skip_stale_check)
                stale_symbols = freshness.metadata["stale_symbols"].value
                labels = [t.label for t in timeframes]
                columns = [*ema_store.PACKED_COLUMNS, "ema", "ema_bar"]
                ends = EndStates(conn, run, ema_store.packed_table(family), "price_bars_1d", labels, columns, last_day)
                if periods and timeframes:

                    def write(truncated: bool | None) -> EmaTally:
                        tally = EmaTally()

                        def rebuild(starts: dict[int, date]) -> EmaBuild:
                            end, bounds = run.window.end, settings.price_bounds
                            return _rebuild_emas(
                                conn, family, timeframes, retired, periods, starts, end, bounds, truncated
                            )

                        for chunk in asset_chunks(context, conn, "price_bars_1d", run.plan.starts, run.window.end):
                            for built in build_quarantining(conn, run, chunk, rebuild, truncated):
                                tally.add(built)
                                run.record_written(built.written, "long_rows")
                        return tally

                    def rewrite() -> AbstractContextManager[bool]:
                        replaced = market_store.keys_from(run.plan.starts, [*labels, *retired])
                        return ema_store.emas_truncated_if_replaced(conn, family, replaced, run.window.end)

                    tally = written_in_groups(conn, run, rewrite, write)
                settle(conn, run, ends.changed(conn))
                if tally.invalid.height:
                    # Invalid values never replace stored ones; their rejects are kept to show why.
                    conn.rollback()
                    run.requeued = set()
                    ema_store.replace_rejects(
                        conn, family, run.plan.starts, pl.concat(tally.rejects, how="diagonal_relaxed"), run.window.end
                    )
                    conn.commit()
                    outcome = selected_checks(context, [*tally.check_results(), freshness])
                else:
                    metadata = {
                        **tally.metadata(),
                        "stale_assets_waiting": dg.MetadataValue.json(
                            [f"{i} ({name})" for i, name in zip(stale, stale_symbols, strict=True)]
                        ),
                        "periods": ", ".join(map(str, periods)),
                        "seconds": round(time.perf_counter() - started, 3),
                    }
                    checks = [*tally.check_results(), freshness]
                    outcome = [materialization(context, conn, run, table, metadata, checks)]
            announce_requeued(context, run)
            yield from outcome

        return emas_of_family

    return [ema_asset(family) for family in ema_store.EMA_FAMILIES]


def _require_full_history(context: dg.AssetExecutionContext, family: str) -> None:
    """A changed period list relays out every stored row: only a run over all months may do it."""
    if context.partition_key_range.start != context.assets_def.partitions_def.get_first_partition_key():
        raise dg.Failure(
            f"market.dim_ema_period changed since {family} was built: its rows must be rebuilt over all months, "
            "from the first partition (automation does it when it sees the change; or materialize every "
            "partition, or run `trading-assets refresh --emas --full-rebuild`)"
        )
