"""Series metadata: dim_series (golden, edited with SQL, observed) -> map_model_series (derived) -> v_series_wide,
plus observations and dated backups."""

import itertools
import os
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg

from trading_assets.compute.series import (
    backup_name,
    expired_backups,
    observation_problems,
    plan_series_import,
    series_config_problems,
)
from trading_assets.compute.validation import rows_in_window
from trading_assets.config import Settings
from trading_assets.defs.partitions import partitions_end, run_window
from trading_assets.defs.resources import Warehouse
from trading_assets.defs.table_metadata import preview, report_partitions, table_metadata
from trading_assets.errors import Problem, raise_if_any
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
SERIES_CODE_VERSION = "3"

# Follow the parents as soon as they change, never past a failed blocking check or a missing parent.
FOLLOW_PARENTS = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
# Rebuilt by the 06:00 UTC schedule (and after every dim_series change): due by 07:00 UTC each day.
DAILY_SYNC = dg.FreshnessPolicy.cron(deadline_cron="0 7 * * *", lower_bound_delta=timedelta(hours=6))
# Observation files land at most a long weekend apart (daily series are published on business days).
OBSERVATIONS_LAND = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=4), warn_window=timedelta(days=2))


class SeriesFilesConfig(dg.Config):
    """Observation files to load; empty means every CSV waiting in the landing folder's `series/`."""

    files: list[str] = []
    encoding: str = "utf-8"


def series_landing_dir(settings: Settings) -> Path:
    return settings.landing / "series"


def series_state_metadata(state: series_store.SeriesState) -> dict[str, object]:
    """What the UI shows about the last change of dim_series."""
    return {
        "version": state.version,
        "changed_at": state.changed_at.isoformat() if state.changed_at else "",
        "changed_by": state.changed_by or "",
    }


def _seed_if_new(conn: psycopg.Connection, path: Path) -> int:
    """Fill a dim_series that never held a row (content version 0) from `path`; returns the rows inserted."""
    # Read committed: after the lock, the version read is the latest (a concurrent seed is seen, not repeated).
    if series_store.dim_series_state(conn).version != 0 or series_store.lock_dim_series(conn).version != 0:
        return 0
    incoming = read_series_config(path)
    raise_if_any(series_config_problems(incoming))
    if incoming.is_empty():
        # Seeding nothing would leave a database whose series list, map and view are empty and whose checks pass.
        raise_if_any(
            [Problem(str(path), 1, "the file has no rows: a new core_energy.dim_series is not seeded from it")]
        )
    plan = plan_series_import(series_store.read_dim_series(conn), incoming, delete_missing=False)
    series_store.apply_series_import(conn, plan)
    return plan.inserts.height


def write_backup(folder: Path, day: date, version: int, content: bytes) -> tuple[Path, bool]:
    """Write `content` as the backup of dim_series version `version` on `day`; returns its path and whether it
    was written now. Never replaces a file: the same content already there is left as it is, and other content
    under that name (a backup of another database at the same version, fuller or not) is kept, the new content
    going to the next free copy name (`..._v<version>_2.csv`). Readers never see half a file."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=folder, prefix=".dim_series_", suffix=".tmp", delete=False) as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    temp = Path(handle.name)
    try:
        for copy in itertools.count(1):
            target = folder / backup_name(day, version, copy)
            try:
                _link_new(temp, target)
                return target, True
            except FileExistsError:
                if target.read_bytes() == content:
                    return target, False
    finally:
        temp.unlink(missing_ok=True)


def _link_new(source: Path, target: Path) -> None:
    """Give the complete file `source` the name `target` too; FileExistsError when `target` exists."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: claim the name, then swap the content in
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        os.replace(source, target)


def build_series_assets(settings: Settings, partitions: dg.MonthlyPartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.observable_source_asset(
        key=DIM_SERIES,
        group_name=GROUP,
        kinds={"postgres"},
        description="Golden list of modelled series (core_energy.dim_series), edited with SQL or imported with "
        "`trading-assets series-import`. Its data version is the table's content version, bumped by the database "
        "in every transaction that changes a row; a new version rebuilds the map, the wide view and the backup. "
        f"A new database (version 0) is seeded from {settings.series_config.name} once; the file is never read "
        "again by itself.",
    )
    def dim_series(warehouse: Warehouse) -> dg.ObserveResult:
        seeded = 0
        if settings.series_config.exists():
            with warehouse.transaction() as conn:
                seeded = _seed_if_new(conn, settings.series_config)
        with warehouse.transaction() as conn:
            series_store.read_consistently(conn)
            state = series_store.dim_series_state(conn)
            frame = series_store.read_dim_series(conn)
            described = table_metadata(conn, "core_energy.dim_series", frame.height)
        metadata = {
            **described,
            **series_state_metadata(state),
            "preview": preview(frame.select("model_col", "series_code", "unit", "freq")),
        }
        if seeded:
            metadata |= {"seeded_from": dg.MetadataValue.path(str(settings.series_config)), "seeded": seeded}
        return dg.ObserveResult(data_version=dg.DataVersion(str(state.version)), metadata=metadata)

    @dg.asset(
        key=MAP_MODEL_SERIES,
        group_name=GROUP,
        deps=[DIM_SERIES],
        kinds={"postgres"},
        code_version=SERIES_CODE_VERSION,
        freshness_policy=DAILY_SYNC,
        automation_condition=FOLLOW_PARENTS,
        description="model_col -> series_code mapping, always derived from dim_series by "
        "core_energy.refresh_map_model_series(); the database refuses any other write.",
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
        batch = read_observation_batch(paths, config.encoding)
        with warehouse.transaction() as conn:
            raise_if_any(observation_problems(batch, series_store.known_series(conn), partitions_end(partitions)))
            in_window = rows_in_window(batch, "obs_date", window.start, window.end)
            present = in_window.drop_nulls("value")
            counts = series_store.upsert_observations(conn, present)
            described = table_metadata(conn, "core_energy.fact_series_value")
            rows_now = series_store.observations_per_month(conn)
        metadata = {
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
        return dg.MaterializeResult(
            metadata=report_partitions(context, rows_now, rows_by_month(present, day="obs_date"), metadata)
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
        description="Dated CSV export of dim_series (dim_series_<date>_v<version>.csv under the backup folder's "
        f"dim_series/), importable with `trading-assets series-import`; files older than {settings.series_backup_days} "
        "days (TRADING_ASSETS_SERIES_BACKUP_DAYS) are removed, the newest is always kept. A backup never replaces "
        "a file (other content of the same day and version goes to ..._v<version>_2.csv); an empty table is not "
        "backed up.",
    )
    def dim_series_backup(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.transaction() as conn:
            series_store.read_consistently(conn)
            state = series_store.dim_series_state(conn)
            frame = series_store.read_dim_series(conn)
        folder = settings.backup_dir / "dim_series"
        common = {"version": state.version, "retention_days": settings.series_backup_days}
        if frame.is_empty():
            # An empty backup restores nothing, and writing one every day would let retention expire the last
            # backups that hold rows: none is written and none removed.
            context.log.warning("core_energy.dim_series is empty: no backup written, the earlier backups kept")
            return dg.MaterializeResult(
                metadata={**common, "dagster/row_count": 0, "written": False, "removed": dg.MetadataValue.json([])},
                data_version=dg.DataVersion(str(state.version)),
            )
        today = datetime.now(UTC).date()
        # The file's layout is the import's: tags separated by ';'.
        exported = frame.with_columns(pl.col("tags").list.join(";"))
        target, written = write_backup(folder, today, state.version, exported.write_csv().encode())
        expired = expired_backups((p.name for p in folder.iterdir() if p.is_file()), today, settings.series_backup_days)
        for name in expired:
            (folder / name).unlink()
        return dg.MaterializeResult(
            metadata={
                **common,
                "dagster/row_count": frame.height,
                "dagster/uri": target.as_uri(),
                "written": written,
                "preview": preview(exported),
                "removed": dg.MetadataValue.json(expired),
            },
            data_version=dg.DataVersion(str(state.version)),
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
