"""Running the code location's named jobs from the CLI, as runs the UI knows.

A run is created with the origin the UI's workspace gives the code location, so it is listed under its job,
can be re-executed from the UI and is seen by the run-failure sensor. When a daemon serves the run queue,
the run is submitted to it (and waits for the queue's limits, e.g. one market writer at a time);
otherwise it executes here, in this process.
"""

from __future__ import annotations

import io
import os
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._core.execution.api import create_execution_plan, execute_run
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.snap import snapshot_from_execution_plan
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._daemon.controller import get_daemon_statuses

from trading_assets.config import PROJECT_ROOT, Settings
from trading_assets.definitions import CODE_LOCATION, DEFINITIONS_MODULE
from trading_assets.errors import QueueNotServed
from trading_assets.io.database import prepare_dagster_environment, ready_database_url
from trading_assets.progress import TerminalProgress

_REPOSITORY = "__repository__"
_QUEUE_DAEMON = "QUEUED_RUN_COORDINATOR"
_FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
# A run executed in a CLI process carries the process; a later CLI fails it if that process died under it.
PROCESS_TAG, HOST_TAG = "trading_assets/pid", "trading_assets/host"
_UNFINISHED = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


# Dagster's console logger prints every event at DEBUG; the CLI prints its own summary instead.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def prepare_environment(settings: Settings) -> str:
    """Start/migrate the database and point Dagster at its PostgreSQL instance; returns the database URL."""
    url = ready_database_url(settings.database_url, settings.embedded_pgdata)
    os.environ.update(prepare_dagster_environment(settings, url))
    return url


@dataclass
class RunSummary:
    run_id: str
    job_name: str
    success: bool
    queued: bool = False
    materializations: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)
    checks: list[tuple[str, str, bool, str, bool]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Runs of earlier CLI processes that died mid-run (kill -9, a crash), failed before this one started.
    interrupted: list[str] = field(default_factory=list)

    @property
    def failed_error_checks(self) -> list[str]:
        return [
            f"{asset}:{name}" for asset, name, passed, severity, _ in self.checks if not passed and severity == "ERROR"
        ]


def root_error_message(error: Any) -> str:
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def summarize(instance: dg.DagsterInstance, run_id: str) -> RunSummary:
    """What a run recorded on the instance: materializations, check evaluations, step errors."""
    run = instance.get_run_by_id(run_id)
    assert run is not None
    summary = RunSummary(run_id=run_id, job_name=run.job_name, success=run.status == DagsterRunStatus.SUCCESS)
    wanted = {
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.ASSET_CHECK_EVALUATION,
        dg.DagsterEventType.STEP_FAILURE,
    }
    for entry in instance.all_logs(run_id, of_type=wanted):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization
            summary.materializations.append(
                (
                    materialization.asset_key.to_user_string(),
                    materialization.partition,
                    {k: getattr(v, "value", v) for k, v in materialization.metadata.items()},
                )
            )
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            summary.checks.append(
                (
                    evaluation.asset_key.to_user_string(),
                    evaluation.check_name,
                    evaluation.passed,
                    evaluation.severity.value,
                    evaluation.blocking,
                )
            )
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            summary.errors.append(root_error_message(event.step_failure_data.error))
    return summary


@contextmanager
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    """The configured instance, holding its storage connections open for the whole run.

    dagster-postgres otherwise opens a new connection for every event it stores (a run over hundreds of
    partitions made thousands of connections, about two thirds of its time); the webserver does the same.
    """
    with dg.DagsterInstance.get() as instance:
        instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=4)
        yield instance


def code_location_origin() -> ManagedGrpcPythonEnvCodeLocationOrigin:
    """The origin the UI's workspace (pyproject.toml / workspace.yaml) gives this code location."""
    return ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name=DEFINITIONS_MODULE,
            working_directory=str(PROJECT_ROOT),
        ),
        location_name=CODE_LOCATION,
    )


# Dagster counts a daemon healthy up to 30 minutes after its last heartbeat (every 30 s): a stopped UI would
# leave the CLI's runs waiting in a queue nobody serves.
_QUEUE_HEARTBEAT_TOLERANCE_SECONDS = 90
_QUEUE_RECHECK_SECONDS = 30.0


def queue_is_served(instance: dg.DagsterInstance) -> bool:
    """Whether a daemon is dequeuing runs (its heartbeat is recent)."""
    status = get_daemon_statuses(
        instance, [_QUEUE_DAEMON], ignore_errors=True, heartbeat_tolerance_seconds=_QUEUE_HEARTBEAT_TOLERANCE_SECONDS
    )[_QUEUE_DAEMON]
    return bool(status.required and status.healthy)


def _wait_for_queued_run(instance: dg.DagsterInstance, run_id: str, poll_seconds: float) -> None:
    checked = time.monotonic()
    while (run := instance.get_run_by_id(run_id)).status not in _FINISHED:
        if time.monotonic() - checked > _QUEUE_RECHECK_SECONDS:
            checked = time.monotonic()
            if run.status == DagsterRunStatus.QUEUED and not queue_is_served(instance):
                message = "no daemon serves the run queue any more (was `trading-assets ui` stopped?)"
                instance.report_run_canceled(run, message)
                raise QueueNotServed(f"{message}: run {run_id} was canceled; run the command again")
        time.sleep(poll_seconds)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_interrupted_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the runs that a CLI process on this host was executing when it died (their database
    writes were rolled back by PostgreSQL with its connection); returns what was done, a line per run."""
    unfinished = instance.get_runs(filters=dg.RunsFilter(statuses=_UNFINISHED, tags={HOST_TAG: socket.gethostname()}))
    notes = []
    for run in unfinished:
        pid = int(run.tags.get(PROCESS_TAG, "0"))
        if pid == os.getpid() or _process_alive(pid):
            continue
        note = (
            f"run {run.run_id} of job {run.job_name} was interrupted: process {pid} ended without finishing it; "
            "marked FAILED (its writes were rolled back)"
        )
        instance.report_run_failed(run, note)
        notes.append(note)
    return notes


def reconstructable_job(job_name: str) -> ReconstructableJob:
    """The named job of the code location, as a process that is not this one (a step worker) loads it."""
    return ReconstructableRepository.for_module(
        DEFINITIONS_MODULE, "defs", working_directory=str(PROJECT_ROOT)
    ).get_reconstructable_job(job_name)


def run_job(
    job_name: str,
    *,
    tags: Mapping[str, str] | None = None,
    run_config: Mapping[str, Any] | None = None,
    assets: Iterable[dg.AssetKey] | None = None,
    poll_seconds: float = 1.0,
    progress: TextIO | None = None,
) -> RunSummary:
    """Run the named job of the code location (only `assets` of it, if given) on the configured instance and
    wait for it to finish; a terminal `progress` stream shows how far it got while it goes."""
    recon_job = reconstructable_job(job_name)
    # Dagster keeps the last job it built per process; the definitions follow the settings of this run.
    type(recon_job).get_definition.cache_clear()
    type(recon_job).get_repository_definition.cache_clear()
    selection = frozenset(assets) if assets is not None else None
    check_selection = None
    if selection is not None:
        # A subset keeps the job's own checks of those assets (it would otherwise take every check of them).
        checks = recon_job.get_definition().asset_layer.asset_graph.asset_check_keys
        check_selection = frozenset(check for check in checks if check.asset_key in selection)
        recon_job = recon_job.get_subset(asset_selection=selection, asset_check_selection=check_selection)
    job_def = recon_job.get_definition()
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(code_location_origin(), _REPOSITORY), job_name)
    run_config = {**QUIET_LOGS, **(run_config or {})}
    tags = {**job_def.tags, **(tags or {})}
    with dagster_instance() as instance:
        interrupted = fail_interrupted_runs(instance)
        queued = queue_is_served(instance)
        if not queued:
            tags = {**tags, PROCESS_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
        plan = create_execution_plan(recon_job, run_config=run_config, instance_ref=instance.get_ref(), tags=tags)
        run = instance.create_run(
            job_name=job_name,
            run_id=None,
            run_config=run_config,
            resolved_op_selection=None,
            step_keys_to_execute=plan.step_keys_to_execute,
            status=None,
            op_selection=None,
            root_run_id=None,
            parent_run_id=None,
            tags=tags,
            job_snapshot=job_def.get_job_snapshot(),
            execution_plan_snapshot=snapshot_from_execution_plan(plan, job_def.get_job_snapshot_id()),
            parent_job_snapshot=job_def.get_parent_job_snapshot(),
            asset_selection=selection,
            asset_check_selection=check_selection,
            remote_job_origin=origin,
            job_code_origin=recon_job.get_python_origin(),
            asset_graph=job_def.asset_layer.asset_graph,
        )
        steps = len(plan.step_keys_to_execute)
        with TerminalProgress(instance, run.run_id, steps, progress or io.StringIO()):
            if queued:
                instance.submit_run(run.run_id, workspace=None)  # type: ignore[arg-type]
                _wait_for_queued_run(instance, run.run_id, poll_seconds)
            else:
                execute_run(recon_job, run, instance)
        summary = summarize(instance, run.run_id)
    summary.queued = queued
    summary.interrupted = interrupted
    return summary
