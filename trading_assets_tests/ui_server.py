"""`trading-assets ui` started for a test: a free port, ready when the code location has loaded, stopped after."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trading_assets.config import PROJECT_ROOT

BIN = Path(sys.executable).parent

# The mutation behind the UI's "Re-execute" button.
REEXECUTE = """
mutation Reexecute($params: ReexecutionParams!) {
  launchPipelineReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""

# The mutation behind the UI's launch buttons.
LAUNCH = """
mutation Launch($p: ExecutionParams!) {
  launchPipelineExecution(executionParams: $p) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


def wait_for_run(port: int, run_id: str, deadline: float) -> str:
    status = None
    while status not in {"SUCCESS", "FAILURE", "CANCELED"}:
        assert time.monotonic() < deadline, f"run {run_id} still {status}"
        time.sleep(1)
        status = graphql(port, f'{{ runOrError(runId: "{run_id}") {{ ... on Run {{ status }} }} }}')["runOrError"][
            "status"
        ]
    return status


def launch(port: int, location: str, assets: list[list[str]], tags: dict[str, str]) -> dict:
    """What the launch mutation answered for a run of `assets` with `tags`."""
    return graphql(
        port,
        LAUNCH,
        {
            "p": {
                "selector": {
                    "repositoryLocationName": location,
                    "repositoryName": "__repository__",
                    "pipelineName": "__ASSET_JOB",
                    "assetSelection": [{"path": path} for path in assets],
                },
                "mode": "default",
                "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
            }
        },
    )["launchPipelineExecution"]


@contextmanager
def running_ui(*options: str, log: Path | None = None) -> Iterator[int]:
    """`trading-assets ui` with `options` on a free port of 127.0.0.1, in this process's environment; yields the
    port once the code location has loaded."""
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "trading-assets"), "ui", "--port", str(port), *options],
        env=os.environ.copy(),
        cwd=PROJECT_ROOT,
        start_new_session=True,
        stdout=log.open("w") if log else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, "the UI did not load the code location in time"
            assert server.poll() is None, "the UI process exited"
            try:
                entries = graphql(
                    port, "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
                )["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    break
            except OSError:
                pass
            time.sleep(1)
        yield port
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
