"""The one monthly partitioning shared by every time-series asset (DESIGN §4), and what a run over a range
of its partitions owns."""

from datetime import date

import dagster as dg

from trading_assets.compute.rebuild import Window
from trading_assets.config import Settings

# Run tag choosing what a run of a derived market asset rewrites inside its window: `changed` = only the
# dates whose inputs changed (automation, schedules, `refresh`); absent or `all` = every row of the window
# (a materialization launched from the UI recomputes exactly the partitions it names).
REBUILD_TAG = "trading_assets/rebuild"
# Set by a run whose rewrite changed the state the rows after its window continue from: automation then
# rebuilds those later partitions.
CARRY_CHANGED_TAG = "trading_assets/carry_changed"
# How far back a month of a derived series reads its parents: beyond the longest block any family forms
# (365 daily rows of an exchange calendar are about 17 months, a calendar year 12). Earlier history reaches a
# month through the carry, its own earlier rows. Dagster walks a partition mapping one month at a time on
# every step of every run, so "every earlier month" (37 years from 1990) cost the daily refresh its speed.
HISTORY_HORIZON_MONTHS = 60


def monthly_partitions(settings: Settings) -> dg.MonthlyPartitionsDefinition:
    """Months in UTC from TRADING_ASSETS_START_DATE up to and including the current month."""
    return dg.MonthlyPartitionsDefinition(
        start_date=settings.start_date.replace(day=1).isoformat(), timezone="UTC", end_offset=1
    )


def history_mapping() -> dg.TimeWindowPartitionMapping:
    """A month of a derived series depends on its parent's months up to and including it, as far back as a
    multi-day block or calendar period can start (HISTORY_HORIZON_MONTHS)."""
    return dg.TimeWindowPartitionMapping(start_offset=-HISTORY_HORIZON_MONTHS)


def carry_mapping() -> dg.TimeWindowPartitionMapping:
    """The self-dependency of a derived series: a run continues from its stored rows before its window. A
    change older than the horizon reaches later months through it: the run that rewrote the earlier months
    requeues the later ones (CARRY_CHANGED_TAG) and automation follows, horizon by horizon."""
    return dg.TimeWindowPartitionMapping(start_offset=-HISTORY_HORIZON_MONTHS, end_offset=-1)


def partition_key_for(day: date) -> str:
    return day.replace(day=1).isoformat()


def run_window(context: dg.AssetExecutionContext) -> Window:
    """Dates `[start, end)` this run owns; the first partition also owns everything before it."""
    window = context.partition_time_window
    partitions_def = context.assets_def.partitions_def
    first_key = partitions_def.get_first_partition_key() if partitions_def else None
    start = None if context.partition_key_range.start == first_key else window.start.date()
    return Window(start, window.end.date())


def recomputes_window(context: dg.AssetExecutionContext) -> bool:
    """Whether this run rewrites every row of its window, or only what changed (see REBUILD_TAG)."""
    return context.run.tags.get(REBUILD_TAG, "all") != "changed"


def range_tags(first_key: str, last_key: str) -> dict[str, str]:
    """Run tags that make one run materialize the partitions first_key..last_key (single-run backfill)."""
    return {
        "dagster/asset_partition_range_start": first_key,
        "dagster/asset_partition_range_end": last_key,
    }


def partitions_end(partitions_def: dg.TimeWindowPartitionsDefinition) -> date:
    """The first day after the last partition."""
    last_key = partitions_def.get_last_partition_key()
    assert last_key is not None
    return partitions_def.time_window_for_partition_key(last_key).end.date()


def key_range_for_dates(partitions_def: dg.TimeWindowPartitionsDefinition, first: date, last: date) -> tuple[str, str]:
    """Partition keys covering `first..last`, clamped to the partitions that exist."""
    keys = partitions_def.get_partition_keys()

    def clamp(day: date) -> str:
        return min(max(partition_key_for(day), keys[0]), keys[-1])

    return clamp(first), clamp(max(first, last))
