"""The code location as a whole: it loads, keeps compute pure, starts its own database, serves the UI."""

import ast
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from trading_assets.config import PROJECT_ROOT, Settings
from trading_assets.definitions import build_definitions
from trading_assets.io.database import ready_database_url, stop_embedded

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


def test_dagster_cli_validates_the_code_location(settings: Settings, tmp_path: Path) -> None:
    # A DAGSTER_HOME of its own: without one, dagster reads the project's PostgreSQL dagster.yaml.
    completed = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-m", "trading_assets.definitions"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        timeout=180,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Validation successful" in completed.stdout + completed.stderr


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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


LAUNCH = """
mutation Launch($p: ExecutionParams!) {
  launchPipelineExecution(executionParams: $p) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""


@pytest.mark.slow
def test_run_launched_through_the_webserver_materializes_an_asset(cli_env: Settings, conn: psycopg.Connection) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [str(BIN / "trading-assets"), "ui", "--port", str(port)],
        env=os.environ.copy(),
        cwd=PROJECT_ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, "the UI did not load the code location in time"
            assert server.poll() is None, "the UI process exited"
            try:
                entries = _graphql(
                    port,
                    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }",
                )["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    break
            except OSError:
                pass
            time.sleep(1)
        [location] = entries
        launched = _graphql(
            port,
            LAUNCH,
            {
                "p": {
                    "selector": {
                        "repositoryLocationName": location["name"],
                        "repositoryName": "__repository__",
                        "pipelineName": "__ASSET_JOB",
                        "assetSelection": [{"path": ["core_energy", "dim_series"]}],
                    },
                    "mode": "default",
                    "executionMetadata": {"tags": [{"key": "source", "value": "e2e-test"}]},
                }
            },
        )["launchPipelineExecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]

        status = None
        while status not in {"SUCCESS", "FAILURE", "CANCELED"}:
            assert time.monotonic() < deadline + 120, f"run {run_id} still {status}"
            time.sleep(1)
            status = _graphql(port, f'{{ runOrError(runId: "{run_id}") {{ ... on Run {{ status }} }} }}')["runOrError"][
                "status"
            ]
        assert status == "SUCCESS"
        assert conn.execute("select count(*) from core_energy.dim_series").fetchone()[0] == 8
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
