"""When market data runs by itself: price files landing, and the daily refresh of the current month."""

from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from trading_assets.config import Settings
from trading_assets.defs.landing import landing_sensor
from trading_assets.defs.market.assets import BAR_KEYS, PRICE_HISTORIES, prices_landing_dir
from trading_assets.defs.market.checks import MARKET_CHECKS
from trading_assets.defs.market.ema_checks import EMA_TABLE_CHECKS
from trading_assets.defs.market.emas import EMA_KEYS
from trading_assets.defs.partitions import key_range_for_dates, range_tags
from trading_assets.sources.price_files import read_price_file

# The checks that read whole tables run in the validate job's own schedule, not in every refresh.
MARKET_ASSETS = dg.AssetSelection.assets(
    PRICE_HISTORIES, *BAR_KEYS.values(), *EMA_KEYS.values()
) - dg.AssetSelection.checks(*MARKET_CHECKS, *EMA_TABLE_CHECKS)


def daily_refresh_range(partitions: dg.TimeWindowPartitionsDefinition, today: date) -> tuple[str, str]:
    """The current month, and early in a month the previous one too (late rows of its last days)."""
    return key_range_for_dates(partitions, today - timedelta(days=3), today)


def build_market_automation(
    settings: Settings, partitions: dg.MonthlyPartitionsDefinition
) -> tuple[list[dg.ScheduleDefinition], list[dg.SensorDefinition]]:
    @dg.schedule(
        name="market_daily",
        cron_schedule="0 6 * * *",
        execution_timezone="UTC",
        target=MARKET_ASSETS,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Loads waiting price files and brings every bar and EMA family up to date (new and dirty days "
        "only).",
    )
    def market_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        today = context.scheduled_execution_time.date()
        return dg.RunRequest(run_key=f"market_daily:{today}", tags=range_tags(*daily_refresh_range(partitions, today)))

    def price_span(files: list[Path]) -> tuple[date, date]:
        dates = [d for f in files for d in read_price_file(f).prices["trade_date"].to_list()]
        return min(dates), max(dates)

    prices_landed = landing_sensor(
        name="price_files_landed",
        folder=prices_landing_dir(settings),
        asset_key=PRICE_HISTORIES,
        partitions=partitions,
        op_config=lambda files: {"files": [{"path": str(p), "symbol": p.stem.upper()} for p in files]},
        date_span=price_span,
        description="Loads price CSVs dropped into the landing folder's prices/ directory (symbol = file name); "
        "the bars follow by automation.",
    )
    return [market_daily], [prices_landed]
