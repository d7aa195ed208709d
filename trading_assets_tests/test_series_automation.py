"""The series slice runs by itself: SQL edits observed, automation conditions, sensors and the daily schedule."""

import os
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg

from trading_assets.defs.jobs import OBSERVE_SERIES_JOB
from trading_assets.defs.metadata.assets import (
    DIM_SERIES,
    DIM_SERIES_BACKUP,
    FACT_SERIES_VALUE,
    MAP_MODEL_SERIES,
    V_SERIES_WIDE,
    WIDE_VIEW_FOLLOWERS,
)
from trading_assets_tests.conftest import SAMPLE_MACRO, Platform


def test_map_view_and_backup_follow_dim_series(platform: Platform, conn: psycopg.Connection) -> None:
    defs, instance = platform.defs, platform.instance
    now = datetime.now(UTC)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=now)
    assert first.total_requested == 0

    # dim_series is observed (its data version is the table's content version), never materialized.
    platform.materialize(DIM_SERIES, WIDE_VIEW_FOLLOWERS)
    after = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, evaluation_time=now + timedelta(minutes=1), cursor=first.cursor
    )
    assert after.get_num_requested(MAP_MODEL_SERIES) == 1
    assert after.get_num_requested(DIM_SERIES_BACKUP) == 1
    assert after.get_num_requested(FACT_SERIES_VALUE) == 0
    # The view waits for the new map and its blocking mismatch check.
    assert after.get_num_requested(V_SERIES_WIDE) == 0

    platform.materialize(MAP_MODEL_SERIES, DIM_SERIES_BACKUP)
    mapped = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, evaluation_time=now + timedelta(minutes=2), cursor=after.cursor
    )
    assert mapped.get_num_requested(V_SERIES_WIDE) == 1
    assert mapped.total_requested == 1

    # Once handled, nothing is requested again until dim_series changes: observing the same content again
    # is no change.
    platform.materialize(V_SERIES_WIDE)
    platform.materialize(DIM_SERIES)
    settled = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, evaluation_time=now + timedelta(minutes=3), cursor=mapped.cursor
    )
    assert settled.total_requested == 0

    # A SQL edit, once observed, starts it all again.
    conn.execute("update core_energy.dim_series set unit = 'pct' where model_col = 'ust_2y'")
    platform.materialize(DIM_SERIES)
    edited = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, evaluation_time=now + timedelta(minutes=4), cursor=settled.cursor
    )
    assert (edited.get_num_requested(MAP_MODEL_SERIES), edited.get_num_requested(DIM_SERIES_BACKUP)) == (1, 1)


def test_new_observations_do_not_rebuild_the_view(platform: Platform) -> None:
    platform.materialize(DIM_SERIES, WIDE_VIEW_FOLLOWERS, MAP_MODEL_SERIES, V_SERIES_WIDE, DIM_SERIES_BACKUP)
    now = datetime.now(UTC)
    first = dg.evaluate_automation_conditions(defs=platform.defs, instance=platform.instance, evaluation_time=now)
    platform.materialize(FACT_SERIES_VALUE, partition_range=("2020-01-01", "2020-01-01"), files=[])
    later = dg.evaluate_automation_conditions(
        defs=platform.defs, instance=platform.instance, evaluation_time=now + timedelta(minutes=1), cursor=first.cursor
    )
    assert later.get_num_requested(V_SERIES_WIDE) == 0


def test_automation_sensor_and_schedules_run_by_default(platform: Platform) -> None:
    sensors = {s.name: s for s in platform.defs.sensors}
    assert sensors["trading_assets_automation"].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors["series_files_landed"].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors["core_energy_tables_edited"].default_status == dg.DefaultSensorStatus.RUNNING
    # Nothing syncs dim_series from its file any more: the table is the golden source.
    assert "series_config_changed" not in sensors
    schedule = platform.defs.resolve_schedule_def("core_energy_daily")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 6 * * *", "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_landing_sensor_requests_a_ranged_run_for_new_files(platform: Platform) -> None:
    landing = platform.settings.landing / "series"
    landing.mkdir(parents=True)
    sensor = platform.defs.resolve_sensor_def("series_files_landed")

    empty = sensor.evaluate_tick(dg.build_sensor_context(instance=platform.instance))
    assert empty.run_requests == [] and empty.skip_message

    (landing / "unrate.csv").write_text((SAMPLE_MACRO / "fred_UNRATE.csv").read_text())
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=platform.instance))
    [request] = tick.run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "1990-01-01"  # clamped to the first partition
    assert request.tags["dagster/asset_partition_range_end"] == "2023-11-01"
    assert request.run_config["ops"]["core_energy__fact_series_value"]["config"]["files"] == [
        str(landing / "unrate.csv")
    ]
    again = sensor.evaluate_tick(dg.build_sensor_context(instance=platform.instance, cursor=tick.cursor))
    assert again.run_requests == []

    # A file touched later is picked up alone.
    later = landing / "later.csv"
    later.write_text("series_code,obs_date,value\nUNRATE,2024-02-01,3.9\n")
    os.utime(later, (time.time() + 5, time.time() + 5))
    newer = sensor.evaluate_tick(dg.build_sensor_context(instance=platform.instance, cursor=tick.cursor))
    [request] = newer.run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "2024-02-01"
    assert request.run_config["ops"]["core_energy__fact_series_value"]["config"]["files"] == [str(later)]


def test_landing_sensor_run_loads_the_files(platform: Platform, conn: psycopg.Connection) -> None:
    platform.materialize(DIM_SERIES)
    landing = platform.settings.landing / "series"
    landing.mkdir(parents=True)
    (landing / "obs.csv").write_text("series_code,obs_date,value\nUNRATE,2024-02-01,3.9\nUNRATE,2024-03-01,3.8\n")
    sensor = platform.defs.resolve_sensor_def("series_files_landed")
    [request] = sensor.evaluate_tick(dg.build_sensor_context(instance=platform.instance)).run_requests
    result = platform.defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=platform.instance,
        asset_selection=[FACT_SERIES_VALUE],
        run_config=request.run_config,
        tags=request.tags,
    )
    assert sorted(e.partition for e in result.get_asset_materialization_events()) == ["2024-02-01", "2024-03-01"]
    assert conn.execute("select count(*) from core_energy.fact_series_value").fetchone()[0] == 2


def test_edit_sensor_requests_an_observation_once_per_new_version(platform: Platform, conn: psycopg.Connection) -> None:
    sensor = platform.defs.resolve_sensor_def("core_energy_tables_edited")
    observe = platform.defs.resolve_job_def(OBSERVE_SERIES_JOB)

    def tick(cursor: str | None):
        return sensor.evaluate_tick(dg.build_sensor_context(instance=platform.instance, cursor=cursor))

    # A new platform: neither table was ever observed.
    first = tick(None)
    [request] = first.run_requests
    assert set(request.asset_selection) == {DIM_SERIES, WIDE_VIEW_FOLLOWERS}
    observe.execute_in_process(instance=platform.instance, asset_selection=request.asset_selection)
    assert tick(first.cursor).run_requests == []

    conn.execute("update core_energy.dim_series set unit = 'pct' where model_col = 'ust_2y'")
    edited = tick(first.cursor)
    [request] = edited.run_requests
    assert request.asset_selection == [DIM_SERIES]
    # Requested once: a failed observation is not retried on every tick.
    assert tick(edited.cursor).run_requests == []
    observe.execute_in_process(instance=platform.instance, asset_selection=request.asset_selection)
    assert tick(edited.cursor).run_requests == []

    conn.execute("insert into core_energy.wide_view_followers values ('public', 'my_wide')")
    [request] = tick(edited.cursor).run_requests
    assert request.asset_selection == [WIDE_VIEW_FOLLOWERS]
