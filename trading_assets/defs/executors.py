"""Where a run's steps execute (TRADING_ASSETS_EXECUTOR), and the Celery worker that executes them elsewhere.

Every heavy family (each bar family, each EMA family, the options, features and intraday tables) is its own
asset, so its own step with its own transaction: the executor can place the steps of one run on different
workers, and Dagster's bookkeeping per run is a fixed number of events per step and partition, whatever the
number of instruments.
"""

import warnings

import dagster as dg

from trading_assets.config import CELERY_BROKER_ENV, DEFAULT_CELERY_BROKER, Settings

# The broker queue the steps are sent to and the workers listen on.
CELERY_QUEUE = "dagster"


def build_executor(settings: Settings) -> dg.ExecutorDefinition:
    if settings.executor == "multiprocess":
        return dg.multiprocess_executor
    if settings.executor == "celery":
        from dagster_celery import celery_executor

        # dagster-celery registers its task again for every step it submits; Celery warns each time.
        warnings.filterwarnings("ignore", message="Task name 'execute_plan' is already registered")

        # A configured broker is read from the environment where the run executes, so its URL (and any
        # password in it) is never part of a run's config, its event log or the UI.
        broker = (
            {"env": CELERY_BROKER_ENV} if settings.celery_broker != DEFAULT_CELERY_BROKER else DEFAULT_CELERY_BROKER
        )
        return celery_executor.configured({"broker": broker, "backend": broker}, name="celery_executor")
    # Steps share one process: on two cores a subprocess per step costs more than it saves.
    return dg.in_process_executor


# Attempts of a step after the first whose worker process was lost (killed, out of memory) mid-step.
WORKER_LOST_RETRIES = 2


def run_celery_worker(settings: Settings, name: str, concurrency: int) -> None:
    """Serve the steps of runs sent to the broker until stopped: `concurrency` steps at a time, each in a pool
    process of its own.

    A pool process that dies mid-step loses only that attempt: the server rolls its transaction back and Celery
    sends the step again (WORKER_LOST_RETRIES times at most), and the run's log says so. Without the retry the
    step's task would fail outside the step, and dagster-celery 0.29 then stops submitting steps but waits for
    them forever: the run would hang instead of failing.
    """
    from celery import signals
    from dagster_celery.config import DEFAULT_CONFIG, dict_wrapper
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    app = make_app(
        {
            "broker": settings.celery_broker,
            "backend": settings.celery_broker,
            "config_source": dict_wrapper(DEFAULT_CONFIG),
        }
    )
    create_task(app, retry_on_worker_lost=True, max_retries=WORKER_LOST_RETRIES, default_retry_delay=0)
    signals.task_retry.connect(_report_retried_step, weak=False)
    app.worker_main(
        [
            "worker",
            "--loglevel=INFO",
            f"--queues={CELERY_QUEUE}",
            f"--hostname={name}@%h",
            f"--concurrency={concurrency}",
            # One step at a time per pool process: a long step does not hold others back on this worker.
            "--prefetch-multiplier=1",
            "--without-gossip",
            "--without-mingle",
        ]
    )


def _report_retried_step(request, reason, **_) -> None:
    """Record in the run's event log that a step's attempt was lost and is sent again."""
    from dagster._core.events import EngineEventData
    from dagster._grpc.types import ExecuteStepArgs
    from dagster._serdes import unpack_value

    step_args = unpack_value(request.kwargs["execute_step_args_packed"], as_type=ExecuteStepArgs)
    with dg.DagsterInstance.from_ref(step_args.instance_ref) as instance:
        run = instance.get_run_by_id(step_args.run_id)
        steps = ", ".join(step_args.step_keys_to_execute or [])
        instance.report_engine_event(
            f"Steps {steps} lost their worker process mid-step ({reason.exc!r}); their transaction was rolled "
            f"back and they are sent again (retry {request.retries + 1} of {WORKER_LOST_RETRIES})",
            run,
            EngineEventData({"steps": steps, "retry": request.retries + 1}),
            step_key=(step_args.step_keys_to_execute or [None])[0],
        )
