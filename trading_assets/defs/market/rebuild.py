"""One run of a derived market table (a bar or EMA family) over its window of dates.

The run rewrites, per asset, from a first date to the window's end, continuing from the stored rows before
that date (the self-dependency its asset declares). What it rewrites comes from the change marks of
`market.bars_dirty` (every load, revision and dimension edit leaves one) and, unless the run only applies
changes, every asset with rows in the window. It never writes outside its window: changes before the
window wait for a run that starts there, and when a rewrite changed the rows the later partitions continue
from, the asset is queued again from the window's end and the run says so with a tag that automation
follows (`CARRY_CHANGED_TAG`).
"""

from dataclasses import dataclass, field
from datetime import date

import dagster as dg
import polars as pl
import psycopg
from psycopg import sql

from trading_assets.compute.rebuild import RebuildPlan, Window, plan_rebuild, restrict
from trading_assets.defs.partitions import CARRY_CHANGED_TAG, recomputes_window, run_window
from trading_assets.io import market_store, row_counts


@dataclass
class FamilyRun:
    """What one run of `family` (its name in the change queue) rewrites, and what it found on the way."""

    family: str
    window: Window
    plan: RebuildPlan
    written: list[pl.DataFrame] = field(default_factory=list)
    requeued: set[int] = field(default_factory=set)

    def record_written(self, frame: pl.DataFrame, weight: str | None = None) -> None:
        self.written.append(row_counts.rows_by_month(frame, weight))

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
        }


def start_family_run(
    context: dg.AssetExecutionContext,
    conn: psycopg.Connection,
    family: str,
    source: str,
    asset_ids: list[int],
) -> FamilyRun:
    """Lock `family` for this transaction and plan its rewrite: pending changes inside the window, and (unless
    the run only applies changes) every asset with rows of `source` in it; `asset_ids` limits it."""
    conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"market.bars_dirty:{family}",))
    window = run_window(context)
    marks = market_store.pending_marks(conn, family)
    recompute = market_store.assets_with_rows(conn, source, window) if recomputes_window(context) else None
    plan = restrict(plan_rebuild(marks, window, recompute), asset_ids or None)
    return FamilyRun(family, window, plan)


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
    """Remove the marks the run applied and queue assets whose later rows must follow a changed state."""
    run.requeued = changed_at_end
    market_store.settle_marks(conn, run.family, set(run.plan.settled), dict.fromkeys(changed_at_end, run.window.end))


def announce_requeued(context: dg.AssetExecutionContext, run: FamilyRun) -> None:
    """After commit: tag the run so that automation rebuilds the partitions after its window."""
    if run.requeued:
        context.instance.add_run_tags(context.run_id, {CARRY_CHANGED_TAG: "true"})
