"""The Stage 1 dataset triplet: schema (fresh and upgraded in place), the task list's smoke tests, the client's
role, the spool replay on the client's real spool, the checks, and a dataset built from our own bars and EMAs."""

import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
import pytest

from trading_assets.compute.spool import STAGE1_TABLES
from trading_assets.config import PROJECT_ROOT, Settings
from trading_assets.defs.market.assets import BAR_KEYS, PRICE_HISTORIES
from trading_assets.defs.market.emas import EMA_KEYS
from trading_assets.defs.stage1 import spool
from trading_assets.defs.stage1.datasets import DatasetSpec, dataset_checks, normalized_slug, read_dataset_specs
from trading_assets.io import stage1_store
from trading_assets.io.database import ensure_database, with_database
from trading_assets.io.migrations import migrate
from trading_assets.io.postgres import connect
from trading_assets_tests.conftest import Platform

STAGE1 = PROJECT_ROOT.parent / "shared" / "data" / "stage1"
SPOOL = STAGE1 / "pending_postgres_inserts.sql"
needs_shared = pytest.mark.skipif(not SPOOL.exists(), reason="../shared/data is not beside the project")
# The Stage 1.3 tables (the master table stage1_datasets is new).
TABLES = sorted(STAGE1_TABLES - {"stage1_datasets"})


@pytest.fixture
def bare_database(server_url: str) -> Iterator[str]:
    """An empty database (no migrations) on the test server."""
    name = f"bare_{uuid.uuid4().hex[:10]}"
    ensure_database(server_url, name)
    try:
        yield with_database(server_url, name)
    finally:
        with connect(server_url, autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


def _stage13_with_samples(url: str) -> dict[str, int]:
    """The deployed Stage 1.3 schema (public) with the sampled rows of postgres_samples.csv; rows per table."""
    with connect(url) as conn:
        conn.execute((STAGE1 / "postgres_schema.sql").read_text())
        sections = re.split(r"^# (\w+)\n", (STAGE1 / "postgres_samples.csv").read_text(), flags=re.M)[1:]
        for table, body in zip(sections[::2], sections[1::2], strict=True):
            with conn.cursor() as cur, cur.copy(f"copy {table} from stdin (format csv, header, escape '\\')") as copy:
                copy.write(body.strip() + "\n")
        counts = {t: conn.execute(f"select count(*) from public.{t}").fetchone()[0] for t in TABLES}  # noqa: S608
    return counts


def _count(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(f"select count(*) from stage1.{table}").fetchone()[0]  # noqa: S608


@needs_shared
def test_an_existing_stage13_database_is_backed_up_then_upgraded_in_place_with_every_row(
    bare_database: str, tmp_path: Path
) -> None:
    before = _stage13_with_samples(bare_database)
    assert before["indicator_datasets"] == 2 and sum(before.values()) > 6
    migrate(bare_database, backup_dir=tmp_path)
    (backup,) = (tmp_path / "pre-migration").glob("*_014_stage1")
    manifest = json.loads((backup / "manifest.json").read_text())
    assert {name.removeprefix("public."): m["rows"] for name, m in manifest.items()} == before
    assert (backup / "public.walkforward_runs.pgcopy").read_bytes().startswith(b"PGCOPY\n")
    with connect(bare_database) as conn:
        assert {t: _count(conn, t) for t in TABLES} == before
        assert conn.execute("select to_regclass('public.walkforward_runs')").fetchone()[0] is None
        masters = conn.execute(
            "select dataset_slug, symbol, granularity, source, ohlcv_measurement, indicator_measurement, "
            "indicator_row_count, metadata from stage1.stage1_datasets order by dataset_slug"
        ).fetchall()
    assert masters == [
        ("btc25_1", "BTCUSDT", "4h", "chronosflow", None, "btc25_1", 4320, {"legacy_source": "indicator_datasets"}),
        ("eth25_1", "ETHUSDT", "1h", "chronosflow", None, "eth25_1", 8640, {"legacy_source": "indicator_datasets"}),
    ]


def test_a_fresh_install_has_the_tables_defaults_and_a_legacy_insert_gets_its_master_row(
    conn: psycopg.Connection,
) -> None:
    for table in [*TABLES, "stage1_datasets"]:
        assert _count(conn, table) == 0
    conn.execute(
        "insert into stage1.indicator_datasets values ('11111111-2222-3333-4444-555555555555', 'BTCUSDT', '240m', "
        "'', 'btc25_1', 10, '2025-01-01', '2025-02-01', now())"
    )
    row = conn.execute("select dataset_slug, granularity, source, metadata from stage1.stage1_datasets").fetchone()
    assert row == ("btc25_1", "4h", "legacy_import", {"legacy_source": "indicator_datasets"})
    conn.execute(
        "insert into stage1.stage1_datasets (dataset_id, dataset_slug, indicator_measurement) "
        "values (gen_random_uuid(), 'x', 'x_ind')"
    )
    assert conn.execute(
        "select source, ohlcv_row_count, indicator_row_count, metadata from stage1.stage1_datasets "
        "where dataset_slug = 'x'"
    ).fetchone() == ("laptop_imgui", 0, 0, {})
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "insert into stage1.stage1_datasets (dataset_id, dataset_slug, ohlcv_measurement, indicator_measurement) "
            "values (gen_random_uuid(), 'y', '', 'y_ind')"
        )


def _upsert(conn: psycopg.Connection, dataset_id: str, slug: str, metadata: str | None = "{}") -> tuple:
    return conn.execute(
        "select (d).dataset_slug, (d).ohlcv_measurement, (d).indicator_measurement, (d).metadata, (d).updated_at "
        "from (select stage1.upsert_stage1_dataset(%s, %s, 'BTCUSDT', '4h', null, %s, %s, 10, 20, "
        "null, null, null, null, %s::jsonb) as d) u",
        (dataset_id, slug, f"{slug}_ohlcv", f"{slug}_ind", metadata),
    ).fetchone()


def test_task_list_smoke_tests(conn: psycopg.Connection) -> None:
    first = str(uuid.uuid4())
    assert _upsert(conn, first, "btc_4h_v2", '{"a": 1, "b": 1}')[:4] == (
        "btc_4h_v2", "btc_4h_v2_ohlcv", "btc_4h_v2_ind", {"a": 1, "b": 1},
    )  # fmt: skip
    conn.commit()
    # Every field overwritten but metadata, which is merged (new keys win; NULL leaves it as it was).
    assert _upsert(conn, first, "btc_4h_v3", '{"b": 2, "c": 3}')[:4] == (
        "btc_4h_v3", "btc_4h_v3_ohlcv", "btc_4h_v3_ind", {"a": 1, "b": 2, "c": 3},
    )  # fmt: skip
    assert _upsert(conn, first, "btc_4h_v3", None)[3] == {"a": 1, "b": 2, "c": 3}
    listed = conn.execute("select dataset_slug, run_count, simulation_count from stage1.fn_list_datasets(5, 0)")
    assert listed.fetchall() == [("btc_4h_v3", 0, 0)]
    used = 'slug "btc_4h_v3" is already used by dataset'
    with pytest.raises(psycopg.errors.UniqueViolation, match=used), conn.transaction():
        _upsert(conn, str(uuid.uuid4()), "btc_4h_v3")
    with pytest.raises(psycopg.errors.CheckViolation, match="is not a slug"), conn.transaction():
        _upsert(conn, str(uuid.uuid4()), "BTC 4h")
    run = "insert into stage1.walkforward_runs (run_id, dataset_id, prediction_measurement, target_column, " \
        "feature_columns, hyperparameters, walk_config, status, summary_metrics) values " \
        "(gen_random_uuid(), %s, %s, 't', '[]', '{}', '{}', 'COMPLETED', '{\"folds\": 0}')"  # fmt: skip
    with pytest.raises(psycopg.errors.ForeignKeyViolation), conn.transaction():  # a bogus dataset_id
        conn.execute(run, (str(uuid.uuid4()), "pred_1"))
    conn.execute(run, (first, "pred_1"))
    with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():  # a duplicate prediction_measurement
        conn.execute(run, (first, "pred_1"))
    hierarchy = conn.execute(
        "select dataset_slug, ohlcv_measurement, indicator_measurement, prediction_measurement, status "
        "from stage1.dataset_hierarchy"
    ).fetchall()
    assert hierarchy == [("btc_4h_v3", "btc_4h_v3_ohlcv", "btc_4h_v3_ind", "pred_1", None)]
    runs = conn.execute("select dataset_slug, ohlcv_measurement, indicator_measurement from stage1.fn_list_runs()")
    assert runs.fetchall() == [("btc_4h_v3", "btc_4h_v3_ohlcv", "btc_4h_v3_ind")]
    assert conn.execute("select run_count from stage1.dataset_catalog").fetchone() == (1,)


def test_the_client_role_may_read_insert_update_and_nothing_else(database_url: str) -> None:
    role_url = re.sub(r"//[^@/]*@", "//stage1_app@", database_url) if "@" in database_url else database_url
    with connect(database_url, autocommit=True) as admin:
        stage1_store.set_app_password(admin, "client-secret")
    with psycopg.connect(role_url, autocommit=True, user="stage1_app", password="client-secret") as client:
        assert client.execute("show search_path").fetchone() == ("stage1",)
        client.execute(
            "select upsert_stage1_dataset(gen_random_uuid(), 'eth_1h_v1', 'ETHUSDT', '1h', null, null, "
            "'eth_1h_v1_ind', 0, 5, null, null, null, null, '{}')"
        )
        client.execute("update stage1_datasets set symbol = 'ETH' where dataset_slug = 'eth_1h_v1'")
        assert client.execute("select symbol from stage1_datasets").fetchone() == ("ETH",)
        for refused in (
            "delete from stage1_datasets",
            "drop table walkforward_folds",
            "create table stage1.mine (a int)",
            "select count(*) from market.price_histories",
            "truncate stage1_datasets",
            "select count(*) from stage1.spool_statements",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                client.execute(refused)


def _psql_replay(url: str) -> dict[str, int]:
    """What the published runbook gets: psql running the spool statement by statement into Stage 1.3."""
    with connect(url) as conn:
        conn.execute((STAGE1 / "postgres_schema.sql").read_text())
    subprocess.run(["psql", "-q", "-d", url, "-f", str(SPOOL)], check=True, capture_output=True)
    with connect(url) as conn:
        return {t: conn.execute(f"select count(*) from public.{t}").fetchone()[0] for t in TABLES}  # noqa: S608


@needs_shared
def test_the_real_spool_lands_as_psql_would_keeps_the_rest_and_lands_it_once_the_parents_exist(
    conn: psycopg.Connection, bare_database: str
) -> None:
    data = SPOOL.read_bytes()
    counts = stage1_store.replay_spool(conn, [(SPOOL.name, data)])
    by_table = {r["table"]: r for r in counts.to_dicts()}
    landed = {t: by_table.get(t, {}).get("landed", 0) for t in TABLES}
    waiting = {t: by_table.get(t, {}).get("waiting", 0) for t in TABLES}
    assert landed == {**dict.fromkeys(TABLES, 0), "indicator_datasets": 1}
    assert waiting == {
        "indicator_datasets": 0, "walkforward_runs": 10, "walkforward_folds": 4056, "simulation_runs": 3,
        "simulation_trades": 2021, "simulation_trade_buckets": 9,
    }  # fmt: skip
    if shutil.which("psql"):
        assert _psql_replay(bare_database) == landed
    reasons = conn.execute("select distinct sqlstate from stage1.spool_statements where outcome = 'waiting'").fetchall()
    assert reasons == [("23503",)]  # every one waits for a parent row
    conn.commit()

    # Re-replaying the same file changes nothing.
    again = stage1_store.replay_spool(conn, [(SPOOL.name, data)])
    assert again["landed"].sum() == 0 and again["waiting"].sum() == 6099
    assert conn.execute("select count(*) from stage1.walkforward_folds").fetchone() == (0,)

    # The parents arrive: the runs' datasets (each run carries its own id as dataset_id), and the runs and the
    # dataset the simulations reference.
    text = data.decode()
    run_ids = re.findall(r"INSERT INTO walkforward_runs .*?\nVALUES \('([0-9a-f-]+)'", text)
    simulations = re.findall(
        r"INSERT INTO simulation_runs .*?\nVALUES \('[0-9a-f-]+', '([0-9a-f-]+)', '([0-9a-f-]+)'", text
    )
    for number, dataset in enumerate(sorted({*run_ids, *(d for _, d in simulations)})):
        _upsert(conn, dataset, f"desktop_{number}")
    for number, (run, dataset) in enumerate(sorted(set(simulations))):
        if run not in run_ids:
            conn.execute(
                "insert into stage1.walkforward_runs (run_id, dataset_id, prediction_measurement, target_column, "
                "feature_columns, hyperparameters, walk_config, status, summary_metrics) values "
                "(%s, %s, %s, 't', '[]', '{}', '{}', 'COMPLETED', '{\"folds\": 0}')",
                (run, dataset, f"missing_run_{number}"),
            )
    conn.commit()
    final = stage1_store.replay_spool(conn, [])
    assert final["waiting"].sum() == 0
    assert {r["table"]: r["landed"] for r in final.to_dicts()} == {
        "walkforward_runs": 10, "walkforward_folds": 4056, "simulation_runs": 3, "simulation_trades": 2021,
        "simulation_trade_buckets": 9,
    }  # fmt: skip
    assert _count(conn, "walkforward_folds") == 4056 and _count(conn, "simulation_trades") == 2021
    results = {r.check_name: r for r in spool.stage1_checks(conn)}
    assert results[spool.FOLDS_MATCH].passed  # 312, 499 or 500 folds each, as the runs' summaries say


def test_a_spool_with_ddl_another_schema_or_a_cut_off_statement_keeps_the_good_ones(
    conn: psycopg.Connection,
) -> None:
    hostile = (
        b"insert into stage1_datasets (dataset_id, dataset_slug, indicator_measurement) "
        b"values ('00000000-0000-0000-0000-000000000001', 'good_one', 'good_one_ind');\n"
        b"DROP TABLE walkforward_folds;\n"
        b"insert into market.dim_assets (symbol) values ('EVIL');\n"
        b"delete from stage1_datasets;\n"
        b"insert into stage1_datasets (dataset_id, dataset_slug, indicator_measurement) "
        b"values ('00000000-0000-0000-0000-000000000002', 'two', 'two_ind'); select 1;\n"
        b"insert into stage1_datasets (dataset_id, dataset_slug, indicator_measurement) values ('0000"
    )
    counts = stage1_store.replay_spool(conn, [("hostile.sql", hostile)])
    assert conn.execute("select dataset_slug from stage1.stage1_datasets order by 1").fetchall() == [
        ("good_one",),
        ("two",),
    ]
    assert conn.execute("select count(*) from market.dim_assets where symbol = 'EVIL'").fetchone() == (0,)
    assert conn.execute("select to_regclass('stage1.walkforward_folds')").fetchone()[0] is not None
    assert int(counts["refused"].sum()) == 5 and int(counts["landed"].sum()) == 2
    refused = conn.execute(
        "select line, reason from stage1.spool_statements where outcome = 'refused' order by position"
    ).fetchall()
    assert [line for line, _ in refused] == [2, 3, 4, 5, 6]
    assert "DropStmt" in refused[0][1] and "market.dim_assets, which is not a Stage 1 table" in refused[1][1]
    assert "file ends inside this statement" in refused[4][1]


def test_epoch_milliseconds_are_read_as_seconds_and_impossible_instants_refused(conn: psycopg.Connection) -> None:
    _upsert(conn, "00000000-0000-0000-0000-00000000000a", "ds")
    statement = (
        "insert into walkforward_runs (run_id, dataset_id, prediction_measurement, target_column, feature_columns, "
        "hyperparameters, walk_config, status, summary_metrics, started_at, created_at) values ('{run}', "
        "'00000000-0000-0000-0000-00000000000a', '{name}', 't', '[]', '{{}}', '{{}}', 'DONE', '{{}}', "
        "TO_TIMESTAMP({when}), now());\n"
    )
    spooled = "".join(
        statement.format(run=f"00000000-0000-0000-0000-00000000010{n}", name=f"run_{n}", when=when)
        for n, when in enumerate(["1762159968", "1762159968000", "1762159"])
    )
    counts = stage1_store.replay_spool(conn, [("times.sql", spooled.encode())])
    assert int(counts["landed"].sum()) == 2 and int(counts["refused"].sum()) == 1
    started = conn.execute("select started_at from stage1.walkforward_runs order by run_id").fetchall()
    assert [s.year for (s,) in started] == [2025, 2025] and started[0] == started[1]
    with pytest.raises(psycopg.errors.CheckViolation):  # a direct insert of 1970 is refused by the table
        conn.execute(
            "insert into stage1."
            + statement.format(run="00000000-0000-0000-0000-000000000200", name="x", when="5")[12:]
        )


def test_spool_checks_fail_on_waiting_growth_bad_folds_unmeasured_runs_and_unmastered_datasets(
    settings: Settings, platform: Platform, conn: psycopg.Connection
) -> None:
    folder = spool.spool_folder(settings)
    folder.mkdir(parents=True, exist_ok=True)
    _upsert(conn, "00000000-0000-0000-0000-00000000000b", "legacy")
    conn.execute("update stage1.stage1_datasets set ohlcv_measurement = null")
    conn.execute(
        "insert into stage1.walkforward_runs (run_id, dataset_id, prediction_measurement, target_column, "
        "feature_columns, hyperparameters, walk_config, status, summary_metrics) values "
        "('00000000-0000-0000-0000-000000000301', '00000000-0000-0000-0000-00000000000b', 'p', 't', '[]', '{}', "
        "'{}', 'COMPLETED', '{\"folds\": 3}')"
    )
    for fold in (0, 2):  # 2 of 3 folds, and a gap
        conn.execute(
            "insert into stage1.walkforward_folds values ('00000000-0000-0000-0000-000000000301', %s, 0, 1, 2, 3, "
            "1, 1, null, null, '{}', '{}')",
            (fold,),
        )
    conn.execute("set session_replication_role = replica")  # a legacy row written past the trigger and the key
    conn.execute(
        "insert into stage1.indicator_datasets values ('00000000-0000-0000-0000-00000000000c', 'X', '1h', 's', "
        "'tag_c', 1, now(), now(), now())"
    )
    conn.execute("set session_replication_role = origin")
    conn.commit()
    (folder / "first.sql").write_text(
        "insert into simulation_trades values ('00000000-0000-0000-0000-000000000401', "
        "'00000000-0000-0000-0000-000000000999', now(), 'long', 1, 1, null, null, null, '{}');\n"
    )
    platform.materialize(spool.SPOOL_REPLAY)
    (folder / "second.sql").write_text(
        "insert into simulation_trades values ('00000000-0000-0000-0000-000000000402', "
        "'00000000-0000-0000-0000-000000000999', now(), 'long', 1, 1, null, null, null, '{}');\n"
    )
    result = platform.materialize(spool.SPOOL_REPLAY, raise_on_error=False)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        spool.NOTHING_WAITING: False,
        spool.WAITING_NOT_GROWING: False,
        spool.FOLDS_MATCH: False,
        spool.RUNS_MEASURED: False,
        spool.LEGACY_MASTERED: False,
    }
    # Nothing new: the waiting count does not grow.
    again = platform.materialize(spool.SPOOL_REPLAY, raise_on_error=False)
    assert {e.check_name: e.passed for e in again.get_asset_check_evaluations()}[spool.WAITING_NOT_GROWING]


def test_dataset_config_refuses_bad_entries_naming_them(tmp_path: Path) -> None:
    assert normalized_slug("  BTC 4h--v2!") == "btc_4h_v2"
    path = tmp_path / "datasets.toml"
    path.write_text('[[dataset]]\nslug = "Bad Slug"\nsymbol = "SPY"\nbars = "1d"\ntimeframe = "1D"\nperiods = [10]\n')
    with pytest.raises(ValueError, match=r"dataset 1: slug 'Bad Slug' is not a slug .*'bad_slug'"):
        read_dataset_specs(path)
    path.write_text('[[dataset]]\nslug = "a"\nsymbol = "SPY"\nbars = "2d"\ntimeframe = "1D"\nperiods = [10]\n')
    with pytest.raises(ValueError, match="dataset 1: bars '2d' is not one of"):
        read_dataset_specs(path)
    specs = read_dataset_specs(PROJECT_ROOT / "config" / "stage1_datasets.toml")
    assert [s.slug for s in specs] == ["spy_1d_ema", "btcusd_1d_ema"]


@pytest.fixture
def line_protocol_listener() -> Iterator[tuple[str, list[bytes]]]:
    """A TCP listener on 127.0.0.1 that keeps what it receives (a stand-in for QuestDB's ILP port)."""
    received: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = server.accept()
                with client:
                    while data := client.recv(65536):
                        received.append(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}", received
    server.close()


def test_a_dataset_built_from_our_bars_and_emas(
    platform: Platform,
    conn: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    line_protocol_listener: tuple[str, list[bytes]],
) -> None:
    address, received = line_protocol_listener
    monkeypatch.setenv("TRADING_ASSETS_QUESTDB_ILP", address)
    monkeypatch.setenv("TRADING_ASSETS_STAGE1_DATASETS", str(PROJECT_ROOT / "config" / "stage1_datasets.toml"))
    platform = Platform(Settings.from_env(), platform.instance)
    spy = PROJECT_ROOT / "data" / "sample" / "prices" / "SPY.csv"
    months = ("2019-01-01", "2021-03-01")
    platform.run(
        dg.AssetSelection.assets(PRICE_HISTORIES),
        partition_range=months,
        ops={"market__price_histories": {"files": [{"path": str(spy), "symbol": "SPY", "calendar": "XNYS"}]}},
    )
    platform.run(
        dg.AssetSelection.assets(BAR_KEYS["1d"], EMA_KEYS["ema_multi_tf"]),
        partition_range=months,
        ops={"market__ema_multi_tf": {"skip_stale_check": True}},
    )
    spec = next(s for s in read_dataset_specs(platform.settings.stage1_datasets_config) if s.symbol == "SPY")
    # With the line-protocol listener down, the export fails and the run keeps nothing and records nothing.
    with socket.create_server(("127.0.0.1", 0)) as closed:
        dead = f"127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setenv("TRADING_ASSETS_QUESTDB_ILP", dead)
    failed = Platform(Settings.from_env(), platform.instance).run(
        dg.AssetSelection.assets(spec.key), partition_range=months, raise_on_error=False
    )
    assert not failed.success and not failed.get_asset_materialization_events()
    assert conn.execute("select count(*) from stage1.stage1_datasets").fetchone() == (0,)
    assert not (platform.settings.lakehouse / "stage1" / "spy_1d_ema.csv").exists()
    result = platform.run(dg.AssetSelection.assets(spec.key), partition_range=months)
    assert all(e.passed for e in result.get_asset_check_evaluations())
    ohlcv = pl.DataFrame(
        conn.execute("select trade_date, close from stage1.spy_1d_ema_ohlcv order by 1").fetchall(),
        schema=["trade_date", "close"],
        orient="row",
    )
    prices = pl.read_csv(spy)
    assert ohlcv.height == prices.height == 566
    assert ohlcv["close"].to_list() == prices["close"].to_list()
    # EMA 10 against pandas' ewm (adjust=False, seeded with the SMA of the first 10 closes).
    indicators = conn.execute("select ema_10 from stage1.spy_1d_ema_ind order by trade_date").fetchall()
    closes = prices["close"].to_pandas()
    seeded = closes.copy()
    seeded.iloc[:9] = float("nan")
    seeded.iloc[9] = closes.iloc[:10].mean()
    expected = seeded.iloc[9:].ewm(span=10, adjust=False).mean()
    got = [v for (v,) in indicators if v is not None]
    assert len(got) == len(expected) and max(abs(a - b) for a, b in zip(got, expected, strict=True)) < 1e-9
    # The client's formats: its dataset CSV layout, and its indicator_bars line protocol.
    exported = pl.read_csv(platform.settings.lakehouse / "stage1" / "spy_1d_ema.csv")
    assert exported.columns == [
        "Date",
        "Time",
        "Open",
        "High",
        "Low",
        "Close",
        "EMA10",
        "EMA21",
        "EMA50",
        "TargetClose",
    ]
    assert exported.row(0)[:6] == ("2019-01-02", 0, 246.06, 251.21, 245.96, 250.18)
    assert exported["EMA10"].drop_nulls().to_list() == got
    deadline = time.monotonic() + 5
    while b"".join(received).count(b"\n") < 566 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = b"".join(received).decode().splitlines()
    assert len(lines) == 566
    assert lines[0] == (
        "indicator_bars,dataset=spy_1d_ema,source=trading_assets,granularity=1d date_i=20190102i,time_i=0i,"
        "timestamp_unix=1546387200i,open=246.06,high=251.21,low=245.96,close=250.18 1546387200000000000"
    )
    assert lines[9].startswith("indicator_bars,dataset=spy_1d_ema") and f"ema_10={got[0]!r}" in lines[9]
    row = conn.execute(
        "select dataset_slug, source, ohlcv_row_count, indicator_row_count, ohlcv_measurement, "
        "indicator_measurement, granularity from stage1.stage1_datasets"
    ).fetchone()
    assert row == ("spy_1d_ema", "trading_assets", 566, 566, "spy_1d_ema_ohlcv", "spy_1d_ema_ind", "1d")
    # The blocking checks see a tampered metadata row and a dataset with no rows.
    conn.execute("update stage1.stage1_datasets set ohlcv_row_count = 1")
    assert [c.passed for c in dataset_checks(conn, spec)] == [True, False]
    empty = DatasetSpec("nothing_here", "NOPE", "1d", "1D", (10,), "1d")
    assert [c.passed for c in dataset_checks(conn, empty)] == [False, False]


def test_the_spool_sensor_asks_for_each_new_file_once_by_its_content(settings: Settings) -> None:
    folder = spool.spool_folder(settings)
    folder.mkdir(parents=True)
    sensor, _ = spool.build_spool_automation(settings)
    assert isinstance(sensor.evaluate_tick(dg.build_sensor_context()).skip_message, str)
    (folder / "a.sql").write_text("insert into stage1_datasets values (1);\n")
    tick = sensor.evaluate_tick(dg.build_sensor_context())
    (request,) = tick.run_requests
    assert request.run_key == stage1_store.file_sha256((folder / "a.sql").read_bytes())
    assert request.run_config["ops"]["stage1__spool_replay"]["config"]["files"] == [str(folder / "a.sql")]
    assert not sensor.evaluate_tick(dg.build_sensor_context(cursor=tick.cursor)).run_requests
