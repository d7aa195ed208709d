"""Faults: a CLI killed mid-refresh, the database stopped mid-run, two full rebuilds at once. Each ends with
the rows a clean run makes, and says what happened."""

import os
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from trading_assets.cli import main
from trading_assets.config import Settings
from trading_assets.io.database import stop_embedded
from trading_assets_tests.fingerprint import WRITE_TIMES, table_fingerprints

# Three monthly partitions up to the current one, so that a full rebuild takes seconds.
_TODAY = date.today()
START = (_TODAY.replace(day=1) - timedelta(days=40)).replace(day=1)
DERIVED = ("market",)


def _prices(folder: Path) -> list[str]:
    files = []
    for symbol, base in (("AAA", 100.0), ("BBB", 20.0)):
        days = [START + timedelta(days=i) for i in range((_TODAY - START).days)]
        rows = [f"{d},{base + i},{base + i + 2},{base + i - 1},{base + i + 1},1000" for i, d in enumerate(days)]
        path = folder / f"{symbol}.csv"
        path.write_text("date,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
        files.append(str(path))
    return files


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trading_assets.cli", *args],
        env=env or dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _derived_rows(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        digests = table_fingerprints(conn, DERIVED, WRITE_TIMES)
    return {name: digest for name, digest in digests.items() if "bars" in name or "ema" in name}


def _wait_until(condition, what: str, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _families_done(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("select count(distinct family) from market.refresh_state").fetchone()[0]


@pytest.fixture
def loaded(cli_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("TRADING_ASSETS_START_DATE", START.isoformat())
    assert main(["load", "prices", *_prices(tmp_path)]) == 0
    return Settings.from_env()


def test_kill_9_mid_refresh_then_rerun_equals_a_clean_run(loaded: Settings, capsys: pytest.CaptureFixture) -> None:
    url = loaded.database_url
    refresh = _cli("refresh", "--all", "--full-rebuild")
    # Killed once the daily bars are committed and later families are still to come.
    _wait_until(lambda: _families_done(url) >= 1, "the daily bars")
    refresh.send_signal(signal.SIGKILL)
    refresh.wait()
    with dg.DagsterInstance.get() as instance:
        # The instance is shared with other tests: the killed run is the one left started.
        [killed] = instance.get_runs(
            filters=dg.RunsFilter(job_name="refresh_market", statuses=[dg.DagsterRunStatus.STARTED])
        )
    capsys.readouterr()

    assert main(["refresh", "--all", "--full-rebuild"]) == 0
    out = capsys.readouterr().out
    assert f"INTERRUPTED earlier: run {killed.run_id} of job refresh_market was interrupted" in out
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
    log = (loaded.logs_dir / f"refresh-{date.today():%Y-%m-%d}.log").read_text()
    assert f"ERROR   INTERRUPTED earlier: run {killed.run_id}" in log.replace("    ", "")
    after_rerun = _derived_rows(url)
    assert main(["refresh", "--all", "--full-rebuild"]) == 0
    assert _derived_rows(url) == after_rerun
    assert _families_done(url) == 12


def test_two_concurrent_full_rebuilds_take_turns_and_end_with_the_clean_rows(loaded: Settings) -> None:
    url = loaded.database_url
    first, second = _cli("refresh", "--all", "--full-rebuild"), _cli("refresh", "--all", "--full-rebuild")
    outputs = [process.communicate(timeout=300) for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    assert all("unique" not in out + err for out, err in outputs)
    together = _derived_rows(url)
    assert main(["refresh", "--all", "--full-rebuild"]) == 0
    assert _derived_rows(url) == together


def test_a_run_waits_for_another_writer_of_its_family_and_says_so(loaded: Settings) -> None:
    url = loaded.database_url
    with psycopg.connect(url, autocommit=True) as holder:
        # Another writer of the multi_tf bars, mid-transaction.
        holder.execute("select pg_advisory_lock(hashtext('market.bars_dirty:multi_tf'))")
        refresh = _cli("refresh", "--bars", "--full-rebuild")
        _wait_until(
            lambda: (
                holder.execute("select count(*) from pg_locks where locktype = 'advisory' and not granted").fetchone()[
                    0
                ]
                > 0
            ),
            "the refresh to wait for the lock",
        )
        time.sleep(1.0)
        holder.execute("select pg_advisory_unlock(hashtext('market.bars_dirty:multi_tf'))")
    out, err = refresh.communicate(timeout=300)
    assert refresh.returncode == 0, err
    [line] = [line for line in out.splitlines() if "market/price_bars_multi_tf " in line]
    waited = float(line.split("(waited ")[1].split("s")[0])
    assert waited >= 1.0


@pytest.mark.skipif(
    bool(os.environ.get("TRADING_ASSETS_TEST_SERVER_URL")),
    reason="runs on an embedded server of its own, whatever the server under test: once per suite is enough",
)
def test_database_stopped_mid_run_one_clear_error_then_rerun_equals_a_clean_run(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADING_ASSETS_", "DAGSTER_"))}
    env |= {"TRADING_ASSETS_HOME": str(home), "TRADING_ASSETS_START_DATE": START.isoformat()}
    try:
        load = _cli("load", "prices", *_prices(tmp_path), env=env)
        assert load.wait(timeout=300) == 0, load.stderr.read()
        url = _cli("db", "url", env=env).communicate(timeout=60)[0].strip()
        refresh = _cli("refresh", "--all", "--full-rebuild", env=env)
        _wait_until(lambda: _families_done(url) >= 1, "the daily bars")
        stop_embedded(home / "pg")
        out, err = refresh.communicate(timeout=300)
        assert refresh.returncode == 3
        assert "Traceback" not in err and err.startswith("error: the database cannot be reached: ")
        assert len(err.strip().splitlines()) == 2, err
        rerun = _cli("refresh", "--all", "--full-rebuild", env=env)
        out, err = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, err
        assert "INTERRUPTED earlier: run" in out
        after_rerun = _derived_rows(url)
        clean = _cli("refresh", "--all", "--full-rebuild", env=env)
        assert clean.wait(timeout=300) == 0
        assert _derived_rows(url) == after_rerun and _families_done(url) == 12
    finally:
        stop_embedded(home / "pg")
