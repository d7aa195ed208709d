"""The daily catalog schedule: the configured sources (real Binance exchangeInfo responses served on 127.0.0.1),
then every catalog check, as one run of the `load_symbols` job."""

import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
import pytest

from trading_assets import catalog
from trading_assets.config import ConfigError, Settings
from trading_assets.definitions import build_definitions
from trading_assets.defs.catalog.assets import SYMBOLS
from trading_assets.defs.catalog.schedule import CATALOG_AUDIT, CATALOG_SCHEDULE
from trading_assets.defs.jobs import LOAD_SYMBOLS_JOB
from trading_assets.io import catalog_store
from trading_assets_tests.conftest import SHARED_DATA, Platform

CRYPTO_META = SHARED_DATA / "crypto_meta"
SNAPSHOT_2018 = CRYPTO_META / "binance_exchangeInfo_2018-02-10.json"
SNAPSHOT_2020 = CRYPTO_META / "binance_exchangeInfo_2020-10-09.json"
AT_2018 = datetime(2018, 2, 10, 2, 40, 25, 348000, tzinfo=UTC)  # the snapshots' serverTime
AT_2020 = datetime(2020, 10, 9, 2, 4, 52, 103000, tzinfo=UTC)
ENDPOINT = "/api/v3/exchangeInfo"


class ExchangeInfoServer:
    """A stand-in for api.binance.com on 127.0.0.1: answers the exchangeInfo path with the snapshot it serves."""

    def __init__(self) -> None:
        self.body: bytes | None = None
        self.status = 200
        self.requests: list[str] = []
        server = self

        class Answer(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                found = self.path == ENDPOINT and server.body is not None
                payload = server.body if found else b'{"code": -1, "msg": "not found"}'
                self.send_response(server.status if found else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}{ENDPOINT}"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def serve(self, snapshot: Path, status: int = 200) -> None:
        self.body, self.status = snapshot.read_bytes(), status

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def binance() -> Iterator[ExchangeInfoServer]:
    server = ExchangeInfoServer()
    yield server
    server.close()


@pytest.fixture
def scheduled(settings: Settings, binance: ExchangeInfoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """The code location built from the environment, with the Binance endpoint as its configured source."""
    monkeypatch.setenv("TRADING_ASSETS_CATALOG_SOURCES", f"binance={binance.url}")
    with dg.DagsterInstance.ephemeral() as instance:
        yield Platform(Settings.from_env(), instance)


def run_scheduled_tick(platform: Platform, at: datetime) -> dg.ExecuteInProcessResult:
    """Evaluate the schedule at `at` and execute the run it requests (its assets and checks) on the instance."""
    schedule = platform.defs.resolve_schedule_def(CATALOG_SCHEDULE)
    [request] = schedule.evaluate_tick(dg.build_schedule_context(platform.instance, at)).run_requests
    assert request.run_key == f"{CATALOG_SCHEDULE}:{at.isoformat()}"
    job = platform.defs.resolve_job_def(schedule.job_name).get_subset(
        asset_selection=set(request.asset_selection), asset_check_selection=set(request.asset_check_keys)
    )
    return job.execute_in_process(
        run_config=request.run_config, instance=platform.instance, tags=request.tags, raise_on_error=False
    )


def symbols_metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == SYMBOLS]
    return {key: value.value for key, value in event.materialization.metadata.items()}


def trading(snapshot: Path) -> set[str]:
    document = json.loads(snapshot.read_text())
    return {f"BINANCE:{s['symbol']}" for s in document["symbols"] if s["status"] == "TRADING"}


def test_the_daily_schedule_refreshes_from_the_configured_endpoint_and_audits(
    scheduled: Platform, binance: ExchangeInfoServer, conn: psycopg.Connection
) -> None:
    schedule = scheduled.defs.resolve_schedule_def(CATALOG_SCHEDULE)
    assert (schedule.job_name, schedule.cron_schedule, schedule.execution_timezone) == (
        LOAD_SYMBOLS_JOB,
        "0 5 * * *",
        "UTC",
    )
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING

    binance.serve(SNAPSHOT_2018)
    first = run_scheduled_tick(scheduled, datetime(2018, 2, 10, 5, tzinfo=UTC))
    assert first.success and first.dagster_run.job_name == LOAD_SYMBOLS_JOB
    assert binance.requests == [ENDPOINT]
    audit = {e.check_name: e.passed for e in first.get_asset_check_evaluations()}
    assert audit == {key.name: True for key in CATALOG_AUDIT}  # the 3 blocking checks and the 4 WARN ones
    versions = catalog_store.read_symbols(conn)
    assert versions.height == 265
    assert versions.select(pl.col("valid_from").unique()).to_series().to_list() == [AT_2018]
    assert catalog_store.active_symbols(conn) == trading(SNAPSHOT_2018)
    source = conn.execute("select distinct source from catalog.symbol_observations").fetchall()
    assert source == [(f"binance:{binance.url}",)]
    assert (symbols_metadata(first)["run_listed"], symbols_metadata(first)["run_delisted"]) == (265, 0)

    # The endpoint unchanged the next day (same snapshot, same serverTime): nothing new, recorded times kept.
    again = run_scheduled_tick(scheduled, datetime(2018, 2, 11, 5, tzinfo=UTC))
    assert again.success
    assert catalog_store.read_symbols(conn).equals(versions)
    assert conn.execute("select count(*) from catalog.symbol_observations").fetchone()[0] == 265
    assert (symbols_metadata(again)["run_listed"], symbols_metadata(again)["run_delisted"]) == (0, 0)

    binance.serve(SNAPSHOT_2020)
    later = run_scheduled_tick(scheduled, datetime(2020, 10, 9, 5, tzinfo=UTC))
    assert later.success
    assert {e.check_name for e in later.get_asset_check_evaluations()} == {key.name for key in CATALOG_AUDIT}
    after = catalog_store.read_symbols(conn)
    # Three symbols listed in 2018 are absent from the 2020 listing: their version closes where it was
    # taken and an inactive one follows; the 92 that moved to BREAK are inactive too.
    for gone in ("BINANCE:123456", "BINANCE:CTRBTC", "BINANCE:CTRETH"):
        rows = after.filter(pl.col("symbol") == gone).select("valid_from", "valid_until", "active").rows()
        assert rows == [(AT_2018, AT_2020, True), (AT_2020, None, False)]
    assert catalog_store.active_symbols(conn) == trading(SNAPSHOT_2020)
    delisted = trading(SNAPSHOT_2018) - trading(SNAPSHOT_2020)
    metadata = symbols_metadata(later)
    assert (metadata["run_delisted"], len(delisted)) == (95, 95)
    assert metadata["run_listed"] == len(trading(SNAPSHOT_2020) - trading(SNAPSHOT_2018))
    assert metadata["delisted_sample"].split(", ") == sorted(delisted)[:20]


def test_a_failing_endpoint_fails_the_scheduled_run_and_changes_nothing(
    scheduled: Platform, binance: ExchangeInfoServer, conn: psycopg.Connection
) -> None:
    binance.serve(SNAPSHOT_2018)
    assert run_scheduled_tick(scheduled, datetime(2018, 2, 10, 5, tzinfo=UTC)).success
    before = catalog_store.read_symbols(conn)
    binance.serve(SNAPSHOT_2020, status=503)
    failed = run_scheduled_tick(scheduled, datetime(2020, 10, 9, 5, tzinfo=UTC))
    assert not failed.success and not failed.get_asset_materialization_events()
    error = next(e for e in failed.all_events if e.is_step_failure).step_failure_data.error.to_string()
    assert f"SourceError: Binance exchangeInfo {binance.url}: HTTP Error 503" in error
    assert catalog_store.read_symbols(conn).equals(before)


def test_without_sources_the_schedule_audits_what_is_stored(platform: Platform, conn: psycopg.Connection) -> None:
    catalog.upsert_symbols(
        [
            {"symbol": "BINANCE:ETHBTC", "tick_size": 1e-6, "lot_size": 0.001, "pricescale": 1000000, "minmov": 1},
            {"symbol": "BINANCE:XRPBTC", "timezone": "Asia/Tokyo", "pricescale": 10**8, "minmov": 1, "lot_size": 1.0},
        ],
        effective_at=datetime(2024, 1, 1, tzinfo=UTC),
        settings=platform.settings,
    )
    versions = catalog_store.read_symbols(conn)
    result = run_scheduled_tick(platform, datetime(2024, 1, 2, 5, tzinfo=UTC))
    assert result.success  # WARN checks do not fail the run
    assert result.dagster_run.run_config["ops"]["catalog"]["config"]["sources"] == []
    audit = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert sorted(name for name, e in audit.items() if not e.passed) == ["crypto_in_utc", "timezone_matches_exchange"]
    assert audit["crypto_in_utc"].metadata["sample"].value == "BINANCE:XRPBTC"
    assert catalog_store.read_symbols(conn).equals(versions)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TRADING_ASSETS_CATALOG_SOURCES", "binance=https://x.test/e ftp=secret-host", "entry 2 is not KIND=INPUT"),
        ("TRADING_ASSETS_CATALOG_SOURCES", "https://api.binance.com/api/v3/exchangeInfo", "entry 1"),
        ("TRADING_ASSETS_CATALOG_CRON", "every day", "TRADING_ASSETS_CATALOG_CRON='every day' is not a cron"),
    ],
)
def test_catalog_schedule_settings_are_checked(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message) as refused:
        build_definitions(Settings.from_env())
    assert "secret-host" not in str(refused.value)


def test_the_cron_and_the_sources_come_from_the_environment(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRADING_ASSETS_CATALOG_CRON", "30 1 * * 1-5")
    monkeypatch.setenv("TRADING_ASSETS_CATALOG_SOURCES", " ccxt=kraken\n TradingView=america file=/data/x=y.csv ")
    configured = Settings.from_env()
    assert configured.catalog_sources == (("ccxt", "kraken"), ("tradingview", "america"), ("file", "/data/x=y.csv"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRADING_ASSETS_CATALOG_SOURCES", "binance=saved/exchangeInfo.json binance=https://h/e?a=b")
    assert Settings.from_env().catalog_sources == (
        ("binance", str(tmp_path / "saved" / "exchangeInfo.json")),
        ("binance", "https://h/e?a=b"),
    )
    schedule = build_definitions(configured).resolve_schedule_def(CATALOG_SCHEDULE)
    assert schedule.cron_schedule == "30 1 * * 1-5"
    [request] = schedule.evaluate_tick(
        dg.build_schedule_context(scheduled_execution_time=datetime(2024, 1, 2, 1, 30, tzinfo=UTC))
    ).run_requests
    assert request.run_config["ops"]["catalog"]["config"]["sources"] == [
        {"source": "ccxt", "input": "kraken"},
        {"source": "tradingview", "input": "america"},
        {"source": "file", "input": "/data/x=y.csv"},
    ]
