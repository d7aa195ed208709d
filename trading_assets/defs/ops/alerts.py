"""Alert sensors: a failed run, and failed asset checks, become alerts with a severity (ops.alerts).

Levels as the runbook states them: CRITICAL (always sent) for a failed run whose blocking ERROR check failed
(OHLC corruption, duplicates) or that lost its database connection; ERROR for any other failed run and for
failed ERROR checks that do not fail their run (gaps, missing data, stale assets); WARNING for WARN checks.
Checks raise one alert per run and severity; a check's `alert` metadata (the offending ids) goes into the body.
The CLI raises the same alerts, with the same keys, for runs it executed while no daemon was running, so no event
is ever alerted twice; and a condition already reported within the quiet period is recorded as grouped.
"""

import dagster as dg
import psycopg
from dagster_shared.error import SerializableErrorInfo

from trading_assets.config import Settings
from trading_assets.io.alerts import DATABASE_UNREACHABLE, Alert, send_alert
from trading_assets.io.database import ready_database_url

# Check evaluations read per tick; the cursor moves on, so a backlog drains over a few ticks.
_EVALUATIONS_PER_TICK = 500


def fails_its_run(evaluation: dg.AssetCheckEvaluation) -> bool:
    return not evaluation.passed and evaluation.blocking and evaluation.severity == dg.AssetCheckSeverity.ERROR


def user_error(error: SerializableErrorInfo) -> str:
    """`Class: message` of the step's own exception (Dagster wraps it in its own)."""
    while error.cls_name.startswith("Dagster") and error.cause is not None:
        error = error.cause
    prefix, _, rest = error.message.strip().partition(": ")
    message = rest if prefix.endswith(error.cls_name) else error.message.strip()
    return f"{error.cls_name}: {' | '.join(line.strip() for line in message.splitlines() if line.strip())}"[:500]


def _lost_database(errors: list[SerializableErrorInfo]) -> bool:
    """Whether a step failed because the database could not be reached."""
    for error in errors:
        while error is not None:
            if error.cls_name in DATABASE_UNREACHABLE:
                return True
            error = error.cause or error.context
    return False


def run_failure_alert(
    run: dg.DagsterRun,
    evaluations: list[dg.AssetCheckEvaluation],
    errors: list[SerializableErrorInfo],
    message: str,
) -> Alert:
    """The one alert of a failed run (`evaluations`: its check evaluations; `errors`: its steps' failures)."""
    blocking = sorted(f"{e.asset_key.to_user_string()}:{e.check_name}" for e in evaluations if fails_its_run(e))
    lost_database = _lost_database(errors)
    severity = "CRITICAL" if blocking or lost_database else "ERROR"
    lines = [
        f"run {run.run_id}",
        *(["database connection failure"] if lost_database else []),
        *(f"blocking check failed: {name}" for name in blocking),
        *(user_error(e) for e in errors[:3]),
        message,
    ]
    condition = ",".join([*blocking, *sorted({user_error(e).split(":", 1)[0] for e in errors})])
    return Alert(
        severity,
        f"Run failed: {run.job_name}",
        "\n".join(line for line in lines if line).strip(),
        "alert_on_run_failure",
        dedupe_key=f"run:{run.run_id}",
        group_key=f"run_failed:{run.job_name}:{condition}",
    )


def _detail(evaluation: dg.AssetCheckEvaluation) -> str:
    entry = evaluation.metadata.get("alert")
    return str(entry.value) if entry is not None else ""


def check_failure_alerts(evaluations: list[tuple[str, dg.AssetCheckEvaluation]], source: str) -> list[Alert]:
    """Per run and severity, one alert listing the failed checks that did not fail their run
    (`evaluations`: (run id, evaluation))."""
    grouped: dict[tuple[str, str], list[dg.AssetCheckEvaluation]] = {}
    for run_id, evaluation in evaluations:
        if evaluation.passed or fails_its_run(evaluation):
            continue
        severity = "WARNING" if evaluation.severity == dg.AssetCheckSeverity.WARN else "ERROR"
        grouped.setdefault((run_id, severity), []).append(evaluation)
    alerts = []
    for (run_id, severity), failed in grouped.items():
        names = sorted(f"{e.asset_key.to_user_string()}:{e.check_name}" for e in failed)
        details = sorted({_detail(e) for e in failed} - {""})
        # The same checks failing on the same rows is one condition, whichever run or asset reports it.
        condition = "|".join(sorted({f"{e.check_name}={_detail(e)}" for e in failed}))
        alerts.append(
            Alert(
                severity,
                f"{len(names)} asset check(s) failed",
                "\n".join([f"run {run_id}", *names, *details]),
                source,
                dedupe_key=f"checks:{run_id}:{severity}",
                group_key=f"checks:{severity}:{condition}",
            )
        )
    return alerts


def run_evaluations(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetCheckEvaluation]:
    return [
        entry.dagster_event.event_specific_data
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    ]


def step_errors(instance: dg.DagsterInstance, run_id: str) -> list[SerializableErrorInfo]:
    return [
        entry.dagster_event.step_failure_data.error
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        if entry.dagster_event.step_failure_data.error is not None
    ]


def alerts_of_run(instance: dg.DagsterInstance, run_id: str) -> list[Alert]:
    """Every alert a run calls for, as the sensors would raise them."""
    run = instance.get_run_by_id(run_id)
    evaluations = run_evaluations(instance, run_id)
    alerts = check_failure_alerts([(run_id, e) for e in evaluations], "cli")
    if run.status == dg.DagsterRunStatus.FAILURE:
        alerts.append(run_failure_alert(run, evaluations, step_errors(instance, run_id), ""))
    return alerts


def build_alert_sensors(settings: Settings) -> list[dg.SensorDefinition]:
    def url() -> str | None:
        """The database to record alerts in; None when it cannot be reached (the alert is delivered anyway)."""
        try:
            return ready_database_url(settings.database_url, settings.embedded_pgdata)
        except psycopg.OperationalError:
            return None

    @dg.run_failure_sensor(
        name="alert_on_run_failure",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="One alert per failed run (CRITICAL when a blocking check failed it, else ERROR; Telegram / "
        "webhook; recorded in ops.alerts).",
    )
    def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
        run = context.dagster_run
        evaluations = run_evaluations(context.instance, run.run_id)
        errors = step_errors(context.instance, run.run_id)
        alert = run_failure_alert(run, evaluations, errors, context.failure_event.message or "")
        send_alert(settings, url(), alert)

    @dg.sensor(
        name="alert_on_check_failure",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts for failed asset checks that do not fail their run: ERROR for ERROR checks, WARNING "
        "for WARN checks (sent when at or above TRADING_ASSETS_ALERT_MIN_SEVERITY).",
    )
    def alert_on_check_failure(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        after = int(context.cursor) if context.cursor else None
        records = context.instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=after),
            limit=_EVALUATIONS_PER_TICK,
            ascending=True,
        )
        if not records:
            return dg.SkipReason("no new check evaluations")
        evaluations = [(r.event_log_entry.run_id, r.event_log_entry.dagster_event.event_specific_data) for r in records]
        alerts = check_failure_alerts(evaluations, "alert_on_check_failure")
        for alert in alerts:
            send_alert(settings, url(), alert)
        context.update_cursor(str(records[-1].storage_id))
        return dg.SkipReason(f"{len(records)} evaluations read, {len(alerts)} alert(s) raised")

    return [alert_on_run_failure, alert_on_check_failure]
