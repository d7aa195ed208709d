"""The one monthly partitioning shared by every time-series asset (DESIGN §4)."""

from datetime import date

import dagster as dg

from trading_assets.config import Settings


def monthly_partitions(settings: Settings) -> dg.MonthlyPartitionsDefinition:
    """Months in UTC from TRADING_ASSETS_START_DATE up to and including the current month."""
    return dg.MonthlyPartitionsDefinition(
        start_date=settings.start_date.replace(day=1).isoformat(), timezone="UTC", end_offset=1
    )


def partition_key_for(day: date) -> str:
    return day.replace(day=1).isoformat()


def run_date_window(context: dg.AssetExecutionContext) -> tuple[date | None, date]:
    """Dates `[start, end)` this run owns; the first partition also owns everything before it."""
    window = context.partition_time_window
    partitions_def = context.assets_def.partitions_def
    first_key = partitions_def.get_first_partition_key() if partitions_def else None
    start = None if context.partition_key_range.start == first_key else window.start.date()
    return start, window.end.date()


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
