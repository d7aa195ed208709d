"""Series metadata: dim_series (golden) -> map_model_series (derived) -> v_series_wide, plus observations."""

import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from trading_assets.compute.series import observation_problems, series_config_problems
from trading_assets.compute.validation import rows_in_window
from trading_assets.config import Settings
from trading_assets.defs.partitions import partitions_end, run_window
from trading_assets.defs.resources import Warehouse
from trading_assets.defs.table_metadata import preview, report_partitions, table_metadata
from trading_assets.errors import raise_if_any
from trading_assets.io import series_store
from trading_assets.io.row_counts import rows_by_month
from trading_assets.sources.series_files import read_observation_batch, read_series_config

GROUP = "core_energy"
DIM_SERIES = dg.AssetKey([GROUP, "dim_series"])
MAP_MODEL_SERIES = dg.AssetKey([GROUP, "map_model_series"])
FACT_SERIES_VALUE = dg.AssetKey([GROUP, "fact_series_value"])
V_SERIES_WIDE = dg.AssetKey([GROUP, "v_series_wide"])
DIM_SERIES_BACKUP = dg.AssetKey([GROUP, "dim_series_backup"])
WIDE_VIEW_FOLLOWERS = dg.AssetKey([GROUP, "wide_view_followers"])
SERIES_CODE_VERSION = "2"

# Follow the parents as soon as they change, never past a failed blocking check or a missing parent.
FOLLOW_PARENTS = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
# Synced by the 06:00 UTC schedule: due by 07:00 UTC each day.
DAILY_SYNC = dg.FreshnessPolicy.cron(deadline_cron="0 7 * * *", lower_bound_delta=timedelta(hours=6))
# Observation files land at most a long weekend apart (daily series are published on business days).
OBSERVATIONS_LAND = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=4), warn_window=timedelta(days=2))


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
        code_version=SERIES_CODE_VERSION,
        freshness_policy=DAILY_SYNC,
        description=f"Golden list of modelled series, synced from {settings.series_config.name} so the "
        "table equals the version-controlled file (inserts, updates and deletes in one transaction).",
    )
    def dim_series(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        config = read_series_config(settings.series_config)
        raise_if_any(series_config_problems(config))
        with warehouse.transaction() as conn:
            counts = series_store.sync_dim_series(conn, config)
            described = table_metadata(conn, "core_energy.dim_series")
        context.log.info(f"dim_series synced from {settings.series_config}: {counts}")
        return dg.MaterializeResult(
            metadata={
                **described,
                "preview": preview(config.select("model_col", "series_code", "unit", "freq")),
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
        code_version=SERIES_CODE_VERSION,
        freshness_policy=DAILY_SYNC,
        automation_condition=FOLLOW_PARENTS,
        description="model_col -> series_code mapping, always derived from dim_series (never edited).",
    )
    def map_model_series(warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.transaction() as conn:
            rows = series_store.rebuild_map_model_series(conn)
            described = table_metadata(conn, "core_energy.map_model_series", rows)
        return dg.MaterializeResult(metadata=described)

    @dg.asset(
        key=FACT_SERIES_VALUE,
        group_name=GROUP,
        deps=[DIM_SERIES],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"postgres", "polars"},
        code_version=SERIES_CODE_VERSION,
        freshness_policy=OBSERVATIONS_LAND,
        description="Series observations by obs_date (monthly partitions; the first also holds all earlier "
        "dates). FRED CSV or series_code,obs_date,value files; a revised value keeps the old one in "
        "fact_series_value_history.",
    )
    def fact_series_value(
        context: dg.AssetExecutionContext, config: SeriesFilesConfig, warehouse: Warehouse
    ) -> dg.MaterializeResult:
        started = time.perf_counter()
        paths = [Path(f) for f in config.files] or sorted(series_landing_dir(settings).glob("*.csv"))
        window = run_window(context)
        batch = read_observation_batch(paths)
        with warehouse.transaction() as conn:
            raise_if_any(observation_problems(batch, series_store.known_series(conn), partitions_end(partitions)))
            in_window = rows_in_window(batch, "obs_date", window.start, window.end)
            present = in_window.drop_nulls("value")
            counts = series_store.upsert_observations(conn, present)
            described = table_metadata(conn, "core_energy.fact_series_value")
            report_partitions(
                context, series_store.observations_per_month(conn), rows_by_month(present, day="obs_date")
            )
        return dg.MaterializeResult(
            metadata={
                **described,
                "preview": preview(present.sort("series_code", "obs_date").select("series_code", "obs_date", "value")),
                "files": len(paths),
                "rows": present.height,
                "missing_values": in_window.height - present.height,
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
        deps=[MAP_MODEL_SERIES, FACT_SERIES_VALUE, WIDE_VIEW_FOLLOWERS],
        kinds={"postgres"},
        code_version=SERIES_CODE_VERSION,
        freshness_policy=DAILY_SYNC,
        # A view reads new observations by itself; only a change of the column set (or of the views that
        # follow it) needs a rebuild. The followers table, observed only when edited, never holds it back.
        automation_condition=FOLLOW_PARENTS.ignore(dg.AssetSelection.assets(FACT_SERIES_VALUE)).replace(
            "any_deps_missing",
            dg.AutomationCondition.any_deps_missing().ignore(
                dg.AssetSelection.assets(FACT_SERIES_VALUE, WIDE_VIEW_FOLLOWERS)
            ),
        ),
        description="View with one row per date and one column per dim_series.model_col, rebuilt by "
        "core_energy.refresh_v_series_wide() together with the views built on it (v_model_wide).",
    )
    def v_series_wide(warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.transaction() as conn:
            columns = series_store.refresh_wide_view(conn)
            described = table_metadata(conn, "core_energy.v_series_wide")
            rows = series_store.wide_view_ends(conn)
        return dg.MaterializeResult(
            metadata={**described, "series_columns": columns, "preview": preview(rows, "dates")}
        )

    @dg.asset(
        key=DIM_SERIES_BACKUP,
        group_name=GROUP,
        deps=[DIM_SERIES],
        kinds={"csv"},
        code_version=SERIES_CODE_VERSION,
        freshness_policy=DAILY_SYNC,
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
        return dg.MaterializeResult(
            metadata={"dagster/row_count": frame.height, "dagster/uri": target.as_uri(), "preview": preview(frame)}
        )

    @dg.observable_source_asset(
        key=WIDE_VIEW_FOLLOWERS,
        group_name=GROUP,
        kinds={"postgres"},
        description="Views rebuilt as `select *` of v_series_wide whenever it is (core_energy.wide_view_followers; "
        "edited with SQL): a change rebuilds the wide view.",
    )
    def wide_view_followers(warehouse: Warehouse) -> dg.DataVersion:
        with warehouse.transaction() as conn:
            return dg.DataVersion(series_store.followers_digest(conn))

    return [dim_series, map_model_series, fact_series_value, v_series_wide, dim_series_backup, wide_view_followers]
