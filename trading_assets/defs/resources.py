"""The warehouse resource: the platform's PostgreSQL through a psycopg 3 pool, migrated before first use."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psycopg
from psycopg_pool import ConnectionPool
from pydantic import PrivateAttr

from trading_assets.io.database import ready_database_url
from trading_assets.io.postgres import SESSION_OPTIONS, connect


class Warehouse(dg.ConfigurableResource):
    """PostgreSQL system of record. Unset `database_url` means the embedded server under `pgdata`."""

    database_url: str | None = None
    pgdata: str

    _url: str | None = PrivateAttr(default=None)
    _pool: ConnectionPool | None = PrivateAttr(default=None)

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = ready_database_url(self.database_url, Path(self.pgdata))
        return self._url

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # A pool lives for one step (resources are set up per step), so keep it small.
        # A step waits this long for a connection before it fails (and alerts) on an unreachable database.
        self._pool = ConnectionPool(
            self.url, min_size=1, max_size=4, kwargs={"options": SESSION_OPTIONS}, open=True, timeout=10
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """One connection and one transaction: committed on success, rolled back on error."""
        if self._pool is None:
            with connect(self.url) as conn:
                yield conn
            return
        with self._pool.connection() as conn:
            yield conn
