"""The code location: Definitions assembled from the domains, with the environment decided here, once."""

import dagster as dg

from trading_assets.config import Settings
from trading_assets.defs.catalog.assets import build_catalog_assets
from trading_assets.defs.catalog.checks import CATALOG_CHECKS
from trading_assets.defs.catalog.schedule import build_catalog_schedule
from trading_assets.defs.executors import build_executor
from trading_assets.defs.jobs import MARKET_WRITER, REFERENCE_JOB, VALIDATE_JOB, build_jobs
from trading_assets.defs.market.assets import build_market_assets
from trading_assets.defs.market.automation import build_market_automation
from trading_assets.defs.market.checks import MARKET_CHECKS
from trading_assets.defs.market.corporate_actions import (
    REFERENCE_CHECKS,
    build_reference_assets,
    build_reference_sensor,
)
from trading_assets.defs.market.dimensions import build_dimension_assets, build_dimension_sensor
from trading_assets.defs.market.ema_checks import EMA_TABLE_CHECKS, build_freshness_gate
from trading_assets.defs.market.emas import build_ema_assets
from trading_assets.defs.market.row_count_checks import ROW_COUNT_CHECKS
from trading_assets.defs.metadata.assets import build_series_assets
from trading_assets.defs.metadata.automation import build_series_automation
from trading_assets.defs.metadata.checks import SERIES_CHECKS
from trading_assets.defs.ops.alerts import build_alert_sensors
from trading_assets.defs.ops.calendar import build_calendar
from trading_assets.defs.ops.maintenance import (
    build_backups,
    build_compression_report,
    build_retention,
    build_table_sizes,
    build_vacuum_reindex,
)
from trading_assets.defs.ops.run_log import build_clean_logs
from trading_assets.defs.partitions import REBUILD_TAG, monthly_partitions
from trading_assets.defs.resources import Warehouse
from trading_assets.defs.stage1.datasets import build_dataset_assets, read_dataset_specs
from trading_assets.defs.stage1.spool import build_spool_assets, build_spool_automation
from trading_assets.defs.trading.assets import build_partitions_ahead, build_trading_assets
from trading_assets.defs.trading.intraday import build_intraday_assets, build_intraday_sensor

DEFINITIONS_MODULE = "trading_assets.definitions"
CODE_LOCATION = "trading_assets"


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions = monthly_partitions(settings)
    series_schedules, series_sensors = build_series_automation(settings, partitions)
    market_schedules, market_sensors = build_market_automation(settings, partitions)
    warehouse = Warehouse(
        # An EnvVar keeps a password out of the run config the UI displays.
        database_url=dg.EnvVar("TRADING_ASSETS_DATABASE_URL") if settings.database_url else None,
        pgdata=str(settings.embedded_pgdata),
    )
    market_assets = [*build_market_assets(settings, partitions), *build_ema_assets(settings, partitions)]
    market = dg.AssetSelection.assets(*market_assets)
    clean_logs, clean_logs_daily = build_clean_logs(settings)
    spool_sensor, spool_nightly = build_spool_automation(settings)
    partitions_ahead, partitions_daily = build_partitions_ahead(settings)
    retention_asset, retention_daily = build_retention(settings)
    table_sizes, table_sizes_daily = build_table_sizes(settings)
    backup_assets, backup_schedules = build_backups(settings)
    upkeep_assets, upkeep_schedules = build_vacuum_reindex()
    calendar_assets, calendar_schedules, calendar_jobs = build_calendar(settings)
    return dg.Definitions(
        assets=[
            *build_series_assets(settings, partitions),
            *build_dimension_assets(),
            *market_assets,
            *build_catalog_assets(settings),
            *build_reference_assets(settings),
            *build_spool_assets(settings),
            *build_dataset_assets(settings, read_dataset_specs(settings.stage1_datasets_config), partitions),
            *build_trading_assets(settings, partitions),
            *build_intraday_assets(settings, partitions),
            retention_asset,
            table_sizes,
            *backup_assets,
            *upkeep_assets,
            build_compression_report(),
            *calendar_assets,
        ],
        asset_checks=[
            *SERIES_CHECKS,
            *MARKET_CHECKS,
            build_freshness_gate(settings),
            *EMA_TABLE_CHECKS,
            *ROW_COUNT_CHECKS,
            *CATALOG_CHECKS,
            *REFERENCE_CHECKS,
        ],
        schedules=[
            *series_schedules,
            *market_schedules,
            build_catalog_schedule(settings),
            clean_logs_daily,
            spool_nightly,
            partitions_daily,
            retention_daily,
            table_sizes_daily,
            *backup_schedules,
            *upkeep_schedules,
            *calendar_schedules,
            dg.ScheduleDefinition(
                name="validate_daily",
                job_name=VALIDATE_JOB,
                cron_schedule="30 6 * * *",
                execution_timezone="UTC",
                default_status=dg.DefaultScheduleStatus.RUNNING,
                description="Every table-wide check, after the daily refreshes.",
            ),
        ],
        sensors=[
            *series_sensors,
            *market_sensors,
            build_dimension_sensor(settings),
            build_reference_sensor(settings, REFERENCE_JOB),
            spool_sensor,
            build_intraday_sensor(settings, partitions),
            *build_alert_sensors(settings),
            # Market runs started by automation apply changes only, one writer at a time (run queue limit).
            dg.AutomationConditionSensorDefinition(
                "market_automation",
                target=market,
                run_tags={REBUILD_TAG: "changed", **MARKET_WRITER},
                default_status=dg.DefaultSensorStatus.RUNNING,
            ),
            dg.AutomationConditionSensorDefinition(
                "trading_assets_automation",
                target=dg.AssetSelection.all() - market,
                default_status=dg.DefaultSensorStatus.RUNNING,
            ),
        ],
        jobs=[*build_jobs(), clean_logs, partitions_ahead, *calendar_jobs],
        resources={"warehouse": warehouse},
        executor=build_executor(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env())
