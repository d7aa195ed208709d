"""The code location: Definitions assembled from the domains, with the environment decided here, once."""

import dagster as dg

from trading_assets.config import Settings
from trading_assets.defs.catalog.assets import build_catalog_assets
from trading_assets.defs.catalog.checks import CATALOG_CHECKS
from trading_assets.defs.market.assets import build_market_assets
from trading_assets.defs.market.automation import build_market_automation
from trading_assets.defs.market.checks import MARKET_CHECKS
from trading_assets.defs.market.ema_checks import EMA_TABLE_CHECKS, build_freshness_gate
from trading_assets.defs.market.emas import build_ema_assets
from trading_assets.defs.metadata.assets import build_series_assets
from trading_assets.defs.metadata.automation import build_series_automation
from trading_assets.defs.metadata.checks import SERIES_CHECKS
from trading_assets.defs.ops.alerts import build_alert_sensors
from trading_assets.defs.partitions import monthly_partitions
from trading_assets.defs.resources import Warehouse

# Jobs the CLI and the UI share.
VALIDATE_JOB = "validate_all_checks"


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions = monthly_partitions(settings)
    series_schedules, series_sensors = build_series_automation(settings, partitions)
    market_schedules, market_sensors = build_market_automation(settings, partitions)
    warehouse = Warehouse(
        # An EnvVar keeps a password out of the run config the UI displays.
        database_url=dg.EnvVar("TRADING_ASSETS_DATABASE_URL") if settings.database_url else None,
        pgdata=str(settings.embedded_pgdata),
    )
    # Checks that read whole tables; the blocking invariants of bars and EMAs run inside their assets.
    validate_job = dg.define_asset_job(
        VALIDATE_JOB,
        selection=dg.AssetSelection.checks(*SERIES_CHECKS, *MARKET_CHECKS, *EMA_TABLE_CHECKS, *CATALOG_CHECKS),
    )
    return dg.Definitions(
        assets=[
            *build_series_assets(settings, partitions),
            *build_market_assets(settings, partitions),
            *build_ema_assets(settings, partitions),
            *build_catalog_assets(settings),
        ],
        asset_checks=[
            *SERIES_CHECKS,
            *MARKET_CHECKS,
            build_freshness_gate(settings),
            *EMA_TABLE_CHECKS,
            *CATALOG_CHECKS,
        ],
        schedules=[
            *series_schedules,
            *market_schedules,
            dg.ScheduleDefinition(
                name="validate_daily",
                job=validate_job,
                cron_schedule="30 6 * * *",
                execution_timezone="UTC",
                default_status=dg.DefaultScheduleStatus.RUNNING,
                description="Every table-wide check, after the daily refreshes.",
            ),
        ],
        sensors=[
            *series_sensors,
            *market_sensors,
            *build_alert_sensors(settings),
            dg.AutomationConditionSensorDefinition(
                "trading_assets_automation",
                target=dg.AssetSelection.all(),
                default_status=dg.DefaultSensorStatus.RUNNING,
            ),
        ],
        jobs=[validate_job],
        resources={"warehouse": warehouse},
        # Steps share one process: on two cores a subprocess per step costs more than it saves.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env())
