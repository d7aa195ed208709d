"""Running assets and checks through Dagster on the configured instance, as the CLI does."""

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from trading_assets.config import Settings
from trading_assets.definitions import VALIDATE_JOB, build_definitions
from trading_assets.io.database import prepare_dagster_environment, ready_database_url


def prepare_environment(settings: Settings) -> str:
    """Start/migrate the database and point Dagster at its PostgreSQL instance; returns the database URL."""
    url = ready_database_url(settings.database_url, settings.embedded_pgdata)
    os.environ.update(prepare_dagster_environment(settings, url))
    return url


@dataclass
class RunSummary:
    run_id: str
    success: bool
    materializations: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)
    checks: list[tuple[str, str, bool, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def failed_error_checks(self) -> list[str]:
        return [
            f"{asset}:{name}" for asset, name, passed, severity in self.checks if not passed and severity == "ERROR"
        ]


def root_error_message(error: Any) -> str:
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def summarize(result: dg.ExecuteInProcessResult) -> RunSummary:
    summary = RunSummary(run_id=result.run_id, success=result.success)
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        summary.materializations.append(
            (
                materialization.asset_key.to_user_string(),
                materialization.partition,
                {k: getattr(v, "value", v) for k, v in materialization.metadata.items()},
            )
        )
    for evaluation in result.get_asset_check_evaluations():
        summary.checks.append(
            (evaluation.asset_key.to_user_string(), evaluation.check_name, evaluation.passed, evaluation.severity.value)
        )
    summary.errors = [root_error_message(e.step_failure_data.error) for e in result.get_step_failure_events()]
    return summary


# Dagster's console logger prints every event at DEBUG; the CLI prints its own summary instead.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@contextmanager
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    """The configured instance, holding its storage connections open for the whole run.

    dagster-postgres otherwise opens a new connection for every event it stores (a run over hundreds of
    partitions made thousands of connections, about two thirds of its time); the webserver does the same.
    """
    with dg.DagsterInstance.get() as instance:
        instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=4)
        yield instance


def run_assets(
    settings: Settings,
    assets: Iterable[dg.AssetKey],
    *,
    tags: Mapping[str, str] | None = None,
    run_config: Mapping[str, Any] | None = None,
    table_checks: bool = True,
) -> RunSummary:
    """Materialize `assets` in one run recorded on the instance, with their checks.

    `table_checks=False` leaves out the checks that read whole tables (they run with `validate` and its
    daily schedule); the blocking checks built into the assets always run.
    """
    defs = build_definitions(settings)
    selection = dg.AssetSelection.assets(*assets)
    if not table_checks:
        selection = selection - dg.AssetSelection.checks(*defs.asset_checks)
    with dagster_instance() as instance:
        result = dg.materialize(
            [*defs.assets, *defs.asset_checks],
            instance=instance,
            resources=defs.resources,
            selection=selection,
            tags=dict(tags or {}),
            run_config={**QUIET_LOGS, **(run_config or {})},
            raise_on_error=False,
        )
    return summarize(result)


def all_asset_keys(settings: Settings) -> list[dg.AssetKey]:
    return sorted(build_definitions(settings).resolve_asset_graph().get_all_asset_keys())


def run_all_checks(settings: Settings) -> RunSummary:
    defs = build_definitions(settings)
    with dagster_instance() as instance:
        result = defs.resolve_job_def(VALIDATE_JOB).execute_in_process(
            instance=instance, run_config=QUIET_LOGS, raise_on_error=False
        )
    return summarize(result)
