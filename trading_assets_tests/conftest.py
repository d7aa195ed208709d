"""Database fixtures: every test gets its own freshly migrated database on a real PostgreSQL.

The server is the embedded `pgserver` one unless TRADING_ASSETS_TEST_SERVER_URL names another
(CI also runs the suite against the machine's own server). Each test's database is cloned from a
migrated template, which is much faster than migrating every time.
"""

import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from trading_assets.config import PROJECT_ROOT, Settings
from trading_assets.definitions import build_definitions
from trading_assets.defs.metadata.assets import series_landing_dir
from trading_assets.defs.partitions import REBUILD_TAG, range_tags
from trading_assets.io.database import start_embedded, stop_embedded, with_database
from trading_assets.io.migrations import migrate
from trading_assets.orchestration import QUIET_LOGS

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
SAMPLE_MACRO = PROJECT_ROOT / "data" / "sample" / "macro"

warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")


def _admin(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("TRADING_ASSETS_TEST_SERVER_URL")
    if external:
        yield external
        return
    pgdata = tmp_path_factory.mktemp("pg") / "data"
    yield start_embedded(pgdata)
    stop_embedded(pgdata)


@pytest.fixture(scope="session")
def template_database(server_url: str) -> Iterator[str]:
    name = f"ta_template_{uuid.uuid4().hex[:10]}"
    with _admin(server_url) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    migrate(with_database(server_url, name))
    yield name
    with _admin(server_url) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@contextmanager
def database_copy(server_url: str, template: str) -> Iterator[str]:
    """URL of a new database cloned from `template` (much faster than migrating), dropped afterwards."""
    name = f"ta_test_{uuid.uuid4().hex[:12]}"
    with _admin(server_url) as conn:
        conn.execute(sql.SQL("create database {} template {}").format(sql.Identifier(name), sql.Identifier(template)))
    try:
        yield with_database(server_url, name)
    finally:
        with _admin(server_url) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture
def database_url(server_url: str, template_database: str) -> Iterator[str]:
    """URL of a new, migrated database that exists for this test only."""
    with database_copy(server_url, template_database) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings for a platform living in tmp_path, on this test's database, with its own dim_series file."""
    config = tmp_path / "dim_series.csv"
    shutil.copy(PROJECT_ROOT / "config" / "dim_series.csv", config)
    monkeypatch.setenv("TRADING_ASSETS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRADING_ASSETS_DATABASE_URL", database_url)
    monkeypatch.setenv("TRADING_ASSETS_SERIES_CONFIG", str(config))
    # No research datasets unless a test declares them (test_stage1 uses config/stage1_datasets.toml).
    monkeypatch.setenv("TRADING_ASSETS_STAGE1_DATASETS", str(tmp_path / "no_stage1_datasets.toml"))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    return Settings.from_env()


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


class Platform:
    """The code location built from test settings, run in process on a throwaway Dagster instance."""

    def __init__(self, settings: Settings, instance: dg.DagsterInstance) -> None:
        self.settings = settings
        self.instance = instance
        self.defs = build_definitions(settings)

    def run(
        self,
        selection: dg.AssetSelection,
        *,
        partition_range: tuple[str, str] | None = None,
        files: list[Path] | None = None,
        ops: dict | None = None,
        raise_on_error: bool = True,
        rebuild: str = "changed",
    ) -> dg.ExecuteInProcessResult:
        """Run `selection`; `files` configures the series load, `ops` any op config ({op name: config});
        `rebuild` the market runs' mode (`changed`, as automation runs, or `all`, as the UI's)."""
        ops = {name: {"config": config} for name, config in (ops or {}).items()}
        if files is not None:
            ops["core_energy__fact_series_value"] = {"config": {"files": [str(f) for f in files]}}
        run_config = {**QUIET_LOGS, "ops": ops}
        tags = {REBUILD_TAG: rebuild, **(range_tags(*partition_range) if partition_range else {})}
        return dg.materialize(
            [*self.defs.assets, *self.defs.asset_checks],
            instance=self.instance,
            resources=self.defs.resources,
            selection=selection,
            tags=tags,
            run_config=run_config,
            raise_on_error=raise_on_error,
        )

    def materialize(self, *keys: dg.AssetKey, **options) -> dg.ExecuteInProcessResult:
        """Materialize `keys` with their checks."""
        return self.run(dg.AssetSelection.assets(*keys), **options)

    def land_sample_series(self) -> Path:
        landing = series_landing_dir(self.settings)
        landing.mkdir(parents=True, exist_ok=True)
        for sample in SAMPLE_MACRO.glob("*.csv"):
            shutil.copy(sample, landing / sample.name)
        return landing


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    # In memory: on-disk instance storage costs tens of ms per partition event.
    with dg.DagsterInstance.ephemeral() as instance:
        yield Platform(settings, instance)


@pytest.fixture(scope="session")
def dagster_storage_url(server_url: str) -> Iterator[str]:
    """A Dagster instance database on the test server, shared by the tests that need a persistent instance."""
    name = f"ta_dagster_{uuid.uuid4().hex[:10]}"
    with _admin(server_url) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    yield with_database(server_url, name, scheme="postgresql+psycopg2")
    with _admin(server_url) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture
def cli_env(settings: Settings, dagster_storage_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Environment as the CLI sets it, restored after the test."""
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))
    monkeypatch.setenv("DAGSTER_PG_URL", dagster_storage_url)
    return settings


def instance_rows_holding(text: str) -> list[str]:
    """Tables of the Dagster instance database with a row whose text holds `text` (runs, event log, ticks...)."""
    with psycopg.connect(os.environ["DAGSTER_PG_URL"].replace("+psycopg2", "")) as conn:
        tables = conn.execute(
            "select table_name from information_schema.tables where table_schema = 'public' "
            "and table_type = 'BASE TABLE'"
        ).fetchall()
        return [
            table
            for (table,) in tables
            if conn.execute(
                sql.SQL("select exists (select from {} t where t::text like %s)").format(sql.Identifier(table)),
                (f"%{text}%",),
            ).fetchone()[0]
        ]
