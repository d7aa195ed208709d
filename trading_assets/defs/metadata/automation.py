"""When the series slice runs by itself: a daily sync, the golden file changing, files landing."""

import hashlib

import dagster as dg

from trading_assets.config import Settings
from trading_assets.defs.metadata.assets import (
    DIM_SERIES,
    DIM_SERIES_BACKUP,
    FACT_SERIES_VALUE,
    MAP_MODEL_SERIES,
    V_SERIES_WIDE,
    series_landing_dir,
)
from trading_assets.defs.partitions import key_range_for_dates, range_tags
from trading_assets.errors import InputError
from trading_assets.sources.series_files import read_observation_batch


def build_series_automation(
    settings: Settings, partitions: dg.MonthlyPartitionsDefinition
) -> tuple[list[dg.ScheduleDefinition], list[dg.SensorDefinition]]:
    daily = dg.ScheduleDefinition(
        name="core_energy_daily",
        cron_schedule="0 6 * * *",
        execution_timezone="UTC",
        target=dg.AssetSelection.assets(DIM_SERIES, MAP_MODEL_SERIES, V_SERIES_WIDE, DIM_SERIES_BACKUP),
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

    @dg.sensor(
        name="series_files_landed",
        target=dg.AssetSelection.assets(FACT_SERIES_VALUE),
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Loads observation CSVs dropped into the landing folder's series/ directory.",
    )
    def series_files_landed(context: dg.SensorEvaluationContext):
        folder = series_landing_dir(settings)
        last_seen = float(context.cursor or 0)
        new_files = sorted(p for p in folder.glob("*.csv") if p.stat().st_mtime > last_seen)
        if not new_files:
            return dg.SkipReason(f"no new files in {folder}")
        keys = partitions.get_partition_keys()
        try:
            batch = read_observation_batch(new_files)
            first_key, last_key = key_range_for_dates(partitions, batch["obs_date"].min(), batch["obs_date"].max())
        except (InputError, TypeError):
            # Unreadable or empty: still run, so the failure and its reason show up (and alert) in the UI.
            first_key, last_key = keys[0], keys[0]
        newest = max(p.stat().st_mtime for p in new_files)
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"series:{newest}",
                    run_config=dg.RunConfig(
                        ops={"core_energy__fact_series_value": {"config": {"files": [str(p) for p in new_files]}}}
                    ),
                    tags=range_tags(first_key, last_key),
                )
            ],
            cursor=str(newest),
        )

    return [daily], [series_config_changed, series_files_landed]
