"""The market's dimension tables, edited by users with SQL: observed, so that the graph shows a change and
automation rebuilds what it implies.

An observation records each table's data version, a digest of what the derived tables read from it; a
new version makes the assets that depend on it rebuild all their months. The database itself queues the
affected rows when a dimension is edited (triggers in sql/010), so such a rebuild rewrites exactly them.
"""

import hashlib

import dagster as dg
import psycopg

from trading_assets.config import Settings
from trading_assets.defs.resources import Warehouse
from trading_assets.io.database import ready_database_url
from trading_assets.io.postgres import connect

GROUP = "market"
DIM_ASSETS = dg.AssetKey([GROUP, "dim_assets"])
DIM_TIMEFRAME = dg.AssetKey([GROUP, "dim_timeframe"])
DIM_EMA_PERIOD = dg.AssetKey([GROUP, "dim_ema_period"])
# dim_timeframe is observed per bar family: a new timeframe rebuilds its family only.
TIMEFRAME_FAMILIES = ["multi_tf", "cal_iso", "cal_us", "cal_anchor_iso", "cal_anchor_us"]

_DIGESTS = {
    # Registering a new asset changes no existing bar (its bars come with its prices); an edited timezone or
    # calendar changes all of the asset's bars.
    DIM_ASSETS: "select md5(coalesce(string_agg(asset_id || ':' || timezone || ':' || calendar, ',' order by "
    "asset_id), '')) from market.dim_assets where attributes_changed_at is not null",
    DIM_EMA_PERIOD: "select md5(coalesce(string_agg(period::text, ',' order by period), '')) "
    "from market.dim_ema_period where is_active",
}
_TIMEFRAME_DIGESTS = (
    "select f.family, md5(coalesce(string_agg(t.tf || ':' || t.is_active, ',' order by t.tf), '')) "
    "from unnest(%s::text[]) as f (family) left join market.dim_timeframe t using (family) group by f.family"
)


def dimension_versions(conn: psycopg.Connection) -> dict[str, str]:
    """The current data version of every market dimension (dim_timeframe per family), by a readable name."""
    versions = {key.to_user_string(): conn.execute(query).fetchone()[0] for key, query in _DIGESTS.items()}
    for family, digest in conn.execute(_TIMEFRAME_DIGESTS, (TIMEFRAME_FAMILIES,)).fetchall():
        versions[f"{DIM_TIMEFRAME.to_user_string()}[{family}]"] = digest
    return versions


def timeframes_of(family: str) -> dg.SpecificPartitionsPartitionMapping:
    """Every month of a bar family (or of the EMAs over it) depends on its own part of dim_timeframe."""
    return dg.SpecificPartitionsPartitionMapping([family])


def build_dimension_assets() -> list[dg.AssetsDefinition]:
    @dg.observable_source_asset(
        key=DIM_ASSETS,
        group_name=GROUP,
        kinds={"postgres"},
        description="Assets (symbol, timezone, trading calendar), registered by price loads and edited with SQL. "
        "Its data version follows the timezones and calendars that were changed after registration: such an "
        "edit queues every bar of the asset.",
    )
    def dim_assets(warehouse: Warehouse) -> dg.DataVersion:
        with warehouse.transaction() as conn:
            return dg.DataVersion(conn.execute(_DIGESTS[DIM_ASSETS]).fetchone()[0])

    @dg.observable_source_asset(
        key=DIM_TIMEFRAME,
        group_name=GROUP,
        kinds={"postgres"},
        partitions_def=dg.StaticPartitionsDefinition(TIMEFRAME_FAMILIES),
        description="Timeframes of the multi-day bar families, one partition per family. Insert a row to add a "
        "timeframe; set is_active = false to retire one (rows are never deleted). Either queues the family's "
        "bars (and the EMAs over them) for a rebuild.",
    )
    def dim_timeframe(warehouse: Warehouse) -> dg.DataVersionsByPartition:
        with warehouse.transaction() as conn:
            rows = conn.execute(_TIMEFRAME_DIGESTS, (TIMEFRAME_FAMILIES,)).fetchall()
        return dg.DataVersionsByPartition({family: dg.DataVersion(digest) for family, digest in rows})

    @dg.observable_source_asset(
        key=DIM_EMA_PERIOD,
        group_name=GROUP,
        kinds={"postgres"},
        description="EMA periods (9, 10, 21, 50, 100, 200 by default). A changed list of active periods "
        "rebuilds every EMA family over all its months.",
    )
    def dim_ema_period(warehouse: Warehouse) -> dg.DataVersion:
        with warehouse.transaction() as conn:
            return dg.DataVersion(conn.execute(_DIGESTS[DIM_EMA_PERIOD]).fetchone()[0])

    return [dim_assets, dim_timeframe, dim_ema_period]


def build_dimension_sensor(settings: Settings) -> dg.SensorDefinition:
    @dg.sensor(
        name="market_dimensions_changed",
        job_name="observe_market_dimensions",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Observes the market dimension tables when one was edited (a cheap digest per minute), so "
        "that automation rebuilds what the edit implies.",
    )
    def market_dimensions_changed(context: dg.SensorEvaluationContext):
        url = ready_database_url(settings.database_url, settings.embedded_pgdata)
        with connect(url) as conn:
            versions = dimension_versions(conn)
        cursor = ";".join(f"{name}={digest}" for name, digest in sorted(versions.items()))
        if cursor == context.cursor:
            return dg.SkipReason("no dimension table changed")
        run_key = hashlib.sha256(cursor.encode()).hexdigest()
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=run_key)], cursor=cursor)

    return market_dimensions_changed
