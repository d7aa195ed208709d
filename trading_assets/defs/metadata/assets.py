"""Series metadata: dim_series (golden) -> map_model_series (derived) -> v_series_wide, plus observations."""

import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from trading_assets.compute.series import observation_problems, series_config_problems
from trading_assets.compute.validation import rows_in_window
from trading_assets.config import Settings
from trading_assets.defs.partitions import partitions_end, run_date_window
from trading_assets.defs.resources import Warehouse
from trading_assets.errors import raise_if_any
from trading_assets.io import series_store
from trading_assets.sources.series_files import read_observation_batch, read_series_config

GROUP = "core_energy"
DIM_SERIES = dg.AssetKey([GROUP, "dim_series"])
MAP_MODEL_SERIES = dg.AssetKey([GROUP, "map_model_series"])
FACT_SERIES_VALUE = dg.AssetKey([GROUP, "fact_series_value"])
V_SERIES_WIDE = dg.AssetKey([GROUP, "v_series_wide"])
DIM_SERIES_BACKUP = dg.AssetKey([GROUP, "dim_series_backup"])

# Follow the parents as soon as they change, never past a failed blocking check or a missing parent.
FOLLOW_PARENTS = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


class SeriesFilesConfig(dg.Config):
    """Observation files to load; empty means every CSV waiting in the landing folder's `series/`."""

    files: list[str] = []


def series_landing_dir(settings: Settings) -> Path:
    return settings.landing / "series"


def build_series_assets(settings: Settings, partitions: dg.MonthlyPartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=DIM_SERIES,
        group_name=GROUP,
        kinds={"postgres", "csv"},
        description=f"Golden list of modelled series, synced from {settings.series_config.name} so the "
        "table equals the version-controlled file (inserts, updates and deletes in one transaction).",
    )
    def dim_series(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        config = read_series_config(settings.series_config)
        raise_if_any(series_config_problems(config))
        with warehouse.transaction() as conn:
            counts = series_store.sync_dim_series(conn, config)
        context.log.info(f"dim_series synced from {settings.series_config}: {counts}")
        return dg.MaterializeResult(
            metadata={
                "rows": config.height,
                "inserted": counts.inserted,
                "updated": counts.updated,
                "deleted": counts.deleted,
                "source_file": dg.MetadataValue.path(str(settings.series_config)),
            }
        )

    @dg.asset(
        key=MAP_MODEL_SERIES,
        group_name=GROUP,
        deps=[DIM_SERIES],
        kinds={"postgres"},
        automation_condition=FOLLOW_PARENTS,
        description="model_col -> series_code mapping, always derived from dim_series (never edited).",
    )
    def map_model_series(warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.transaction() as conn:
            rows = series_store.rebuild_map_model_series(conn)
        return dg.MaterializeResult(metadata={"rows": rows})

    @dg.asset(
        key=FACT_SERIES_VALUE,
        group_name=GROUP,
        deps=[DIM_SERIES],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"postgres", "polars"},
        description="Series observations by obs_date (monthly partitions; the first also holds all earlier "
        "dates). FRED CSV or series_code,obs_date,value files; a revised value keeps the old one in "
        "fact_series_value_history.",
    )
    def fact_series_value(
        context: dg.AssetExecutionContext, config: SeriesFilesConfig, warehouse: Warehouse
    ) -> dg.MaterializeResult:
        started = time.perf_counter()
        paths = [Path(f) for f in config.files] or sorted(series_landing_dir(settings).glob("*.csv"))
        start, end = run_date_window(context)
        batch = read_observation_batch(paths)
        with warehouse.transaction() as conn:
            raise_if_any(observation_problems(batch, series_store.known_series(conn), partitions_end(partitions)))
            window = rows_in_window(batch, "obs_date", start, end)
            present = window.drop_nulls("value")
            counts = series_store.upsert_observations(conn, present)
        return dg.MaterializeResult(
            metadata={
                "files": len(paths),
                "rows": present.height,
                "missing_values": window.height - present.height,
                "inserted": counts.inserted,
                "revised": counts.revised,
                "unchanged": counts.unchanged,
                "first_date": str(present["obs_date"].min()) if present.height else "",
                "last_date": str(present["obs_date"].max()) if present.height else "",
                "seconds": round(time.perf_counter() - started, 3),
            }
        )

    @dg.asset(
        key=V_SERIES_WIDE,
        group_name=GROUP,
        deps=[MAP_MODEL_SERIES, FACT_SERIES_VALUE],
        kinds={"postgres"},
        # A view reads new observations by itself; only a change of the column set needs a rebuild.
        automation_condition=FOLLOW_PARENTS.ignore(dg.AssetSelection.assets(FACT_SERIES_VALUE)),
        description="View with one row per date and one column per dim_series.model_col, rebuilt by "
        "core_energy.refresh_v_series_wide() together with the views built on it (v_model_wide).",
    )
    def v_series_wide(warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.transaction() as conn:
            columns = series_store.refresh_wide_view(conn)
        return dg.MaterializeResult(metadata={"series_columns": columns})

    @dg.asset(
        key=DIM_SERIES_BACKUP,
        group_name=GROUP,
        deps=[DIM_SERIES],
        kinds={"csv"},
        automation_condition=FOLLOW_PARENTS,
        description="Dated CSV export of dim_series under the backup folder (the guide's export step).",
    )
    def dim_series_backup(warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.transaction() as conn:
            frame = series_store.read_dim_series(conn)
        folder = settings.backup_dir / "dim_series"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"dim_series_{datetime.now(UTC):%Y-%m-%d}.csv"
        with tempfile.NamedTemporaryFile("wb", dir=folder, suffix=".tmp", delete=False) as handle:
            frame.write_csv(handle)
        os.replace(handle.name, target)
        return dg.MaterializeResult(metadata={"rows": frame.height, "path": dg.MetadataValue.path(str(target))})

    return [dim_series, map_model_series, fact_series_value, v_series_wide, dim_series_backup]
