"""The platform's Dagster event log stores a run's planned events as Dagster's own storage does."""

from urllib.parse import urlsplit

import dagster as dg
import psycopg
import pytest
import sqlalchemy
from dagster_postgres import PostgresEventLogStorage
from psycopg import sql

from trading_assets.io.dagster_storage import PlatformEventLogStorage
from trading_assets.io.database import with_database
from trading_assets_tests.conftest import database_copy

MONTHS = dg.MonthlyPartitionsDefinition(start_date="2024-01-01", end_offset=0)


@dg.asset(partitions_def=MONTHS, check_specs=[dg.AssetCheckSpec("rows_positive", asset="bars")])
def bars() -> dg.MaterializeResult:
    return dg.MaterializeResult(check_results=[dg.AssetCheckResult(passed=True)])


@dg.asset(partitions_def=MONTHS, deps=[bars])
def emas() -> None:
    return None


def _planned_events() -> list[dg.EventLogEntry]:
    """The planned events of a run of two assets and a check over four months, as Dagster reports them."""
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [bars, emas],
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": "2024-01-01",
                "dagster/asset_partition_range_end": "2024-04-01",
            },
        )
        records = instance.get_records_for_run(
            result.run_id,
            of_type={
                dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
                dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
            },
        ).records
    return [record.event_log_entry for record in records]


def _rows(url: str) -> dict[str, list[tuple]]:
    """The rows of the tables an event is stored in, without their serial ids and the server's insert times."""
    with psycopg.connect(url) as conn:
        rows = {}
        for table in ("event_logs", "asset_keys", "asset_check_executions", "asset_event_tags"):
            columns = [
                sql.Identifier(name)
                for (name,) in conn.execute(
                    "select column_name from information_schema.columns where table_name = %s "
                    "and column_name not in ('id', 'create_timestamp') order by ordinal_position",
                    (table,),
                )
            ]
            query = sql.SQL("select {} from {} order by 1, 2, 3").format(
                sql.SQL(", ").join(columns), sql.Identifier(table)
            )
            rows[table] = conn.execute(query).fetchall()
        return rows


def test_planned_events_are_stored_as_dagster_stores_them(server_url: str) -> None:
    events = _planned_events()
    assert sorted(e.get_dagster_event().event_type_value for e in events).count("ASSET_MATERIALIZATION_PLANNED") == 8
    stored = {}
    for storage_class in (PostgresEventLogStorage, PlatformEventLogStorage):
        with database_copy(server_url, "template0") as url:
            storage = storage_class(with_database(url, urlsplit(url).path[1:], scheme="postgresql+psycopg2"))
            storage.store_event_batch(events)
            stored[storage_class] = _rows(url)
            storage.dispose()
    dagster, platform = stored[PostgresEventLogStorage], stored[PlatformEventLogStorage]
    assert len(dagster["event_logs"]) == 9
    # One execution row per planned month of the check.
    assert [row[2] for row in dagster["asset_check_executions"]] == [
        "2024-01-01",
        "2024-02-01",
        "2024-03-01",
        "2024-04-01",
    ]
    assert platform == dagster


def test_planned_events_are_stored_all_or_none(server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the events' rows were inserted stores none of them (Dagster then stores them one by one:
    nothing is stored twice)."""
    events = _planned_events()

    def fails(*_: object) -> None:
        raise RuntimeError("asset key upsert failed")

    with database_copy(server_url, "template0") as url:
        storage = PlatformEventLogStorage(with_database(url, urlsplit(url).path[1:], scheme="postgresql+psycopg2"))
        monkeypatch.setattr(storage, "_store_asset_event", fails)
        with pytest.raises(RuntimeError, match="upsert failed"):
            storage.store_event_batch(events)
        stored = _rows(url)
        storage.dispose()
    assert stored == {"event_logs": [], "asset_keys": [], "asset_check_executions": [], "asset_event_tags": []}


def test_schema_questions_are_asked_once_when_the_answer_is_yes(
    server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A column or table that exists is looked up in the catalog once per storage; one that does not is looked
    up again each time (an upgrade may add it)."""
    looked_up: list[str] = []
    inspect = sqlalchemy.inspect

    def inspected(subject: object) -> object:
        looked_up.append("columns")
        return inspect(subject)

    with database_copy(server_url, "template0") as url:
        storage = PlatformEventLogStorage(with_database(url, urlsplit(url).path[1:], scheme="postgresql+psycopg2"))
        dialect = storage._engine.dialect
        has_table = type(dialect).has_table

        def table_looked_up(self: object, *args: object, **kwargs: object) -> bool:
            looked_up.append("table")
            return has_table(self, *args, **kwargs)

        monkeypatch.setattr(sqlalchemy, "inspect", inspected)
        monkeypatch.setattr(type(dialect), "has_table", table_looked_up)
        answers = [storage.has_asset_key_col("cached_status_data") for _ in range(3)]
        answers += [storage.has_asset_key_col("no_such_column") for _ in range(2)]
        answers += [storage.has_table("asset_check_executions") for _ in range(2)]
        answers += [storage.has_table("no_such_table") for _ in range(2)]
        storage.dispose()
    assert answers == [True, True, True, False, False, True, True, False, False]
    assert looked_up == ["columns", "columns", "columns", "table", "table", "table"]
