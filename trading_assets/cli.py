"""`trading-assets`: the database, loads, the demo, validation and the UI, all through Dagster."""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from trading_assets.config import SAMPLE_DATA_DIR, ConfigError, Settings
from trading_assets.errors import InputError


def _print_summary(title: str, summary, seconds: float) -> None:
    print(f"\n== {title}: {'succeeded' if summary.success else 'FAILED'} in {seconds:.1f}s (run {summary.run_id})")
    by_asset: dict[str, list] = {}
    for asset, partition, metadata in summary.materializations:
        by_asset.setdefault(asset, []).append((partition, metadata))
    for asset, entries in sorted(by_asset.items()):
        partitions = [p for p, _ in entries if p]
        metadata = entries[-1][1]
        shown = ", ".join(f"{k}={v}" for k, v in metadata.items() if k not in {"path", "source_file"})
        where = f" [{partitions[0]}..{partitions[-1]}: {len(partitions)} partitions]" if partitions else ""
        print(f"  materialized {asset}{where} {shown}")
    for asset, name, passed, severity in summary.checks:
        print(f"  check {asset}:{name} {'passed' if passed else 'FAILED'} ({severity})")
    for error in summary.errors:
        print(f"  error: {error}")


def _cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from trading_assets.io.database import redact, stop_embedded
    from trading_assets.io.migrations import migrate
    from trading_assets.orchestration import prepare_environment

    if args.action == "stop":
        if settings.database_url:
            print("TRADING_ASSETS_DATABASE_URL is set: that server is not managed here; nothing stopped")
        elif stop_embedded(settings.embedded_pgdata):
            print(f"stopped the embedded PostgreSQL in {settings.embedded_pgdata}")
        else:
            print("the embedded PostgreSQL is not running")
        return 0
    url = prepare_environment(settings)
    if args.action == "url":
        print(url)
    elif args.action == "migrate":
        applied = migrate(url)
        print(f"applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ''}")
    else:
        print(f"PostgreSQL ready and migrated: {redact(url)}")
    return 0


def _load_series(settings: Settings, files: list[Path]) -> int:
    from trading_assets.compute.series import observation_problems
    from trading_assets.defs.metadata.assets import FACT_SERIES_VALUE
    from trading_assets.defs.partitions import key_range_for_dates, monthly_partitions, partitions_end, range_tags
    from trading_assets.errors import raise_if_any
    from trading_assets.io import series_store
    from trading_assets.io.postgres import connect
    from trading_assets.orchestration import prepare_environment, run_assets
    from trading_assets.sources.series_files import read_observation_batch

    url = prepare_environment(settings)
    partitions = monthly_partitions(settings)
    batch = read_observation_batch(files)
    with connect(url) as conn:
        raise_if_any(observation_problems(batch, series_store.known_series(conn), partitions_end(partitions)))
    if batch.is_empty():
        print("no observations in the given files")
        return 0
    first_key, last_key = key_range_for_dates(partitions, batch["obs_date"].min(), batch["obs_date"].max())
    started = time.perf_counter()
    summary = run_assets(
        settings,
        [FACT_SERIES_VALUE],
        tags=range_tags(first_key, last_key),
        run_config={
            "ops": {"core_energy__fact_series_value": {"config": {"files": [str(f.resolve()) for f in files]}}}
        },
    )
    _print_summary("load series", summary, time.perf_counter() - started)
    return 0 if summary.success else 1


def _load_prices(settings: Settings, args: argparse.Namespace) -> int:
    from trading_assets.defs.market.assets import PRICE_HISTORIES
    from trading_assets.defs.partitions import key_range_for_dates, monthly_partitions, range_tags
    from trading_assets.orchestration import prepare_environment, run_assets
    from trading_assets.sources.price_files import read_price_file

    prepare_environment(settings)
    specs, dates = [], []
    for path in args.files:
        # Read once here so a file of unknown layout is refused before any run starts.
        dates += read_price_file(path, args.format, args.price_divisor).prices["trade_date"].to_list()
        spec = {"path": str(path.resolve()), "symbol": args.symbol or path.stem.upper(), "format": args.format}
        spec |= {"price_divisor": args.price_divisor, "timezone": args.timezone, "calendar": args.calendar}
        spec |= {"catalog_symbol": args.catalog_symbol}
        specs.append(spec)
    if not dates:
        print("no price rows in the given files")
        return 0
    partitions = monthly_partitions(settings)
    started = time.perf_counter()
    summary = run_assets(
        settings,
        [PRICE_HISTORIES],
        tags=range_tags(*key_range_for_dates(partitions, min(dates), max(dates))),
        run_config={"ops": {"market__price_histories": {"config": {"files": specs}}}},
    )
    _print_summary("load prices", summary, time.perf_counter() - started)
    if summary.success:
        print("bars follow by automation under `trading-assets ui`, or now with `trading-assets refresh --bars`")
    return 0 if summary.success else 1


def _load_symbols(settings: Settings, args: argparse.Namespace) -> int:
    from trading_assets.catalog import to_utc
    from trading_assets.defs.catalog.assets import SYMBOLS
    from trading_assets.orchestration import prepare_environment, run_assets

    prepare_environment(settings)
    effective_at = to_utc(args.effective_at).isoformat() if args.effective_at else None
    local = args.source in ("file", "binance")
    inputs = [str(Path(name).resolve()) if local else name for name in args.inputs]
    config = {"inputs": inputs, "source": args.source, "effective_at": effective_at}
    started = time.perf_counter()
    summary = run_assets(settings, [SYMBOLS], run_config={"ops": {"catalog__symbols": {"config": config}}})
    _print_summary("load symbols", summary, time.perf_counter() - started)
    return 0 if summary.success else 1


def _symbols_as_of(settings: Settings, args: argparse.Namespace) -> int:
    from trading_assets import catalog

    at = args.at
    if at is not None and re.fullmatch(r"-?\d+(\.\d+)?", at):
        at = float(at)
    version = catalog.get_instrument(args.symbol, at, settings=settings)
    if version is None:
        print(f"{args.symbol}: no version valid at {args.at or 'now'}")
        return 1
    for name, value in version.items():
        if value is not None:
            print(f"{name:<14} {value}")
    return 0


def _refresh(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, date, datetime

    from trading_assets.defs.market.assets import BAR_KEYS
    from trading_assets.defs.market.automation import daily_refresh_range
    from trading_assets.defs.market.emas import EMA_KEYS
    from trading_assets.defs.partitions import key_range_for_dates, monthly_partitions, range_tags
    from trading_assets.io.alerts import Alert, send_alert
    from trading_assets.orchestration import prepare_environment, run_assets

    partitions = monthly_partitions(settings)
    keys = partitions.get_partition_keys()
    if args.start or args.end:
        first = date.fromisoformat(args.start) if args.start else date.fromisoformat(keys[0])
        last = date.fromisoformat(args.end) if args.end else datetime.now(UTC).date()
        key_range = key_range_for_dates(partitions, first, last)
    elif args.full_rebuild:
        key_range = (keys[0], keys[-1])
    else:
        key_range = daily_refresh_range(partitions, datetime.now(UTC).date())
    ids = [] if args.ids in (None, "all") else [int(i) for i in args.ids.split(",")]
    bars_config = {"full_window": args.full_rebuild, "asset_ids": ids}
    # The freshness gate guards EMAs built on their own; `--all` has just refreshed the bars.
    hours = args.staleness_hours or settings.market_staleness_hours
    ema_config = {**bars_config, "skip_stale_check": args.skip_stale_check or args.all, "staleness_hours": hours}
    components = [(key, bars_config) for key in BAR_KEYS.values()] if args.bars or args.all else []
    components += [(key, ema_config) for key in EMA_KEYS.values()] if args.emas or args.all else []
    plan = f"partitions {key_range[0]}..{key_range[1]}, assets {ids or 'all'}"
    plan += ", full rebuild" if args.full_rebuild else ", new and changed days"
    if args.emas or args.all:
        plan += ", EMAs on stale bars too" if ema_config["skip_stale_check"] else f", EMAs gated at {hours:g} h"
    if args.dry_run:
        print(f"would refresh {plan}:")
        for key, _ in components:
            print(f"  {key.to_user_string()}")
        return 0

    url = prepare_environment(settings)
    run_config = {} if not args.verbose else {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    lines, failed, failed_checks = [f"refresh {datetime.now(UTC):%Y-%m-%d %H:%M:%S}Z: {plan}"], [], []
    for key, config in components:
        op = "__".join(key.path)
        started = time.perf_counter()
        summary = run_assets(
            settings,
            [key],
            tags=range_tags(*key_range),
            run_config={**run_config, "ops": {op: {"config": config}}},
            table_checks=False,
        )
        seconds = time.perf_counter() - started
        metadata = next((m for _, _, m in summary.materializations), {})
        checks_failed = [name for _, name, passed, _ in summary.checks if not passed]
        failed_checks += summary.failed_error_checks
        status = "ok" if summary.success else "FAILED"
        line = (
            f"  {key.to_user_string():<42} {status:<6} rows={metadata.get('rows', 0)} "
            f"rejects={metadata.get('rejects', 0)} repairs={metadata.get('repairs', 0)} "
            f"assets={metadata.get('assets', 0)} {seconds:.1f}s"
        )
        if metadata.get("stale_assets_waiting"):
            line += f" stale assets left queued={metadata['stale_assets_waiting']}"
        if checks_failed:
            line += f" checks failed: {', '.join(checks_failed)}"
        for entry in [line, *(f"    error: {e}" for e in summary.errors)]:
            print(entry)
            lines.append(entry)
        if not summary.success:
            failed.append(key.to_user_string())
            if not args.continue_on_error:
                break
    lines.append(f"  components {len(components)}, failed {len(failed)}{': ' + ', '.join(failed) if failed else ''}")
    lines.append("  (table-wide WARN checks run with `trading-assets validate` and the daily validate schedule)")
    print("\n".join(lines[-2:]))
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log_file = settings.logs_dir / f"refresh-{datetime.now(UTC):%Y-%m-%d}.log"
    with log_file.open("a") as handle:
        handle.write("\n".join(lines) + "\n")
    print(f"summary appended to {log_file}")
    if failed_checks:
        send_alert(settings, url, Alert("CRITICAL", "Refresh: blocking checks FAILED", "\n".join(failed_checks), "cli"))
    elif failed:
        send_alert(settings, url, Alert("ERROR", "Refresh failed", "\n".join(failed), "cli"))
    return 1 if failed else 0


# The bundled sample prices (data/sample/prices) and their symbols in the bundled catalog sample, which
# gives them their timezone and trading calendar.
SAMPLE_PRICES = {"SPY": "AMEX:SPY", "BTCUSD": "COINBASE:BTCUSD"}
SAMPLE_SYMBOLS_EFFECTIVE = "2010-01-01T00:00:00+00:00"


def _demo(settings: Settings) -> int:
    from trading_assets.defs.catalog.assets import EXCHANGES, SYMBOLS
    from trading_assets.defs.market.assets import BAR_KEYS, PRICE_HISTORIES
    from trading_assets.defs.market.emas import EMA_KEYS
    from trading_assets.defs.metadata.assets import series_landing_dir
    from trading_assets.defs.partitions import key_range_for_dates, monthly_partitions, range_tags
    from trading_assets.io.postgres import connect
    from trading_assets.orchestration import all_asset_keys, prepare_environment, run_all_checks, run_assets
    from trading_assets.sources.price_files import read_price_file

    started = time.perf_counter()
    url = prepare_environment(settings)
    print(f"database ready ({time.perf_counter() - started:.1f}s)")
    landing = series_landing_dir(settings)
    landing.mkdir(parents=True, exist_ok=True)
    for sample in sorted((SAMPLE_DATA_DIR / "macro").glob("*.csv")):
        shutil.copy2(sample, landing / sample.name)
    partitions = monthly_partitions(settings)
    keys = partitions.get_partition_keys()
    market = {PRICE_HISTORIES, *BAR_KEYS.values(), *EMA_KEYS.values()}
    catalog = {SYMBOLS, EXCHANGES}
    series = run_assets(
        settings,
        [k for k in all_asset_keys(settings) if k not in market | catalog],
        tags=range_tags(keys[0], keys[-1]),
    )
    _print_summary("series metadata (whole history)", series, time.perf_counter() - started)

    sample_symbols = str(SAMPLE_DATA_DIR / "symbols" / "symbols.csv")
    symbols = run_assets(
        settings,
        sorted(catalog),
        run_config={
            "ops": {
                "catalog__symbols": {"config": {"inputs": [sample_symbols], "effective_at": SAMPLE_SYMBOLS_EFFECTIVE}}
            }
        },
    )
    _print_summary("symbol catalog (sample records)", symbols, time.perf_counter() - started)

    specs = [
        {"path": str(SAMPLE_DATA_DIR / "prices" / f"{symbol}.csv"), "symbol": symbol, "catalog_symbol": listed}
        for symbol, listed in SAMPLE_PRICES.items()
    ]
    dates = [d for spec in specs for d in read_price_file(Path(spec["path"])).prices["trade_date"].to_list()]
    # As `refresh --all`: prices, bars, then EMAs on them (the sample is history, so no freshness gate); the
    # table-wide checks run with validate below.
    emas = {"__".join(key.path): {"config": {"skip_stale_check": True}} for key in EMA_KEYS.values()}
    prices = run_assets(
        settings,
        sorted(market),
        tags=range_tags(*key_range_for_dates(partitions, min(dates), max(dates))),
        run_config={"ops": {"market__price_histories": {"config": {"files": specs}}, **emas}},
        table_checks=False,
    )
    _print_summary("market data: prices, bars, EMAs (sample months)", prices, time.perf_counter() - started)
    checked = run_all_checks(settings)
    _print_summary("validate (all asset checks)", checked, time.perf_counter() - started)

    with connect(url) as conn:
        columns = [d.name for d in conn.execute("select * from core_energy.v_series_wide limit 0").description]
        rows, first, last = conn.execute(
            "select count(*), min(date), max(date) from core_energy.v_series_wide"
        ).fetchone()
        bars = conn.execute(
            "select alignment_source, count(*), count(*) filter (where not is_partial_end) "
            "from market.price_bars_multi_tf_u group by 1 order by 1"
        ).fetchall()
        emas = conn.execute(
            "select alignment_source, count(*), count(distinct (asset_id, tf, period)) "
            "from market.ema_multi_tf_u group by 1 order by 1"
        ).fetchall()
        linked = conn.execute(
            "select asset_symbol, symbol, count(*), min(tick_size) from catalog.price_bars_1d_with_symbol "
            "group by 1, 2 order by 1"
        ).fetchall()
    print(f"\ncore_energy.v_series_wide: {rows} dates {first}..{last}, columns {', '.join(columns)}")
    for source, total, canonical in bars:
        print(f"market.price_bars_multi_tf_u [{source}]: {total} snapshot rows, {canonical} canonical")
    for source, total, series_count in emas:
        print(f"market.ema_multi_tf_u [{source}]: {total} EMA rows in {series_count} asset x tf x period series")
    for asset, symbol, days, tick in linked:
        print(f"catalog.price_bars_1d_with_symbol: {asset} -> {symbol}, {days} daily bars, tick size {tick}")
    print(
        f"\ndemo finished in {time.perf_counter() - started:.1f}s. Open the UI with `make ui` (http://127.0.0.1:3000)."
    )
    succeeded = series.success and symbols.success and prices.success
    return 0 if succeeded and not checked.failed_error_checks else 1


def _validate(settings: Settings) -> int:
    from trading_assets.orchestration import prepare_environment, run_all_checks

    prepare_environment(settings)
    started = time.perf_counter()
    summary = run_all_checks(settings)
    _print_summary("validate", summary, time.perf_counter() - started)
    failed = summary.failed_error_checks
    if failed:
        print(f"\n{len(failed)} ERROR check(s) failed: {', '.join(failed)}")
    return 1 if failed else 0


def _ui(settings: Settings, port: int) -> int:
    from trading_assets.orchestration import prepare_environment

    prepare_environment(settings)
    command = [
        str(Path(sys.executable).with_name("dagster")),
        "dev",
        "-m",
        "trading_assets.definitions",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    print(f"Dagster UI on http://127.0.0.1:{port} (Ctrl-C stops it)")
    return subprocess.call(command, env=os.environ.copy())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trading-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="the PostgreSQL server and its schema")
    db.add_argument("action", choices=["up", "url", "stop", "migrate"])

    load = commands.add_parser("load", help="load input files through Dagster")
    load_kinds = load.add_subparsers(dest="kind", required=True)
    series = load_kinds.add_parser("series", help="FRED CSV or series_code,obs_date,value files")
    series.add_argument("files", nargs="+", type=Path)

    prices = load_kinds.add_parser("prices", help="daily price files: CSV (any common header) or Lean daily")
    prices.add_argument("files", nargs="+", type=Path)
    prices.add_argument("--symbol", help="symbol of every file (default: each file's name)")
    prices.add_argument("--format", choices=["auto", "csv", "lean"], default="auto")
    prices.add_argument("--price-divisor", type=float, default=1.0, help="Lean equity files store price x 10000")
    prices.add_argument("--timezone", help="the asset's IANA timezone (assigns trading dates)")
    prices.add_argument("--calendar", help="exchange_calendars code, e.g. XNYS (default: every day)")
    prices.add_argument(
        "--catalog-symbol", help="EXCHANGE:SYMBOL in the symbol catalog: timezone and calendar come from it"
    )

    symbols = load_kinds.add_parser("symbols", help="symbol records: files, Binance snapshots, ccxt, TradingView")
    symbols.add_argument(
        "inputs", nargs="+", help="files (file, binance), ccxt exchange ids (ccxt) or scanner markets (tradingview)"
    )
    symbols.add_argument("--source", choices=["file", "binance", "ccxt", "tradingview"], default="file")
    symbols.add_argument("--effective-at", help="when the records were true (default: the snapshot's time, else now)")

    as_of = commands.add_parser("symbols", help="point-in-time symbol lookups")
    as_of.add_argument("action", choices=["as-of"])
    as_of.add_argument("symbol", help="EXCHANGE:SYMBOL, e.g. BINANCE:ETHBTC")
    as_of.add_argument("--at", help="ISO time or date, or epoch seconds (default: now)")

    refresh = commands.add_parser("refresh", help="bring bars and EMAs up to date through Dagster")
    stage = refresh.add_mutually_exclusive_group(required=True)
    stage.add_argument("--all", action="store_true", help="bars, then EMAs (no freshness gate)")
    stage.add_argument("--bars", action="store_true")
    stage.add_argument("--emas", action="store_true")
    refresh.add_argument("--ids", help="asset ids, e.g. 1,52 (default: all)")
    refresh.add_argument("--start", help="first day (YYYY-MM-DD) of the partitions to run")
    refresh.add_argument("--end", help="last day (YYYY-MM-DD) of the partitions to run")
    refresh.add_argument("--full-rebuild", action="store_true", help="recompute everything in the range")
    refresh.add_argument("--dry-run", action="store_true", help="print what would run")
    refresh.add_argument("--verbose", action="store_true")
    refresh.add_argument("--continue-on-error", action="store_true")
    refresh.add_argument("--skip-stale-check", action="store_true", help="(EMAs) build on stale bars")
    refresh.add_argument(
        "--staleness-hours", type=float, help="(EMAs) bars older than this are stale (default: the setting, 48)"
    )

    commands.add_parser("demo", help="load the sample data, materialize everything, run the checks")
    commands.add_parser("validate", help="run every asset check; exit 1 when an ERROR check fails")
    ui = commands.add_parser("ui", help="Dagster UI with the daemon (schedules, sensors, automation)")
    ui.add_argument("--port", type=int, default=3000)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Dagster flags beta/preview parameters (e.g. backfill_policy) on every load; they are not the user's concern.
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")
    try:
        settings = Settings.from_env()
        if args.command == "db":
            return _cmd_db(args, settings)
        if args.command == "load":
            if args.kind == "prices":
                return _load_prices(settings, args)
            if args.kind == "symbols":
                return _load_symbols(settings, args)
            return _load_series(settings, args.files)
        if args.command == "refresh":
            return _refresh(settings, args)
        if args.command == "symbols":
            return _symbols_as_of(settings, args)
        if args.command == "demo":
            return _demo(settings)
        if args.command == "validate":
            return _validate(settings)
        return _ui(settings, args.port)
    except (InputError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
