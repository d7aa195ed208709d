"""One run of a derived market table (a bar or EMA family) over its window of dates.

The run rewrites, per asset, from a first date to the window's end, continuing from the stored rows before
that date (the self-dependency its asset declares). What it rewrites comes from the change marks of
`market.bars_dirty` (every load, revision and dimension edit leaves one) and, unless the run only applies
changes, every asset with rows in the window. It never writes outside its window: changes before the
window wait for a run that starts there, and when a rewrite changed the rows the later partitions continue
from, the asset is queued again from the window's end and the run says so with a tag that automation
follows (`CARRY_CHANGED_TAG`).
"""

import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TypeVar

import dagster as dg
import polars as pl
import psycopg
from psycopg import sql

from trading_assets.compute.rebuild import RebuildPlan, Window, plan_rebuild, restrict
from trading_assets.defs.partitions import (
    CARRY_CHANGED_TAG,
    carry_mapping,
    history_mapping,
    recomputes_window,
    run_window,
)
from trading_assets.defs.table_metadata import report_partitions, table_metadata
from trading_assets.io import ema_store, market_store, row_counts

CHANGES_APPLIED = "changes_applied"
NO_ASSET_QUARANTINED = "no_asset_quarantined"
Built = TypeVar("Built")
_WRITTEN_BY_ASSET = {"asset_id": pl.Int64, "rows": pl.Int64, "first_date": pl.Date, "last_date": pl.Date}


@dataclass
class FamilyRun:
    """What one run of `family` (its name in the change queue) rewrites, and what it found on the way."""

    family: str
    window: Window
    plan: RebuildPlan
    run_id: str
    written: list[pl.DataFrame] = field(default_factory=list)
    written_by_asset: list[pl.DataFrame] = field(default_factory=list)
    requeued: set[int] = field(default_factory=set)
    # Assets left out because their input broke or would corrupt the build (asset -> why); their changes wait.
    quarantined: dict[int, str] = field(default_factory=dict)
    quarantined_from: dict[int, date] = field(default_factory=dict)
    waited_seconds: float = 0.0
    # Families this one feeds: their marks are locked at the start and set by settle().
    feeds: list[str] = field(default_factory=list)

    def quarantine(self, reasons: dict[int, str]) -> None:
        self.quarantined |= reasons
        self.quarantined_from |= {a: self.plan.starts[a] for a in reasons if a in self.plan.starts}
        self.plan = restrict(self.plan, set(self.plan.starts) - set(self.quarantined))

    def record_written(self, frame: pl.DataFrame, weight: str | None = None) -> None:
        self.written.append(row_counts.rows_by_month(frame, weight))
        self.written_by_asset.append(
            frame.group_by("asset_id").agg(
                rows=(pl.col(weight).sum() if weight else pl.len()).cast(pl.Int64),
                first_date=pl.col("trade_date").min(),
                last_date=pl.col("trade_date").max(),
            )
        )

    @property
    def written_by_month(self) -> pl.DataFrame:
        return pl.concat([pl.DataFrame(schema=row_counts.MONTH_ROWS), *self.written])

    def metadata(self) -> dict[str, object]:
        waiting = sorted(self.plan.waiting.items())
        return {
            "assets_rebuilt": len(self.plan.starts),
            "run_rows_written": int(self.written_by_month["rows"].sum()),
            "window": f"{self.window.start or 'start of history'} .. {self.window.end} (excluded)",
            # Changes before the window: these assets' rows in it still stand on the earlier state.
            "changes_waiting_before_window": dg.MetadataValue.json(
                {str(asset): str(day) for asset, day in waiting[:50]}
            ),
            "requeued_after_window": len(self.requeued),
            "quarantined_assets": len(self.quarantined),
            "waited_for_other_run_seconds": self.waited_seconds,
        }


class ImplausibleInput(Exception):
    """The input rows of these assets (asset -> why) are outside the plausible bounds."""

    def __init__(self, reasons: dict[int, str]) -> None:
        super().__init__(f"implausible input for assets {sorted(reasons)}")
        self.reasons = reasons


class WholeRewriteAbandoned(Exception):
    """An asset of a run that replaces every row of its table failed to build: the truncated table no longer
    holds the rows it must keep, so the run writes its groups again, each on its own (see written_in_groups)."""


def written_in_groups(
    conn: psycopg.Connection,
    run: FamilyRun,
    rewrite: Callable[[], AbstractContextManager[bool]],
    write: Callable[[bool | None], Built],
) -> Built:
    """`write(truncated)`: every group of the run's assets written (`truncated` for rewrite_rows and
    build_quarantining), the whole-table question asked once for the run by `rewrite()`
    (market_store.truncated_if_replaced).

    When the run replaces every row, the table is truncated once and its groups are written with frozen rows
    and without savepoints, the indexes built at the end (asked per group, a run of several groups would
    replace only a group's rows each time: deleted and inserted through the indexes). An asset that fails
    to build then undoes it all (a savepoint taken before the truncate), and the groups are written again as
    they always were, `write(None)`: each decides alone, and the asset is quarantined with its rows kept.
    """
    written, written_by_asset = list(run.written), list(run.written_by_asset)
    try:
        with conn.transaction(), rewrite() as truncated:
            return write(truncated)
    except WholeRewriteAbandoned:
        run.written, run.written_by_asset = written, written_by_asset
        return write(None)


def build_quarantining(
    conn: psycopg.Connection,
    run: FamilyRun,
    chunk: dict[int, date],
    build: Callable[[dict[int, date]], Built],
    truncated: bool | None = None,
) -> list[Built]:
    """`build(chunk)` in a savepoint. Assets whose input is implausible (ImplausibleInput) are quarantined:
    left out with the reason, their changes left queued, while every other asset's rows are written. When the
    build fails otherwise, the assets are built one by one and those that fail alone are quarantined; but if
    none builds, in this group or before it, the fault is the run's, not an asset's, and the run fails (a
    materialization that wrote nothing would say the months are consistent). A lost connection ends the run.

    In a run that truncated its table (`truncated`), there is no savepoint and no quarantine: any failure but a
    lost connection abandons the whole-table rewrite (WholeRewriteAbandoned)."""
    if truncated:
        try:
            return [build(chunk)]
        except (psycopg.OperationalError, psycopg.errors.QueryCanceled):
            raise
        except Exception as exc:
            raise WholeRewriteAbandoned(str(exc)) from exc
    pending = dict(chunk)
    while pending:
        try:
            with conn.transaction():
                return [build(pending)]
        except ImplausibleInput as exc:
            run.quarantine(exc.reasons)
            pending = {a: d for a, d in pending.items() if a not in exc.reasons}
        except (psycopg.OperationalError, psycopg.errors.QueryCanceled):
            raise
        except Exception:
            built, failed = [], {}
            for asset, day in pending.items():
                try:
                    with conn.transaction():
                        built.append(build({asset: day}))
                except ImplausibleInput as alone:
                    run.quarantine(alone.reasons)
                except (psycopg.OperationalError, psycopg.errors.QueryCanceled):
                    raise
                except Exception as alone:
                    failed[asset] = f"{type(alone).__name__}: {alone}"
            if failed and not built and not run.written_by_asset:
                raise
            run.quarantine(failed)
            return built
    return []


def quarantine_spec(key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        NO_ASSET_QUARANTINED,
        asset=key,
        description="no asset was left out of the run because its input is implausible (a price or date outside "
        "the bounds, edited into a parent table) or broke the computation; the others were written, the "
        "quarantined assets' changes wait, named with the reason",
    )


def _quarantine_result(conn: psycopg.Connection, run: FamilyRun) -> dg.AssetCheckResult:
    assets = sorted(run.quarantined)
    named = {
        f"{asset} ({symbol})": run.quarantined[asset]
        for asset, symbol in zip(assets, market_store.symbols_of(conn, assets), strict=True)
    }
    return dg.AssetCheckResult(
        check_name=NO_ASSET_QUARANTINED,
        passed=not named,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "quarantined": dg.MetadataValue.json(named),
            **({"alert": "; ".join(f"{name}: {why}" for name, why in list(named.items())[:10])} if named else {}),
        },
    )


def start_family_run(
    context: dg.AssetExecutionContext,
    conn: psycopg.Connection,
    family: str,
    source: str,
    asset_ids: list[int],
) -> FamilyRun:
    """Lock `family` for this transaction and plan its rewrite: pending changes inside the window, and (unless
    the run only applies changes) every asset with rows of `source` in it; `asset_ids` limits it. The marks of
    the families it feeds are locked too, before any table is read (market_store.lock_marks)."""
    waited = _lock_family(context, conn, family)
    window = run_window(context)
    marks = market_store.pending_marks(conn, family)
    feeds = _fed_by(family)
    market_store.lock_marks(conn, feeds)
    recompute = market_store.assets_with_rows(conn, source, window) if recomputes_window(context) else None
    plan = restrict(plan_rebuild(marks, window, recompute), asset_ids or None)
    return FamilyRun(family, window, plan, context.run_id, waited_seconds=waited, feeds=feeds)


def _fed_by(family: str) -> list[str]:
    """The families built from `family`'s rows: the daily bars feed the multi-day bars, and every bar family
    its EMA families; EMA families feed none."""
    if family not in market_store.BAR_TABLES:
        return []
    return [*(market_store.MULTI_FAMILIES if family == "1d" else []), *ema_store.EMAS_OF_BARS[family]]


def _lock_family(context: dg.AssetExecutionContext, conn: psycopg.Connection, family: str) -> float:
    """Take the family's write lock for this transaction: runs writing one family take turns (a second full
    rebuild waits for the first, then plans on its result). Returns the seconds waited, and says so."""
    key = f"market.bars_dirty:{family}"
    if conn.execute("select pg_try_advisory_xact_lock(hashtext(%s))", (key,)).fetchone()[0]:
        return 0.0
    context.log.info(f"{family}: another run is writing it; waiting for it to finish")
    started = time.perf_counter()
    conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (key,))
    waited = round(time.perf_counter() - started, 3)
    context.log.warning(f"{family}: waited {waited:.1f}s for another run writing it")
    return waited


class EndStates:
    """The last stored row before the window's end of each rebuilt (asset, timeframe) that has rows after the
    window: when a rewrite changes it, the later rows no longer follow from it."""

    def __init__(
        self,
        conn: psycopg.Connection,
        run: FamilyRun,
        table: sql.Composable,
        source: str,
        timeframes: list[str],
        columns: list[str],
        last_day: date,
    ) -> None:
        self._table, self._columns, self._end = table, columns, run.window.end
        later = (
            market_store.assets_with_rows_from(conn, source, sorted(run.plan.starts), run.window.end)
            if run.window.end < last_day and run.plan.starts
            else []
        )
        self._keys = pl.DataFrame({"asset_id": later}, schema={"asset_id": pl.Int64}).join(
            pl.DataFrame({"tf": timeframes}, schema={"tf": pl.String}), how="cross"
        )
        self._before = self._read(conn)

    def _read(self, conn: psycopg.Connection) -> pl.DataFrame:
        if self._keys.is_empty():
            return pl.DataFrame(schema={"asset_id": pl.Int64, "tf": pl.String, "state": pl.String})
        return market_store.end_states(conn, self._table, self._keys, self._end, self._columns)

    def changed(self, conn: psycopg.Connection) -> set[int]:
        return market_store.changed_states(self._before, self._read(conn))


def settle(conn: psycopg.Connection, run: FamilyRun, changed_at_end: set[int]) -> None:
    """Remove the marks the run applied, queue assets whose later rows must follow a changed state, mark the
    families it feeds from each rebuilt asset's start, and record what the run did for each asset it rebuilt
    (market.refresh_state)."""
    run.requeued = changed_at_end
    market_store.settle_marks(conn, run.family, set(run.plan.settled), dict.fromkeys(changed_at_end, run.window.end))
    market_store.mark_dirty(conn, run.family, run.quarantined_from)
    for family in run.feeds:
        market_store.mark_dirty(conn, family, run.plan.starts)
    rebuilt = pl.DataFrame({"asset_id": sorted(run.plan.starts)}, schema={"asset_id": pl.Int64})
    written = (
        pl.concat([pl.DataFrame(schema=_WRITTEN_BY_ASSET), *(w.cast(_WRITTEN_BY_ASSET) for w in run.written_by_asset)])
        .group_by("asset_id")
        .agg(pl.col("rows").sum(), pl.col("first_date").min(), pl.col("last_date").max())
    )
    state = rebuilt.join(written, on="asset_id", how="left").with_columns(pl.col("rows").fill_null(0))
    market_store.record_refresh_state(conn, run.family, run.run_id, state)


def announce_requeued(context: dg.AssetExecutionContext, run: FamilyRun) -> None:
    """After commit: tag the run so that automation rebuilds the partitions after its window."""
    if run.requeued:
        context.instance.add_run_tags(context.run_id, {CARRY_CHANGED_TAG: "true"})


_CARRY_CHANGED_EARLIER = dg.AutomationCondition.newly_updated() & dg.AutomationCondition.executed_with_tags(
    tag_values={CARRY_CHANGED_TAG: "true"}
)


def follow_history(key: dg.AssetKey) -> dg.AutomationCondition:
    """Follow every change of the parents, in any month (eager() looks at the latest month only), never past
    a failed blocking check of a parent or a run in progress; also rebuild the months after a run whose
    rewrite changed what they continue from (its own earlier partitions, tagged by that run)."""
    own = dg.AssetSelection.assets(key)
    carry_changed = (
        dg.AutomationCondition.any_deps_match(_CARRY_CHANGED_EARLIER).allow(own)
        & ~dg.AutomationCondition.newly_updated()
    )
    return (
        (dg.AutomationCondition.any_deps_updated() | carry_changed).since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        # Its own earlier months are a dependency too, but their checks are the ones its runs re-evaluate.
        & dg.AutomationCondition.all_deps_blocking_checks_passed().ignore(own)
    ).with_label("follow_history")


# Refreshed after the day's closes (crypto 00:00 UTC, US equities 21:00 UTC): by 07:00 UTC, by a run that
# started after 01:00 UTC. The daily schedule runs at 06:00.
MARKET_FRESHNESS = dg.FreshnessPolicy.cron(deadline_cron="0 7 * * *", lower_bound_delta=timedelta(hours=6))


def derived_series(
    key: dg.AssetKey,
    partitions: dg.MonthlyPartitionsDefinition,
    parents: Iterable[dg.AssetKey],
    dimensions: Iterable[dg.AssetKey | dg.AssetDep],
    check_specs: list[dg.AssetCheckSpec],
    code_version: str,
    description: str,
) -> Callable[[Callable], dg.AssetsDefinition]:
    """The decorator of a derived market table: monthly, each month depending on its parents' months up to it
    and on its own earlier months (the carry), with its checks evaluated in the asset.

    A multi-asset that can run without some of its checks: Dagster would otherwise schedule the checks with
    every requested month and widen the request through the self-dependency to every earlier month.
    """
    return dg.multi_asset(
        name="__".join(key.path),
        specs=[
            dg.AssetSpec(
                key,
                deps=[
                    *(dg.AssetDep(parent, partition_mapping=history_mapping()) for parent in parents),
                    dg.AssetDep(key, partition_mapping=carry_mapping()),
                    *dimensions,
                ],
                group_name=key.path[0],
                kinds={"postgres", "polars"},
                code_version=code_version,
                freshness_policy=MARKET_FRESHNESS,
                automation_condition=follow_history(key),
                description=description,
                # A run whose writes are rolled back reports its failed checks and no materialization.
                skippable=True,
            )
        ],
        check_specs=check_specs,
        can_subset=True,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
    )


def selected_checks(
    context: dg.AssetExecutionContext, results: Iterable[dg.AssetCheckResult]
) -> list[dg.AssetCheckResult]:
    """The results of the checks this run selected (a run may leave some out)."""
    key = context.assets_def.key
    return [r for r in results if dg.AssetCheckKey(key, r.check_name) in context.selected_asset_check_keys]


def changes_applied_spec(key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        CHANGES_APPLIED,
        asset=key,
        description="no change (load, revision, dimension edit) waits for this table after the run "
        "(market.bars_dirty); a WARN lists what waits: changes before the run's window, after it, left out by "
        "asset selection or held back (EMAs on stale bars)",
    )


def _changes_applied(conn: psycopg.Connection, family: str) -> dg.AssetCheckResult:
    waiting = market_store.pending_marks(conn, family)
    shown = sorted(waiting)[:20]
    return dg.AssetCheckResult(
        check_name=CHANGES_APPLIED,
        passed=not waiting,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "assets_waiting": len(waiting),
            "waiting_since": dg.MetadataValue.json(
                {symbol: str(waiting[a]) for a, symbol in zip(shown, market_store.symbols_of(conn, shown), strict=True)}
            ),
        },
    )


def materialization(
    context: dg.AssetExecutionContext,
    conn: psycopg.Connection,
    run: FamilyRun,
    table: str,
    metadata: dict[str, object],
    checks: list[dg.AssetCheckResult],
) -> dg.MaterializeResult:
    """The materialization of a run that keeps its writes: per partition, rows written and rows now; for the
    run, the table, what it rewrote and what still waits."""
    described = {**table_metadata(conn, table, row_counts.table_rows(conn, table)), **run.metadata(), **metadata}
    return dg.MaterializeResult(
        metadata=report_partitions(context, row_counts.rows_per_month(conn, table), run.written_by_month, described),
        check_results=selected_checks(
            context, [*checks, _changes_applied(conn, run.family), _quarantine_result(conn, run)]
        ),
    )
