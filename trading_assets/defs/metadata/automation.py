"""When the series slice runs by itself: a daily sync, the golden file changing, files landing."""

import hashlib
from datetime import date
from pathlib import Path

import dagster as dg

from trading_assets.config import Settings
from trading_assets.defs.jobs import LOAD_SERIES_JOB, SERIES_SYNC_JOB
from trading_assets.defs.landing import landing_sensor
from trading_assets.defs.metadata.assets import DIM_SERIES, FACT_SERIES_VALUE, series_landing_dir
from trading_assets.sources.series_files import read_observation_batch


def build_series_automation(
    settings: Settings, partitions: dg.MonthlyPartitionsDefinition
) -> tuple[list[dg.ScheduleDefinition], list[dg.SensorDefinition]]:
    daily = dg.ScheduleDefinition(
        name="core_energy_daily",
        cron_schedule="0 6 * * *",
        execution_timezone="UTC",
        job_name=SERIES_SYNC_JOB,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Daily sync of dim_series from its file, the derived map, the wide view and a dated backup.",
    )

    @dg.sensor(
        name="series_config_changed",
        target=dg.AssetSelection.assets(DIM_SERIES),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Syncs dim_series when its version-controlled file changes (map and view follow).",
    )
    def series_config_changed(context: dg.SensorEvaluationContext):
        if not settings.series_config.exists():
            return dg.SkipReason(f"{settings.series_config} does not exist")
        digest = hashlib.sha256(settings.series_config.read_bytes()).hexdigest()
        if digest == context.cursor:
            return dg.SkipReason("dim_series file unchanged")
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=digest)], cursor=digest)

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

    return [daily], [series_config_changed, series_files_landed]
