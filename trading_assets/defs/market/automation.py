"""When market data runs by itself: price files landing, and the daily refresh."""

from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from trading_assets.compute.validation import symbol_of
from trading_assets.config import Settings
from trading_assets.defs.jobs import LOAD_PRICES_JOB, MARKET_DAILY_JOB
from trading_assets.defs.landing import landing_sensor
from trading_assets.defs.market.assets import PriceFileSpec, price_span, prices_landing_dir
from trading_assets.defs.partitions import REBUILD_TAG, key_range_for_dates, range_tags
from trading_assets.io import market_store
from trading_assets.io.database import ready_database_url
from trading_assets.io.postgres import connect


def daily_refresh_range(
    partitions: dg.TimeWindowPartitionsDefinition, today: date, pending_since: date | None
) -> tuple[str, str]:
    """The current month (early in a month the previous one too, for late rows of its last days), from the
    month of the earliest change still waiting for the bars if that is earlier."""
    first = today - timedelta(days=3)
    return key_range_for_dates(partitions, min(first, pending_since or first), today)


def pending_bar_changes(settings: Settings) -> date | None:
    """The earliest date from which a bar family has changes waiting (market.bars_dirty)."""
    with connect(ready_database_url(settings.database_url, settings.embedded_pgdata)) as conn:
        return market_store.earliest_pending(conn, list(market_store.BAR_TABLES))


def build_market_automation(
    settings: Settings, partitions: dg.MonthlyPartitionsDefinition
) -> tuple[list[dg.ScheduleDefinition], list[dg.SensorDefinition]]:
    @dg.schedule(
        name="market_daily",
        cron_schedule="0 6 * * *",
        execution_timezone="UTC",
        job_name=MARKET_DAILY_JOB,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Loads waiting price files and brings every bar and EMA family up to date: the new and "
        "changed days of the current month, and of earlier months with changes still waiting for the bars.",
    )
    def market_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        today = context.scheduled_execution_time.date()
        first_key, last_key = daily_refresh_range(partitions, today, pending_bar_changes(settings))
        return dg.RunRequest(
            run_key=f"market_daily:{today}", tags={**range_tags(first_key, last_key), REBUILD_TAG: "changed"}
        )

    def landed_span(files: list[Path]) -> tuple[date, date]:
        specs = [PriceFileSpec(path=str(p), symbol=symbol_of(p.stem)) for p in files]
        with connect(ready_database_url(settings.database_url, settings.embedded_pgdata)) as conn:
            span = price_span(conn, specs, settings.price_bounds)
        if span is None:
            raise ValueError("no usable price rows")
        return span

    prices_landed = landing_sensor(
        name="price_files_landed",
        folder=prices_landing_dir(settings),
        job_name=LOAD_PRICES_JOB,
        op_name="market__price_histories",
        partitions=partitions,
        op_config=lambda files: {"files": [{"path": str(p), "symbol": symbol_of(p.stem)} for p in files]},
        date_span=landed_span,
        description="Loads price CSVs dropped into the landing folder's prices/ directory (symbol = file name); "
        "the bars and EMAs follow by automation, over every month the files changed.",
    )
    return [market_daily], [prices_landed]
