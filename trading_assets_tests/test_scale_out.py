"""Steps of a run on Celery workers over Redis: the rows of the in-process run, and a worker process killed
mid-step losing only that attempt, which Celery's retry completes without duplicate rows."""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import redis
from psycopg import sql

from trading_assets.cli import main
from trading_assets.config import PROJECT_ROOT, SAMPLE_DATA_DIR, Settings
from trading_assets.defs.jobs import MARKET_DAILY_JOB
from trading_assets_tests.conftest import database_copy, instance_rows_holding

BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("TRADING_ASSETS_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
# The broker as the workers and runs are given it: with a password (Redis's default user takes any), which must
# never reach a run's config, its event log or any table of the instance.
BROKER_PASSWORD = "broker-pw-never-shown"
BROKER_URL = REDIS_URL.replace("redis://", f"redis://default:{BROKER_PASSWORD}@", 1)
MONTHS = ["--start", "2019-01-01", "--end", "2021-03-31"]
# Columns that say when, by which run or from which test's folder a row was written, not what it holds.
RUN_COLUMNS = {
    "built_at", "created_at", "loaded_at", "rejected_at", "attributes_changed_at", "last_run_id", "last_run_at",
    "source_file",
}  # fmt: skip


def _redis_reachable() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not _redis_reachable(), reason=f"no Redis at {REDIS_URL} (TRADING_ASSETS_TEST_REDIS_URL)"),
]


def _market_rows(url: str) -> dict[str, list[tuple]]:
    """Every market table's rows, without the columns that record when they were written."""
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = 'market' and c.relkind in ('r', 'p') and not c.relispartition order by 1"
        ).fetchall()
        snapshot = {}
        for (table,) in tables:
            columns = [
                c
                for (c,) in conn.execute(
                    "select column_name from information_schema.columns where table_schema = 'market' "
                    "and table_name = %s order by ordinal_position",
                    (table,),
                )
                if c not in RUN_COLUMNS
            ]
            query = sql.SQL("select {} from {}").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier("market", table)
            )
            snapshot[table] = sorted(conn.execute(query).fetchall(), key=repr)
    return snapshot


def _daily_refresh() -> int:
    """The daily job over the sample's months, as `trading-assets run` starts it."""
    return main(["run", MARKET_DAILY_JOB, *MONTHS])


@pytest.fixture
def landed(cli_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # The sample ends in 2021: the EMAs' gate would call bars of then stale.
    monkeypatch.setenv("TRADING_ASSETS_MARKET_STALENESS_HOURS", "1000000")
    prices = cli_env.landing / "prices"
    prices.mkdir(parents=True)
    shutil.copy(SAMPLE_DATA_DIR / "prices" / "SPY.csv", prices / "SPY.csv")
    return cli_env


# The in-process reference, computed once for the module's tests (the same files give the same rows).
_REFERENCE: dict[str, dict] = {}


@pytest.fixture
def in_process_rows(landed: Settings, server_url: str, template_database: str, monkeypatch) -> dict:
    """The market tables after the daily refresh in one process, on a database of its own."""
    if not _REFERENCE:
        with database_copy(server_url, template_database) as url, monkeypatch.context() as env:
            env.setenv("TRADING_ASSETS_DATABASE_URL", url)
            env.setenv("TRADING_ASSETS_EXECUTOR", "in_process")
            assert _daily_refresh() == 0
            _REFERENCE["rows"] = _market_rows(url)
    rows = _REFERENCE["rows"]
    assert len(rows["price_bars_multi_tf"]) > 2000 and len(rows["ema_multi_tf_packed"]) > 1000
    return rows


class Worker:
    def __init__(self, name: str, log: Path) -> None:
        self.name, self.log = name, log
        self.process = subprocess.Popen(
            [str(BIN / "trading-assets"), "worker", "--name", name],
            env=os.environ.copy(),
            cwd=PROJECT_ROOT,
            start_new_session=True,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, deadline: float) -> None:
        while f"{self.name}@" not in self.log.read_text() or " ready." not in self.log.read_text():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"worker {self.name} not ready:\n{self.log.read_text()}"
            time.sleep(0.3)

    def kill_pool(self) -> None:
        """SIGKILL the pool processes executing steps (the worker itself stays and reports them lost)."""
        children = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        assert children.split(), f"worker {self.name} has no pool process"
        for pid in children.split():
            os.kill(int(pid), signal.SIGKILL)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def workers(landed: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Worker]]:
    """Two Celery workers on this machine; the runs of this test send their steps to them."""
    redis.Redis.from_url(REDIS_URL).flushdb()  # nothing left from an earlier run of the suite
    monkeypatch.setenv("TRADING_ASSETS_EXECUTOR", "celery")
    monkeypatch.setenv("TRADING_ASSETS_CELERY_BROKER", BROKER_URL)
    started = {name: Worker(name, tmp_path / f"{name}.log") for name in ("w1", "w2")}
    try:
        deadline = time.monotonic() + 90
        for worker in started.values():
            worker.wait_ready(deadline)
        yield started
    finally:
        for worker in started.values():
            worker.stop()


def _step_workers(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """step key -> the Celery worker that executed it, from the run's engine events."""
    placed = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        metadata = record.dagster_event.engine_event_data.metadata
        if "Celery worker" in metadata:
            placed[record.dagster_event.step_key] = metadata["Celery worker"].value.split("@")[0]
    return placed


def test_the_daily_refresh_on_two_celery_workers_writes_the_rows_of_the_in_process_run(
    in_process_rows: dict, workers: dict[str, Worker], landed: Settings, capsys: pytest.CaptureFixture
) -> None:
    assert _daily_refresh() == 0
    run_id = re.search(r"run ([0-9a-f-]{36})", capsys.readouterr().out).group(1)
    with dg.DagsterInstance.get() as instance:
        placed = _step_workers(instance, run_id)
    # Every bar and EMA family was a step of its own, and both workers took some of them.
    assert len(placed) == 13 and set(placed.values()) == {"w1", "w2"}, placed
    assert _market_rows(landed.database_url) == in_process_rows
    assert not instance_rows_holding(BROKER_PASSWORD)


def test_a_worker_killed_mid_step_loses_that_attempt_only_and_the_retry_writes_the_rows_once(
    in_process_rows: dict, workers: dict[str, Worker], landed: Settings
) -> None:
    url = landed.database_url
    step = "market__price_bars_multi_tf"
    # The multi_tf family's step waits on a lock held here, so that it is surely inside its transaction when
    # its pool process is killed.
    with psycopg.connect(url) as blocker, psycopg.connect(url, autocommit=True) as observer:
        blocker.execute("lock table market.price_bars_multi_tf in access exclusive mode")
        outcome: list[int] = []
        refresh = threading.Thread(target=lambda: outcome.append(_daily_refresh()), daemon=True)
        refresh.start()
        deadline = time.monotonic() + 120
        while not observer.execute(
            "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'"
        ).fetchone()[0]:
            assert time.monotonic() < deadline and refresh.is_alive(), "the step never waited on the lock"
            time.sleep(0.2)
        with dg.DagsterInstance.get() as instance:
            [run] = instance.get_runs(limit=1)
            holder = _step_workers(instance, run.run_id)[step]
        workers[holder].kill_pool()
        blocker.rollback()
        refresh.join(timeout=120)
    assert outcome == [0]
    with dg.DagsterInstance.get() as instance:
        messages = [r.message for r in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)]
        [lost] = [m for m in messages if "lost their worker process" in m]
        assert (
            lost.startswith(f"Steps {step} lost their worker process mid-step (WorkerLostError(")
            and "retry 1 of 2" in lost
        )
        starts = [r.step_key for r in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)]
        assert starts.count(step) == 2 and len(starts) == 14
    # The lost attempt left nothing: every table holds the in-process run's rows, each once.
    assert _market_rows(url) == in_process_rows
