"""Where the PostgreSQL server is: the configured URL, or the embedded `pgserver` under the home folder."""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import warnings
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from trading_assets.config import PROJECT_ROOT, Settings
from trading_assets.io.migrations import migrate

EMBEDDED_DATABASE = "trading_assets"
DAGSTER_DATABASE = "dagster"

_migrated: set[str] = set()
_migrate_lock = threading.Lock()


def embedded_bin_dir() -> Path:
    """The folder of the embedded server's own client tools (pg_dump, pg_restore of its version)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # see _embedded_server
        import pgserver

    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _embedded_server(pgdata: Path):
    # pgserver resolves a runtime folder through platformdirs at import and warns when XDG_RUNTIME_DIR is unset.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        # No cleanup on exit: the server outlives the command that started it, until `db stop`.
        server = pgserver.get_server(pgdata, cleanup_mode=None)
    _tune_once(server)
    return server


# The embedded server's settings for this workload, applied once after initdb. PostgreSQL's default 128 MB
# of shared buffers let a one-day refresh of 1,000 assets slow from about 3 s to 5 s as the bar indexes
# outgrew it (one index leaf per asset and timeframe is touched); WAL room spares checkpoints in bulk loads.
EMBEDDED_SETTINGS = {"shared_buffers": "1GB", "max_wal_size": "4GB"}


def _tune_once(server) -> None:
    marker = Path(server.pgdata) / "trading_assets.tuned"
    if marker.exists():
        return
    from pgserver._commands import pg_ctl

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        for name, value in EMBEDDED_SETTINGS.items():
            conn.execute(sql.SQL("alter system set {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    pg_ctl(["-w", "restart", "-m", "fast"], pgdata=server.pgdata, user=server.system_user)
    marker.touch()


def start_embedded(pgdata: Path) -> str:
    """Start (or reuse) the embedded server; returns the URL of its `postgres` database."""
    return _embedded_server(pgdata).get_uri()


def stop_embedded(pgdata: Path) -> bool:
    """Stop the embedded server if it runs; returns whether there was one to stop."""
    if not (pgdata / "postmaster.pid").exists():
        return False
    server = _embedded_server(pgdata)
    # pgserver stops a server only when its last handle in any process closes; `db stop` means now.
    from pgserver._commands import pg_ctl

    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=server.pgdata, user=server.system_user)
    # Forget this process's handle so that a later start in the same process starts it again.
    server.global_process_id_list.get_and_remove(os.getpid())
    atexit.unregister(server._cleanup)
    type(server)._instances.pop(server.pgdata, None)
    return True


def with_database(url: str, database: str, scheme: str | None = None) -> str:
    """The same server URL pointing at another database (and optionally another URL scheme)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.pop("dbname", None)
    return urlunsplit(
        (scheme or parts.scheme, parts.netloc, "/" + database, urlencode(query, safe="/"), parts.fragment)
    )


def redact(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


def ensure_database(server_url: str, name: str) -> None:
    """Create database `name` on the server of `server_url` unless it exists."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
        if exists:
            return
        # Another process may create it between the check and the create.
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))


def resolve_database_url(database_url: str | None, pgdata: Path) -> str:
    """The application database URL: the configured one, or the embedded server's (started on demand)."""
    if database_url:
        return database_url
    server_url = start_embedded(pgdata)
    ensure_database(server_url, EMBEDDED_DATABASE)
    return with_database(server_url, EMBEDDED_DATABASE)


def ready_database_url(database_url: str | None, pgdata: Path) -> str:
    """Like resolve_database_url, with every migration applied (once per process and database)."""
    url = resolve_database_url(database_url, pgdata)
    with _migrate_lock:
        if url not in _migrated:
            migrate(url, backup_dir=Settings.from_env().backup_dir)
            if password := os.environ.get("TRADING_ASSETS_STAGE1_APP_PASSWORD"):
                from trading_assets.io.stage1_store import set_app_password

                with psycopg.connect(url, autocommit=True) as conn:
                    set_app_password(conn, password)
            _migrated.add(url)
    return url


def dagster_storage_url(app_url: str) -> str:
    """SQLAlchemy URL of the Dagster instance database on the same server (created if missing)."""
    ensure_database(app_url, DAGSTER_DATABASE)
    return with_database(app_url, DAGSTER_DATABASE, scheme="postgresql+psycopg2")


def instance_storage_url() -> str:
    """SQLAlchemy URL of Dagster's instance storage: DAGSTER_PG_URL, else the `dagster` database on the
    platform's server as the environment configures it."""
    explicit = os.environ.get("DAGSTER_PG_URL")
    if explicit:
        return explicit
    settings = Settings.from_env()
    return dagster_storage_url(resolve_database_url(settings.database_url, settings.embedded_pgdata))


# A run over many months stores one materialization event per month and asset; Dagster writes them to its
# PostgreSQL storage in batches of this many (one INSERT each) instead of one transaction per event, which
# halves the bookkeeping of a full rebuild (measured: 10.6 s -> 5.0 s for 6 assets x 120 months).
EVENT_BATCH_SIZE = "500"


def prepare_dagster_environment(settings: Settings, app_url: str) -> dict[str, str]:
    """Environment variables that point Dagster at its instance (DAGSTER_HOME, DAGSTER_PG_URL) and batch its
    event writes (DAGSTER_EVENT_BATCH_SIZE, unless set)."""
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    instance_yaml = (PROJECT_ROOT / "dagster.yaml").read_text()
    target = settings.dagster_home / "dagster.yaml"
    if not target.exists() or target.read_text() != instance_yaml:
        target.write_text(instance_yaml)
    return {
        "DAGSTER_HOME": str(settings.dagster_home),
        "DAGSTER_PG_URL": os.environ.get("DAGSTER_PG_URL") or dagster_storage_url(app_url),
        "DAGSTER_EVENT_BATCH_SIZE": os.environ.get("DAGSTER_EVENT_BATCH_SIZE") or EVENT_BATCH_SIZE,
    }
