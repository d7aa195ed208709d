"""When the series slice runs by itself: a SQL edit of its tables, files landing, the daily sync.

dim_series is the golden table and the only source of truth for the series list: nothing overwrites it
from a file. An edit is observed (its content version becomes the asset's data version) and declarative
automation then rebuilds the map, the wide view and the backup.
"""

from datetime import date
from pathlib import Path

import dagster as dg

from trading_assets.config import Settings
from trading_assets.defs.jobs import LOAD_SERIES_JOB, OBSERVE_SERIES_JOB, SERIES_SYNC_JOB
from trading_assets.defs.landing import landing_sensor
from trading_assets.defs.metadata.assets import DIM_SERIES, FACT_SERIES_VALUE, WIDE_VIEW_FOLLOWERS, series_landing_dir
from trading_assets.io import series_store
from trading_assets.io.database import ready_database_url
from trading_assets.io.postgres import connect
from trading_assets.sources.series_files import read_observation_batch


def observed_version(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    """The data version of the latest observation of `key` on the instance (None: never observed)."""
    records = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=key), limit=1).records
    return records[0].asset_observation.data_version if records else None


def build_series_automation(
    settings: Settings, partitions: dg.MonthlyPartitionsDefinition
) -> tuple[list[dg.ScheduleDefinition], list[dg.SensorDefinition]]:
    daily = dg.ScheduleDefinition(
        name="core_energy_daily",
        cron_schedule="0 6 * * *",
        execution_timezone="UTC",
        job_name=SERIES_SYNC_JOB,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Daily: dim_series observed, the map and the wide view re-derived from it, and a dated "
        "backup (old backups removed). Never overwrites dim_series.",
    )

    @dg.sensor(
        name="core_energy_tables_edited",
        job_name=OBSERVE_SERIES_JOB,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Observes dim_series and wide_view_followers when their content version in the database "
        "differs from the one last observed (a SQL edit), so that automation rebuilds the map, the wide view "
        "and the backup. A new database is seeded from the series file by that first observation.",
    )
    def core_energy_tables_edited(context: dg.SensorEvaluationContext):
        url = ready_database_url(settings.database_url, settings.embedded_pgdata)
        with connect(url) as conn:
            current = dict(zip((DIM_SERIES, WIDE_VIEW_FOLLOWERS), series_store.edit_versions(conn), strict=True))
        unobserved = [key for key, version in current.items() if observed_version(context.instance, key) != version]
        cursor = ";".join(f"{key.to_user_string()}={version}" for key, version in current.items())
        if not unobserved:
            return dg.SensorResult(skip_reason="the observed versions are the tables' versions", cursor=cursor)
        # Once per version: an observation that failed is not retried every tick (its failure has alerted).
        if cursor == context.cursor:
            return dg.SkipReason("an observation of these versions was already requested")
        return dg.SensorResult(run_requests=[dg.RunRequest(asset_selection=unobserved)], cursor=cursor)

    def observation_span(files: list[Path]) -> tuple[date, date]:
        batch = read_observation_batch(files)
        return batch["obs_date"].min(), batch["obs_date"].max()

    series_files_landed = landing_sensor(
        name="series_files_landed",
        folder=series_landing_dir(settings),
        job_name=LOAD_SERIES_JOB,
        op_name="__".join(FACT_SERIES_VALUE.path),
        partitions=partitions,
        op_config=lambda files: {"files": [str(p) for p in files]},
        date_span=observation_span,
        description="Loads observation CSVs dropped into the landing folder's series/ directory.",
    )

    return [daily], [core_energy_tables_edited, series_files_landed]
