"""The explicit import of a dim_series CSV (`trading-assets series-import`): a named job of one op.

dim_series is an observed table, not an asset Dagster produces, so the import is not a materialization: its
op applies the plan in one transaction and then records an observation of dim_series with the new content
version, which is what the map, the wide view and the backup follow.
"""

import hashlib
from pathlib import Path

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from trading_assets.compute.series import (
    emptying_problems,
    import_plan_problems,
    plan_series_import,
    series_config_problems,
)
from trading_assets.defs.metadata.assets import DIM_SERIES, series_state_metadata
from trading_assets.defs.resources import Warehouse
from trading_assets.defs.table_metadata import table_metadata
from trading_assets.errors import raise_if_any
from trading_assets.io import series_store
from trading_assets.sources.series_files import read_series_config

SERIES_IMPORT_JOB = "import_dim_series"
SERIES_IMPORT_OP = "apply_dim_series_import"


class SeriesImportConfig(dg.Config):
    """A dim_series CSV to import. Rows of the table the file lacks are deleted only with `delete_missing`, and
    never all of them (a file with no rows) unless `allow_empty`.

    `expected_version` and `file_sha256` pin the plan the CLI printed: the run refuses a table edited or a
    file changed since, so what is applied is exactly what was shown."""

    file: str
    delete_missing: bool = False
    allow_empty: bool = False
    encoding: str = "utf-8"
    expected_version: int | None = None
    file_sha256: str | None = None


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dg.op(name=SERIES_IMPORT_OP, description="Apply the inserts, updates (and deletes) of a dim_series CSV.")
def apply_dim_series_import(context: dg.OpExecutionContext, config: SeriesImportConfig, warehouse: Warehouse) -> None:
    path = Path(config.file)
    if config.file_sha256 and file_digest(path) != config.file_sha256:
        raise ValueError(f"{path} changed since its import was planned; run the import again")
    incoming = read_series_config(path, config.encoding)
    raise_if_any(series_config_problems(incoming))
    with warehouse.transaction() as conn:
        before = series_store.lock_dim_series(conn)
        if config.expected_version is not None and before.version != config.expected_version:
            raise ValueError(
                f"core_energy.dim_series changed since the import was planned (version {config.expected_version}, "
                f"now {before.version}); run the import again"
            )
        plan = plan_series_import(series_store.read_dim_series(conn), incoming, config.delete_missing)
        raise_if_any(import_plan_problems(plan, incoming) + emptying_problems(plan, str(path), config.allow_empty))
        series_store.apply_series_import(conn, plan, allow_empty=config.allow_empty)
        after = series_store.dim_series_state(conn)
        described = table_metadata(conn, "core_energy.dim_series")
    counts = {
        "inserted": plan.inserts.height,
        "updated": plan.updates.height,
        "deleted": plan.deletes.height,
        "kept_not_in_file": plan.kept.height,
    }
    context.log.info(f"imported {path}: {plan.summary()}")
    context.add_output_metadata(
        {**counts, "plan": dg.MetadataValue.md("\n".join(f"- {line}" for line in plan.lines()))}
    )
    if plan.is_empty:
        return
    # Recorded only after the commit: a rolled-back import leaves no trace in the graph either.
    context.log_event(
        dg.AssetObservation(
            asset_key=DIM_SERIES,
            metadata={
                **described,
                **series_state_metadata(after),
                **counts,
                "imported_from": dg.MetadataValue.path(str(path)),
            },
            tags={DATA_VERSION_TAG: str(after.version)},
        )
    )


@dg.job(
    name=SERIES_IMPORT_JOB,
    description="Import a dim_series CSV (trading-assets series-import): inserts and updates, deletes only "
    "with delete_missing, in one transaction; the map, the wide view and the backup follow.",
)
def series_import_job() -> None:
    apply_dim_series_import()
