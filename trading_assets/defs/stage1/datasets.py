"""Research datasets built from the platform's own bars and EMAs: per dataset of the config file, its OHLCV and
indicator measurements (views over the bar and EMA tables, so they never lag them), its stage1_datasets row with real
row counts and first/last timestamps, and its export in the client's formats (CSV file; optionally QuestDB)."""

import json
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
from psycopg import sql

from trading_assets.compute.dataset_export import client_csv_frame, indicator_bar_rows
from trading_assets.config import ConfigError, Settings
from trading_assets.defs.market.assets import BAR_KEYS
from trading_assets.defs.market.dimensions import DIM_ASSETS
from trading_assets.defs.market.emas import EMA_KEYS
from trading_assets.defs.market.rebuild import follow_history
from trading_assets.defs.resources import Warehouse
from trading_assets.defs.stage1.spool import GROUP
from trading_assets.io import questdb_sink
from trading_assets.io.ema_store import EMAS_OF_BARS
from trading_assets.io.market_store import BAR_TABLES
from trading_assets.io.postgres import read_frame

# Platform datasets' ids: uuid5 of the slug in this namespace (the desktop client's ids are its own, opaque).
_DATASET_NAMESPACE = uuid.UUID("6f1d7c52-2b7e-4d0a-9a43-4f3c2f1e8b11")
_GRANULARITIES = ("1m", "5m", "15m", "30m", "1h", "4h", "1d")
MEASUREMENTS_EXIST = "measurements_exist"
COUNTS_MATCH = "metadata_counts_match"


@dataclass(frozen=True)
class DatasetSpec:
    slug: str
    symbol: str
    bars: str
    timeframe: str
    periods: tuple[int, ...]
    granularity: str

    @property
    def dataset_id(self) -> uuid.UUID:
        return uuid.uuid5(_DATASET_NAMESPACE, self.slug)

    @property
    def ohlcv_measurement(self) -> str:
        return f"{self.slug}_ohlcv"

    @property
    def indicator_measurement(self) -> str:
        return f"{self.slug}_ind"

    @property
    def ema_family(self) -> str:
        return EMAS_OF_BARS[self.bars][0]

    @property
    def key(self) -> dg.AssetKey:
        return dg.AssetKey([GROUP, self.slug])


def normalized_slug(value: str) -> str:
    """The client's slug rule: lowercase letters and digits, any other run of characters one `_`, trimmed."""
    out, gap = [], False
    for char in value.lower():
        if char.isascii() and char.isalnum():
            out.append(("_" if gap and out else "") + char)
            gap = False
        else:
            gap = True
    return "".join(out)


def read_dataset_specs(path: Path) -> list[DatasetSpec]:
    """The datasets of the config file; a bad entry is refused naming the file, the entry and why."""
    if not path.exists():
        return []
    try:
        entries = tomllib.loads(path.read_text()).get("dataset", [])
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    specs, slugs = [], set()
    for number, entry in enumerate(entries, start=1):
        where = f"{path}, dataset {number}"
        missing = [k for k in ("slug", "symbol", "bars", "timeframe", "periods") if k not in entry]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}")
        slug = str(entry["slug"])
        if slug != normalized_slug(slug) or not slug:
            raise ConfigError(
                f"{where}: slug {slug!r} is not a slug (the client's rule gives {normalized_slug(slug)!r})"
            )
        if slug in slugs:
            raise ConfigError(f"{where}: slug {slug!r} is declared twice")
        if entry["bars"] not in BAR_TABLES:
            raise ConfigError(f"{where}: bars {entry['bars']!r} is not one of {', '.join(BAR_TABLES)}")
        granularity = str(entry.get("granularity", "1d"))
        if granularity not in _GRANULARITIES:
            raise ConfigError(f"{where}: granularity {granularity!r} is not one of {' '.join(_GRANULARITIES)}")
        periods = entry["periods"]
        if not periods or not all(isinstance(p, int) and p > 0 for p in periods):
            raise ConfigError(f"{where}: periods must be positive integers")
        slugs.add(slug)
        specs.append(
            DatasetSpec(slug, str(entry["symbol"]), entry["bars"], str(entry["timeframe"]), tuple(periods), granularity)
        )
    return specs


def _create_views(conn: psycopg.Connection, spec: DatasetSpec) -> None:
    """The two measurements as views: completed bars of the asset and timeframe, and their EMAs by period."""
    layout = conn.execute("select periods from market.ema_layout where family = %s", (spec.ema_family,)).fetchone()
    stored = layout[0] if layout else []
    absent = [p for p in spec.periods if p not in stored]
    if absent:
        raise ConfigError(f"dataset {spec.slug}: EMA periods {absent} are not built for {spec.ema_family}")
    ohlcv = sql.Identifier("stage1", spec.ohlcv_measurement)
    conn.execute(
        sql.SQL(
            "create or replace view {view} as select b.time_open_bar as ts, b.trade_date, b.open, b.high, b.low, "
            "b.close, b.volume from market.{bars} b join market.dim_assets a using (asset_id) "
            "where a.symbol = {symbol} and b.tf = {tf} and not b.is_partial_end"
        ).format(
            view=ohlcv,
            bars=sql.Identifier(BAR_TABLES[spec.bars]),
            symbol=sql.Literal(spec.symbol),
            tf=sql.Literal(spec.timeframe),
        )
    )
    columns = sql.SQL(", ").join(
        sql.SQL("e.ema[{}] as {}").format(sql.Literal(stored.index(p) + 1), sql.Identifier(f"ema_{p}"))
        for p in spec.periods
    )
    conn.execute(
        sql.SQL(
            "create or replace view {view} as select o.ts, o.trade_date, {columns} from {ohlcv} o "
            "join market.dim_assets a on a.symbol = {symbol} join market.{emas} e on e.asset_id = a.asset_id "
            "and e.tf = {tf} and e.trade_date = o.trade_date and not e.roll"
        ).format(
            view=sql.Identifier("stage1", spec.indicator_measurement),
            columns=columns,
            ohlcv=ohlcv,
            symbol=sql.Literal(spec.symbol),
            emas=sql.Identifier(f"{spec.ema_family}_packed"),
            tf=sql.Literal(spec.timeframe),
        )
    )
    for view in (spec.ohlcv_measurement, spec.indicator_measurement):
        conn.execute(sql.SQL("grant select on {} to stage1_app").format(sql.Identifier("stage1", view)))


def measured(conn: psycopg.Connection, view: str) -> tuple[int, object, object] | None:
    """(rows, first ts, last ts) of a measurement view; None when it does not exist."""
    if conn.execute("select to_regclass(%s)", (f"stage1.{view}",)).fetchone()[0] is None:
        return None
    query = sql.SQL("select count(*), min(ts), max(ts) from {}").format(sql.Identifier("stage1", view))
    return conn.execute(query).fetchone()


def dataset_checks(conn: psycopg.Connection, spec: DatasetSpec) -> list[dg.AssetCheckResult]:
    ohlcv, indicators = measured(conn, spec.ohlcv_measurement), measured(conn, spec.indicator_measurement)
    row = conn.execute(
        "select ohlcv_row_count, indicator_row_count from stage1.stage1_datasets where dataset_id = %s",
        (spec.dataset_id,),
    ).fetchone()
    actual = (ohlcv[0] if ohlcv else None, indicators[0] if indicators else None)
    return [
        dg.AssetCheckResult(
            check_name=MEASUREMENTS_EXIST,
            passed=bool(ohlcv and ohlcv[0] and indicators and indicators[0]),
            metadata={"ohlcv_rows": actual[0] or 0, "indicator_rows": actual[1] or 0},
        ),
        dg.AssetCheckResult(
            check_name=COUNTS_MATCH,
            passed=row is not None and tuple(row) == actual,
            metadata={"metadata_counts": str(tuple(row) if row else None), "table_counts": str(actual)},
        ),
    ]


def read_measurements(conn: psycopg.Connection, spec: DatasetSpec) -> pl.DataFrame:
    """Both measurements, one row per bar: ts, the prices and the indicator columns."""
    indicators = [f"ema_{p}" for p in spec.periods]
    query = sql.SQL(
        "select o.ts, o.open, o.high, o.low, o.close, {columns} from {ohlcv} o left join {ind} i using (trade_date) "
        "order by o.ts"
    ).format(
        columns=sql.SQL(", ").join(sql.SQL("i.") + sql.Identifier(c) for c in indicators),
        ohlcv=sql.Identifier("stage1", spec.ohlcv_measurement),
        ind=sql.Identifier("stage1", spec.indicator_measurement),
    )
    schema = {
        "ts": pl.Datetime("us", "UTC"),
        **dict.fromkeys(["open", "high", "low", "close", *indicators], pl.Float64),
    }
    return read_frame(conn, query, schema=schema)


def export_dataset(
    settings: Settings, spec: DatasetSpec, measurements: pl.DataFrame
) -> tuple[Path, Path, dict[str, object]]:
    """The dataset in the client's formats: its CSV layout written beside its place in the lakehouse (the
    caller moves it there once the run commits) and, when TRADING_ASSETS_QUESTDB_ILP is set, its
    `indicator_bars` lines sent to that line-protocol listener. Returns (written, place, metadata)."""
    indicators = [f"ema_{p}" for p in spec.periods]
    target = settings.lakehouse / GROUP / f"{spec.slug}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".csv.partial")
    client_csv_frame(measurements, indicators).write_csv(partial)
    exported: dict[str, object] = {"dagster/uri": str(target), "csv_rows": measurements.height}
    if settings.questdb_ilp:
        tags = {"dataset": spec.slug, "source": "trading_assets", "granularity": spec.granularity}
        rows = indicator_bar_rows(measurements, indicators)
        questdb_sink.send(settings.questdb_ilp, questdb_sink.ilp_buffer("indicator_bars", tags, rows))
        exported["ilp_lines_sent"] = rows.height
    return partial, target, exported


def build_dataset_assets(
    settings: Settings, specs: list[DatasetSpec], partitions: dg.PartitionsDefinition
) -> list[dg.AssetsDefinition]:
    def dataset_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
        @dg.multi_asset(
            name="__".join(spec.key.path),
            specs=[
                dg.AssetSpec(
                    spec.key,
                    group_name=GROUP,
                    deps=[BAR_KEYS[spec.bars], EMA_KEYS[spec.ema_family], DIM_ASSETS],
                    automation_condition=follow_history(spec.key),
                    kinds={"postgres"},
                    description=f"Dataset {spec.slug}: {spec.symbol} {spec.timeframe} bars of {spec.bars} "
                    f"(stage1.{spec.ohlcv_measurement}) and EMA {', '.join(map(str, spec.periods))} of "
                    f"{spec.ema_family} (stage1.{spec.indicator_measurement}), with its stage1_datasets row.",
                    # A run whose writes are rolled back (a blocking check failed) records no materialization.
                    skippable=True,
                )
            ],
            partitions_def=partitions,
            backfill_policy=dg.BackfillPolicy.single_run(),
            check_specs=[
                dg.AssetCheckSpec(n, asset=spec.key, blocking=True, description=d)
                for n, d in (
                    (MEASUREMENTS_EXIST, "both measurements exist and hold rows"),
                    (COUNTS_MATCH, "the stage1_datasets row's counts equal the measurements' rows"),
                )
            ],
        )
        def dataset(context: dg.AssetExecutionContext, warehouse: Warehouse):
            with warehouse.transaction() as conn:
                _create_views(conn, spec)
                ohlcv = measured(conn, spec.ohlcv_measurement)
                indicators = measured(conn, spec.indicator_measurement)
                conn.execute(
                    "select stage1.upsert_stage1_dataset(%s, %s, %s, %s, 'trading_assets', %s, %s, %s, %s, %s, %s, "
                    "%s, %s, %s::jsonb)",
                    (
                        spec.dataset_id, spec.slug, spec.symbol, spec.granularity, spec.ohlcv_measurement,
                        spec.indicator_measurement, ohlcv[0], indicators[0], ohlcv[1], ohlcv[2], indicators[1],
                        indicators[2], json.dumps({
                            "bars": spec.bars, "timeframe": spec.timeframe, "ema_family": spec.ema_family,
                            "periods": list(spec.periods),
                        }),
                    ),
                )  # fmt: skip
                checks = dataset_checks(conn, spec)
                if not all(c.passed for c in checks):
                    conn.rollback()
                    yield from checks
                    return
                # In the transaction: a failed export (the listener down) rolls the run back and records nothing.
                written, target, exported = export_dataset(settings, spec, read_measurements(conn, spec))
            written.replace(target)
            yield dg.MaterializeResult(
                asset_key=spec.key,
                metadata={
                    "dataset_id": str(spec.dataset_id),
                    "ohlcv_rows": ohlcv[0],
                    "indicator_rows": indicators[0],
                    "first_ts": str(ohlcv[1]),
                    "last_ts": str(ohlcv[2]),
                    **exported,
                },
                check_results=checks,
            )

        return dataset

    return [dataset_asset(spec) for spec in specs]
