"""The code location as a whole: it loads, keeps compute pure, starts its own database, serves the UI."""

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from trading_assets.config import PROJECT_ROOT, SAMPLE_DATA_DIR, ConfigError, Settings
from trading_assets.definitions import build_definitions
from trading_assets.io.database import ready_database_url, stop_embedded
from trading_assets.orchestration import dagster_instance
from trading_assets_tests.ui_server import REEXECUTE, graphql, launch, running_ui, wait_for_run

BIN = Path(sys.executable).parent


def test_definitions_load_with_expected_assets_and_checks(settings: Settings) -> None:
    defs = build_definitions(settings)
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} >= {
        "core_energy/dim_series",
        "core_energy/map_model_series",
        "core_energy/fact_series_value",
        "core_energy/v_series_wide",
        "core_energy/dim_series_backup",
    }
    for key in graph.get_all_asset_keys():
        assert graph.get(key).group_name == key.path[0]
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert ("core_energy/map_model_series", "dim_map_mismatch") in checks


def test_dagster_tools_work_in_the_project_root_with_no_dagster_environment(settings: Settings) -> None:
    # As in a fresh clone: no DAGSTER_HOME and no DAGSTER_PG_URL. The instance in the project's dagster.yaml
    # finds its storage the way the platform finds its database (here: this test's server).
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "DAGSTER_PG_URL")}
    completed = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Validation successful for code location trading_assets" in completed.stdout + completed.stderr
    checked = subprocess.run(
        [str(BIN / "dg"), "check", "defs"], capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=180
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr


def test_compute_imports_neither_dagster_nor_a_database_driver() -> None:
    forbidden = {"dagster", "psycopg", "psycopg2", "psycopg_pool", "sqlalchemy"}
    for path in (PROJECT_ROOT / "trading_assets" / "compute").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"


def test_embedded_server_starts_migrates_and_stops(tmp_path: Path) -> None:
    pgdata = tmp_path / "home" / "pg"
    url = ready_database_url(None, pgdata)
    assert "host=" in url and url.split("?")[0].endswith("/trading_assets")
    with psycopg.connect(url) as conn:
        assert conn.execute("select count(*) from ops.schema_migrations").fetchone()[0] >= 3
    assert ready_database_url(None, pgdata) == url  # reused, not restarted
    assert stop_embedded(pgdata)
    assert not (pgdata / "postmaster.pid").exists()
    assert not stop_embedded(pgdata)


@pytest.mark.slow
def test_the_ui_runs_recomputes_a_month_and_reexecutes_a_cli_run(
    cli_env: Settings, conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from trading_assets.cli import main

    monkeypatch.setenv("TRADING_ASSETS_START_DATE", "2019-01-01")
    with running_ui() as port:
        [location] = graphql(port, "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }")[
            "workspaceOrError"
        ]["locationEntries"]
        assert location["name"] == "trading_assets"
        launched = launch(port, location["name"], [["core_energy", "dim_series"]], {"source": "e2e-test"})
        assert wait_for_run(port, launched["run"]["runId"], time.monotonic() + 120) == "SUCCESS"
        assert conn.execute("select count(*) from core_energy.dim_series").fetchone()[0] == 8

        # With the daemon up, the CLI's runs go through its queue and are the UI's runs.
        spy = SAMPLE_DATA_DIR / "prices" / "SPY.csv"
        assert main(["load", "prices", str(spy), "--symbol", "SPY", "--calendar", "XNYS"]) == 0
        assert "queued for the daemon" in capsys.readouterr().out
        assert main(["refresh", "--bars", "--start", "2019-01-01", "--end", "2021-03-31"]) == 0
        out = capsys.readouterr().out
        refresh_id = out.split("(run ")[-1].split(")")[0]
        with dagster_instance() as instance:
            assert instance.get_run_by_id(refresh_id).job_name == "refresh_bars"
        reexecuted = graphql(port, REEXECUTE, {"params": {"parentRunId": refresh_id, "strategy": "ALL_STEPS"}})
        launched = reexecuted["launchPipelineReexecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        assert wait_for_run(port, launched["run"]["runId"], time.monotonic() + 180) == "SUCCESS"

        # A month damaged behind the platform's back, recomputed by materializing its partition in the UI.
        good = conn.execute("select close from market.price_bars_1d where trade_date = '2020-06-15'").fetchone()
        conn.execute(
            "update market.price_bars_1d set close = close * 2 where trade_date between '2020-06-01' and '2020-07-31'"
        )
        launched = launch(port, location["name"], [["market", "price_bars_1d"]], {"dagster/partition": "2020-06-01"})
        run_id = launched["run"]["runId"]
        assert wait_for_run(port, run_id, time.monotonic() + 180) == "SUCCESS"
        assert conn.execute("select close from market.price_bars_1d where trade_date = '2020-06-15'").fetchone() == good
        july = conn.execute("select close from market.price_bars_1d where trade_date = '2020-07-15'").fetchone()[0]
        assert (
            july
            == 2
            * conn.execute("select close from market.price_histories where trade_date = '2020-07-15'").fetchone()[0]
        )  # outside the partition: untouched


def test_the_executor_is_chosen_by_configuration(tmp_path: Path) -> None:
    base = {"TRADING_ASSETS_HOME": str(tmp_path)}
    assert build_definitions(Settings.from_env(base)).executor is dg.in_process_executor
    multiprocess = Settings.from_env({**base, "TRADING_ASSETS_EXECUTOR": "multiprocess"})
    assert build_definitions(multiprocess).executor is dg.multiprocess_executor
    celery = Settings.from_env(
        {**base, "TRADING_ASSETS_EXECUTOR": "Celery", "TRADING_ASSETS_CELERY_BROKER": "redis://:pw@10.0.0.5:6379/0"}
    )
    assert build_definitions(celery).executor.name == "celery_executor"
    assert "pw@" not in repr(celery)
    with pytest.raises(ConfigError, match="TRADING_ASSETS_EXECUTOR='dask' is not one of in_process, multiprocess"):
        Settings.from_env({**base, "TRADING_ASSETS_EXECUTOR": "dask"})
