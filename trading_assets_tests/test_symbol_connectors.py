"""Live symbol sources against responses served on 127.0.0.1 (a real socket, never the internet)."""

import dataclasses
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import dagster as dg
import polars as pl
import psycopg
import pytest

from trading_assets.config import Settings
from trading_assets.defs.catalog.assets import CATALOG_KEYS, CATALOG_OP
from trading_assets.io import catalog_store
from trading_assets.io.postgres import connect
from trading_assets.sources.symbol_connectors import SourceError, binance_exchange_info_url, tradingview_scan
from trading_assets_tests.conftest import SHARED_DATA, Platform

EXCHANGE_INFO = (SHARED_DATA / "crypto_meta" / "binance_exchangeInfo_2020-10-09.json").read_bytes()
Handler = Callable[[str, bytes], tuple[int, bytes]]


@contextmanager
def serve(handler: Handler) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """An HTTP server on 127.0.0.1 answering with `handler(path, body)`; yields its URL and the requests seen."""
    seen: list[tuple[str, bytes]] = []

    class Answer(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((self.path, body))
            status, payload = handler(self.path, body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _platform_with(settings: Settings, **changes: str) -> Iterator[Platform]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield Platform(dataclasses.replace(settings, **changes), instance)


def _load(platform: Platform, source: str, *inputs: str) -> dg.ExecuteInProcessResult:
    return platform.run(
        dg.AssetSelection.assets(*CATALOG_KEYS),
        ops={CATALOG_OP: {"inputs": list(inputs), "source": source}},
        raise_on_error=False,
    )


def test_ccxt_load_markets_from_a_recorded_binance_response(settings: Settings) -> None:
    def binance(path: str, _: bytes) -> tuple[int, bytes]:
        return (200, EXCHANGE_INFO) if path.startswith("/api/v3/exchangeInfo") else (404, b"{}")

    with serve(binance) as (url, seen), _platform_with(settings, ccxt_api_url=url) as platform:
        assert _load(platform, "ccxt", "binance").success
    assert [path for path, _ in seen] == ["/api/v3/exchangeInfo"]
    with connect(settings.database_url) as conn:
        versions = catalog_store.read_symbols(conn)
    assert versions.height == 1089
    ethbtc = versions.filter(pl.col("symbol") == "BINANCE:ETHBTC").row(0, named=True)
    assert (ethbtc["tick_size"], ethbtc["pricescale"], ethbtc["minmov"]) == (1e-06, 1_000_000, 1)
    assert (ethbtc["lot_size"], ethbtc["min_qty"], ethbtc["min_notional"]) == (0.001, 0.001, 0.0001)
    assert versions.filter(~pl.col("active")).height == 274  # status BREAK


def test_a_failing_exchange_fails_the_asset_and_leaves_the_catalog_unchanged(
    settings: Settings, conn: psycopg.Connection
) -> None:
    maintenance = serve(lambda path, body: (503, b'{"code": -1, "msg": "maintenance"}'))
    with maintenance as (url, _), _platform_with(settings, ccxt_api_url=url) as platform:
        result = _load(platform, "ccxt", "binance")
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "SourceError: ccxt binance: load_markets failed" in failure.step_failure_data.error.to_string()
    assert conn.execute("select count(*) from catalog.symbol_observations").fetchone()[0] == 0


def _scanner_page(rows: list[tuple[str, list]], total: int) -> bytes:
    return json.dumps({"totalCount": total, "data": [{"s": s, "d": d} for s, d in rows]}).encode()


def test_tradingview_scanner_pages_through_a_market(settings: Settings) -> None:
    rows = [
        ("NASDAQ:AAPL", ["Apple Inc.", "stock", "common", 100, 1, "Electronic Technology", "Telecom", "US"]),
        ("NYSE:IBM", ["IBM", "stock", "common", 100, 1, "Technology Services", "Software", "US"]),
        ("OTC:XYZ", ["Not a known venue", "stock", "common", 10000, 1, None, None, "US"]),
    ]

    def scanner(path: str, body: bytes) -> tuple[int, bytes]:
        start, end = json.loads(body)["range"]
        assert path == "/america/scan"
        return 200, _scanner_page(rows[start:end], len(rows))

    with serve(scanner) as (url, seen):
        with _platform_with(settings, tradingview_url=url) as platform:
            assert _load(platform, "tradingview", "america").success
        with connect(settings.database_url) as conn:
            batch = tradingview_scan("america", catalog_store.known_exchanges(conn), url, page_size=2)
    assert [json.loads(body)["range"] for _, body in seen[1:]] == [[0, 2], [2, 4]]
    assert [r["symbol"] for r in batch.records] == ["NASDAQ:AAPL", "NYSE:IBM"]
    assert batch.full_listings == {}
    with connect(settings.database_url) as conn:
        versions = catalog_store.read_symbols(conn)
    aapl = versions.filter(pl.col("symbol") == "NASDAQ:AAPL").row(0, named=True)
    assert (aapl["description"], aapl["tick_size"], aapl["timezone"]) == ("Apple Inc.", 0.01, "America/New_York")
    assert versions["symbol"].to_list() == ["NASDAQ:AAPL", "NYSE:IBM"]


def test_tradingview_unreachable_or_malformed_is_a_clear_error(settings: Settings) -> None:
    malformed = serve(lambda path, body: (200, b'{"error": "bad columns"}'))
    with malformed as (url, _), pytest.raises(SourceError, match="unexpected response"):
        tradingview_scan("america", {"NASDAQ": {}}, url)
    with pytest.raises(SourceError, match="TradingView scanner america"):
        tradingview_scan("america", {"NASDAQ": {}}, url)  # the server is gone


def test_a_binance_exchange_info_endpoint_is_a_full_listing_at_its_server_time() -> None:
    binance = {"BINANCE": {"timezone": "UTC", "is_crypto": True}}
    answers = iter([(200, EXCHANGE_INFO), (200, b'{"code": 0, "msg": "ok"}')])
    with serve(lambda path, body: next(answers)) as (url, seen):
        batch = binance_exchange_info_url(f"{url}/api/v3/exchangeInfo", binance)
        with pytest.raises(SourceError, match=r"unexpected response \(no serverTime and symbols list\)"):
            binance_exchange_info_url(f"{url}/api/v3/exchangeInfo", binance)
    assert [path for path, _ in seen] == ["/api/v3/exchangeInfo"] * 2
    assert batch.effective_at == datetime(2020, 10, 9, 2, 4, 52, 103000, tzinfo=UTC)
    assert len(batch.records) == len(batch.full_listings["BINANCE"]) == 1089
    ethbtc = next(r for r in batch.records if r["symbol"] == "BINANCE:ETHBTC")
    assert (ethbtc["tick_size"], ethbtc["pricescale"], ethbtc["min_notional"]) == (1e-06, 1_000_000, 0.0001)
