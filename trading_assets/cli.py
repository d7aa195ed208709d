"""`trading-assets`: the database, loads, the demo, validation and the UI, all through Dagster."""

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TextIO

from trading_assets.config import PROJECT_ROOT, SAMPLE_DATA_DIR, ConfigError, Settings
from trading_assets.errors import InputError, QueueNotServed

# Exit statuses, the same for every command: 0 done (every input row used); 1 a run failed (a blocking check
# or a step error; nothing of it was kept); 2 refused (bad input, options or settings: nothing was written);
# 3 the database cannot be reached; 4 done, with rejected input rows recorded with file, line and reason.
EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_WITH_REJECTS = 2, 3, 4


def _print_summary(title: str, summary, seconds: float) -> None:
    how = "queued for the daemon" if summary.queued else "run here"
    print(
        f"\n== {title}: {'succeeded' if summary.success else 'FAILED'} in {seconds:.1f}s "
        f"(job {summary.job_name}, run {summary.run_id}, {how})"
    )
    by_asset: dict[str, list] = {}
    for asset, partition, metadata in summary.materializations:
        by_asset.setdefault(asset, []).append((partition, metadata))
    for asset, entries in sorted(by_asset.items()):
        partitions = [p for p, _ in entries if p]
        shown = ", ".join(f"{k}={v}" for k, v in entries[-1][1].items() if k in _SHOWN_METADATA)
        where = f" [{partitions[0]}..{partitions[-1]}: {len(partitions)} partitions]" if partitions else ""
        print(f"  materialized {asset}{where} {shown}")
    for asset, name, passed, severity, _ in summary.checks:
        print(f"  check {asset}:{name} {'passed' if passed else 'FAILED'} ({severity})")
    for error in summary.errors:
        print(f"  error: {error}")
    for note in summary.interrupted:
        print(f"  earlier: {note}")


# What a summary line shows of a materialization's metadata.
_SHOWN_METADATA = (
    "dagster/row_count", "assets_rebuilt", "run_rows_written", "run_rows", "run_inserted", "run_revised",
    "run_rejects", "repairs", "run_observations", "symbols", "first_date", "last_date", "seconds",
    "quarantined_assets", "waited_for_other_run_seconds",
)  # fmt: skip


def _cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from trading_assets.io.backup import backup_tables
    from trading_assets.io.database import redact, stop_embedded
    from trading_assets.io.migrations import migrate
    from trading_assets.io.postgres import connect
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
    elif args.action == "backup":
        with connect(url) as conn:
            tables = conn.execute(
                "select table_schema, table_name from information_schema.tables "
                "where table_schema = %s and table_type = 'BASE TABLE' order by 2",
                (args.schema,),
            ).fetchall()
            folder = backup_tables(conn, tables, settings.backup_dir / args.schema, "backup")
        print(f"backed up {len(tables)} table(s) of {args.schema} to {folder}")
    elif args.action == "migrate":
        applied = migrate(url, backup_dir=settings.backup_dir)
        print(f"applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ''}")
    else:
        print(f"PostgreSQL ready and migrated: {redact(url)}")
    return 0


def _load_series(settings: Settings, files: list[Path], encoding: str = "utf-8") -> int:
    from trading_assets.compute.series import observation_problems
    from trading_assets.defs.jobs import LOAD_SERIES_JOB
    from trading_assets.defs.partitions import key_range_for_dates, monthly_partitions, partitions_end, range_tags
    from trading_assets.errors import raise_if_any
    from trading_assets.io import series_store
    from trading_assets.io.postgres import connect
    from trading_assets.orchestration import prepare_environment, run_job
    from trading_assets.sources.series_files import read_observation_batch

    url = prepare_environment(settings)
    partitions = monthly_partitions(settings)
    # Read here as the run will read them: a file it would refuse (no rows, not UTF-8, NaN, absurd dates) is
    # refused before any run starts.
    batch = read_observation_batch(files, encoding)
    with connect(url) as conn:
        raise_if_any(observation_problems(batch, series_store.known_series(conn), partitions_end(partitions)))
    if batch.is_empty():
        print("no observations in the given files")
        return 0
    first_key, last_key = key_range_for_dates(partitions, batch["obs_date"].min(), batch["obs_date"].max())
    config = {"files": [str(f.resolve()) for f in files], "encoding": encoding}
    started = time.perf_counter()
    summary = run_job(
        LOAD_SERIES_JOB,
        tags=range_tags(first_key, last_key),
        run_config={"ops": {"core_energy__fact_series_value": {"config": config}}},
    )
    _print_summary("load series", summary, time.perf_counter() - started)
    return _loaded(settings, url, summary)


def _finished(settings: Settings, url: str, summary) -> int:
    """Exit status of a command that ran one run; raises the run's alerts when no daemon will."""
    from trading_assets.defs.ops.alerts import alerts_of_run
    from trading_assets.io.alerts import send_alert
    from trading_assets.orchestration import dagster_instance

    if not summary.queued:
        with dagster_instance() as instance:
            alerts = alerts_of_run(instance, summary.run_id)
        for alert in alerts:
            send_alert(settings, url, alert)
    return 0 if summary.success else 1


def _loaded(settings: Settings, url: str, summary) -> int:
    """_finished for a load: a load that kept its good rows and recorded rejects says so, and exits 4."""
    status = _finished(settings, url, summary)
    # Each asset's run metadata once (a run over several months records a materialization per month).
    latest = {asset: metadata for asset, _, metadata in summary.materializations}
    rejects = sum(int(metadata.get("run_rejects", 0) or 0) for metadata in latest.values())
    if status == 0 and rejects:
        print(f"{rejects} input row(s) rejected and recorded with file, line and reason (run_rejects above)")
        return EXIT_WITH_REJECTS
    return status


def _load_prices(settings: Settings, args: argparse.Namespace) -> int:
    from trading_assets.compute.validation import symbol_of
    from trading_assets.defs.jobs import LOAD_PRICES_JOB
    from trading_assets.defs.market.assets import PriceFileSpec, price_span
    from trading_assets.defs.partitions import key_range_for_dates, monthly_partitions, range_tags
    from trading_assets.io.postgres import connect
    from trading_assets.orchestration import prepare_environment, run_job

    url = prepare_environment(settings)
    options = {"format": args.format, "price_divisor": args.price_divisor, "timezone": args.timezone}
    options |= {"calendar": args.calendar, "catalog_symbol": args.catalog_symbol}
    options |= {"encoding": args.encoding, "date_order": args.date_order}
    specs = [
        PriceFileSpec(path=str(path.resolve()), symbol=symbol_of(args.symbol or path.stem), **options)
        for path in args.files
    ]
    # Read here as the run will read them, so that a file it would refuse is refused before any run starts.
    with connect(url) as conn:
        span = price_span(conn, specs, settings.price_bounds)
    if span is None:
        print("no usable price rows in the given files")
        return 0
    partitions = monthly_partitions(settings)
    started = time.perf_counter()
    summary = run_job(
        LOAD_PRICES_JOB,
        tags=range_tags(*key_range_for_dates(partitions, *span)),
        run_config={"ops": {"market__price_histories": {"config": {"files": [s.model_dump() for s in specs]}}}},
    )
    _print_summary("load prices", summary, time.perf_counter() - started)
    if summary.success:
        print(
            "bars and EMAs follow by automation under `trading-assets ui`, or now with `trading-assets refresh --all`"
        )
    return _loaded(settings, url, summary)


def _load_symbols(settings: Settings, args: argparse.Namespace) -> int:
    from trading_assets.catalog import parse_moment
    from trading_assets.defs.catalog.assets import CATALOG_OP, SYMBOLS
    from trading_assets.defs.jobs import LOAD_SYMBOLS_JOB
    from trading_assets.errors import raise_if_any
    from trading_assets.io import catalog_store
    from trading_assets.io.postgres import connect
    from trading_assets.orchestration import prepare_environment, run_job
    from trading_assets.sources.symbol_files import read_records

    try:
        effective_at = parse_moment(args.effective_at).isoformat() if args.effective_at else None
    except ValueError as error:
        print(f"error: --effective-at {args.effective_at}: {error}", file=sys.stderr)
        return EXIT_REFUSED
    url = prepare_environment(settings)
    local = args.source in ("file", "binance")
    inputs = [str(Path(name).resolve()) if local and not re.match(r"https?://", name) else name for name in args.inputs]
    if local:
        # Read here first: bad files are refused before any run starts (every problem with its file and line).
        with connect(url) as conn:
            exchanges = catalog_store.known_exchanges(conn)
        problems = []
        for name in inputs:
            if re.match(r"https?://", name):
                continue  # an endpoint is read once, by the run
            try:
                read_records(Path(name), exchanges, args.source)
            except InputError as error:
                problems += error.problems
        raise_if_any(problems)
    config = {"inputs": inputs, "source": args.source, "effective_at": effective_at}
    config["full_listing"] = args.full_listing
    started = time.perf_counter()
    summary = run_job(LOAD_SYMBOLS_JOB, run_config={"ops": {CATALOG_OP: {"config": config}}})
    _print_summary("load symbols", summary, time.perf_counter() - started)
    for asset, _, metadata in summary.materializations:
        if asset == SYMBOLS.to_user_string() and metadata.get("listing_warning"):
            print(f"warning: {metadata['listing_warning']}", file=sys.stderr)
    return _loaded(settings, url, summary)


def _symbols_as_of(settings: Settings, args: argparse.Namespace) -> int:
    from trading_assets import catalog

    try:
        at = catalog.parse_moment(args.at) if args.at is not None else None
    except ValueError as error:
        print(f"error: --at {args.at}: {error}", file=sys.stderr)
        return EXIT_REFUSED
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

    from trading_assets.defs import jobs
    from trading_assets.defs.market.assets import BAR_KEYS
    from trading_assets.defs.market.emas import EMA_KEYS
    from trading_assets.defs.partitions import REBUILD_TAG, key_range_for_dates, monthly_partitions, range_tags
    from trading_assets.io import ema_store, market_store
    from trading_assets.io.postgres import connect
    from trading_assets.io.run_logs import append_lines
    from trading_assets.orchestration import prepare_environment, run_job

    partitions = monthly_partitions(settings)
    keys = partitions.get_partition_keys()
    bars, emas = args.bars or args.all, args.emas or args.all
    job = jobs.REFRESH_MARKET_JOB if args.all else jobs.REFRESH_BARS_JOB if bars else jobs.REFRESH_EMAS_JOB
    url = prepare_environment(settings)
    today = datetime.now(UTC).date()
    if args.start or args.end:
        first = date.fromisoformat(args.start) if args.start else date.fromisoformat(keys[0])
        key_range = key_range_for_dates(partitions, first, date.fromisoformat(args.end) if args.end else today)
    elif args.full_rebuild:
        key_range = (keys[0], keys[-1])
    else:
        # From the earliest change waiting for the selected tables through today.
        families = [*(market_store.BAR_TABLES if bars else []), *(ema_store.EMA_FAMILIES if emas else [])]
        with connect(url) as conn:
            pending = market_store.earliest_pending(conn, families)
        key_range = key_range_for_dates(partitions, min(pending or today, today), today)
    ids = [] if args.ids in (None, "all") else [int(i) for i in args.ids.split(",")]
    # The freshness gate guards EMAs built on their own; `--all` has just refreshed the bars.
    hours = args.staleness_hours or settings.market_staleness_hours
    ema_config = {"asset_ids": ids, "skip_stale_check": args.skip_stale_check or args.all, "staleness_hours": hours}
    ops = {"__".join(key.path): {"config": {"asset_ids": ids}} for key in BAR_KEYS.values() if bars}
    ops |= {"__".join(key.path): {"config": ema_config} for key in EMA_KEYS.values() if emas}
    mode = "all" if args.full_rebuild else "changed"
    plan = f"job {job}, partitions {key_range[0]}..{key_range[1]}, assets {ids or 'all'}"
    plan += ", every row of the range" if args.full_rebuild else ", changed days only"
    if emas:
        plan += ", EMAs on stale bars too" if ema_config["skip_stale_check"] else f", EMAs gated at {hours:g} h"
    if args.dry_run:
        print(f"would refresh: {plan}")
        for key in ops:
            print(f"  {key.replace('__', '/')}")
        return 0

    run_config = {"ops": ops}
    if args.verbose:
        run_config["loggers"] = {"console": {"config": {"log_level": "INFO"}}}
    started = time.perf_counter()
    summary = run_job(
        job, tags={**range_tags(*key_range), REBUILD_TAG: mode}, run_config=run_config, progress=sys.stderr
    )
    lines = [f"refresh {datetime.now(UTC):%Y-%m-%d %H:%M:%S}Z: {plan} (run {summary.run_id})"]
    lines += refresh_summary(summary, list(ops), time.perf_counter() - started)
    print("\n".join(lines))
    log_file = append_lines(settings.logs_dir, lines)
    print(f"summary appended to {log_file}")
    return _finished(settings, url, summary)


def refresh_summary(summary, components: list[str], seconds: float) -> list[str]:
    """The runbook's summary block: components, successes, failures, times, gaps, repairs, rejects, stale ids."""
    latest = {asset: metadata for asset, _, metadata in summary.materializations}
    rows, totals, stale = [], {"gaps_flagged": 0, "repairs": 0, "run_rejects": 0}, set()
    for component in components:
        key = component.replace("__", "/")
        metadata = latest.get(key)
        failed_checks = [name for a, name, passed, _, _ in summary.checks if a == key and not passed]
        checks_text = f" checks FAILED: {', '.join(failed_checks)}" if failed_checks else ""
        if metadata is None:
            rows.append(f"    {key:<42} FAILED  (not materialized){checks_text}")
            continue
        for name in totals:
            totals[name] += int(metadata.get(name, 0) or 0)
        stale |= set(metadata.get("stale_assets_waiting") or [])
        line = (
            f"    {key:<42} {'ok' if not failed_checks else 'ERROR':<7} {float(metadata.get('seconds', 0)):>7.1f}s "
            f"assets={metadata.get('assets_rebuilt', 0)} rows={metadata.get('run_rows_written', 0)}"
        )
        if int(metadata.get("quarantined_assets", 0) or 0):
            line += f" quarantined={metadata['quarantined_assets']}"
        if waited := float(metadata.get("waited_for_other_run_seconds", 0) or 0):
            line += f" (waited {waited:.1f}s for another run writing it)"
        rows.append(line + checks_text)
    failed = sum(1 for row in rows if " FAILED" in row or " ERROR " in row)
    return [
        "  Summary",
        f"    Total components: {len(components)}",
        f"    Successful: {len(components) - failed}",
        f"    Failed: {failed}",
        f"    Total time: {seconds:.1f}s",
        "  Time per component:",
        *rows,
        *(f"    ERROR: {e}" for e in summary.errors),
        *(f"    INTERRUPTED earlier: {note}" for note in summary.interrupted),
        f"  Gaps flagged: {totals['gaps_flagged']}  Repairs: {totals['repairs']}  Rejects: {totals['run_rejects']}",
        f"  Stale ids (left queued): {', '.join(sorted(stale)) or 'none'}",
        f"  {'succeeded' if summary.success else 'FAILED'}"
        " (table-wide checks run with `trading-assets validate` and the daily validate schedule)",
    ]


# The bundled sample prices (data/sample/prices) and their symbols in the bundled catalog sample, which
# gives them their timezone and trading calendar.
SAMPLE_PRICES = {"SPY": "AMEX:SPY", "BTCUSD": "COINBASE:BTCUSD"}
SAMPLE_SYMBOLS_EFFECTIVE = "2010-01-01T00:00:00+00:00"


def _demo(settings: Settings) -> int:
    from psycopg import sql

    from trading_assets.defs import jobs
    from trading_assets.defs.catalog.assets import CATALOG_OP
    from trading_assets.defs.market.assets import PriceFileSpec, price_span
    from trading_assets.defs.market.corporate_actions import reference_folder
    from trading_assets.defs.market.emas import EMA_KEYS
    from trading_assets.defs.metadata.assets import series_landing_dir
    from trading_assets.defs.partitions import REBUILD_TAG, key_range_for_dates, monthly_partitions, range_tags
    from trading_assets.io.postgres import connect
    from trading_assets.orchestration import prepare_environment, run_job

    started = time.perf_counter()
    url = prepare_environment(settings)
    print(f"database ready ({time.perf_counter() - started:.1f}s)")
    landing = series_landing_dir(settings)
    landing.mkdir(parents=True, exist_ok=True)
    for sample in sorted((SAMPLE_DATA_DIR / "macro").glob("*.csv")):
        shutil.copy2(sample, landing / sample.name)
    partitions = monthly_partitions(settings)
    keys = partitions.get_partition_keys()
    runs = []

    def run(title: str, job: str, **options) -> None:
        summary = run_job(job, progress=sys.stderr, **options)
        _print_summary(title, summary, time.perf_counter() - started)
        runs.append(summary)

    # The dimensions' versions first: automation then starts from what the data was built with.
    run("market dimensions (observed)", jobs.OBSERVE_JOB)
    run("series metadata", jobs.SERIES_SYNC_JOB)
    run("series observations (whole history)", jobs.LOAD_SERIES_JOB, tags=range_tags(keys[0], keys[-1]))
    sample_symbols = str(SAMPLE_DATA_DIR / "symbols" / "symbols.csv")
    config = {"inputs": [sample_symbols], "effective_at": SAMPLE_SYMBOLS_EFFECTIVE}
    run("symbol catalog (sample records)", jobs.LOAD_SYMBOLS_JOB, run_config={"ops": {CATALOG_OP: {"config": config}}})

    specs = [
        {"path": str(SAMPLE_DATA_DIR / "prices" / f"{symbol}.csv"), "symbol": symbol, "catalog_symbol": listed}
        for symbol, listed in SAMPLE_PRICES.items()
    ]
    with connect(url) as conn:
        span = price_span(conn, [PriceFileSpec(**spec) for spec in specs], settings.price_bounds)
    # Prices, bars, then EMAs on them in one run (the sample is history: no freshness gate); the table-wide
    # checks run with validate below.
    emas = {"__".join(key.path): {"config": {"skip_stale_check": True}} for key in EMA_KEYS.values()}
    run(
        "market data: prices, bars, EMAs (sample months)",
        jobs.MARKET_DAILY_JOB,
        tags={**range_tags(*key_range_for_dates(partitions, *span)), REBUILD_TAG: "changed"},
        run_config={"ops": {"market__price_histories": {"config": {"files": specs}}, **emas}},
    )
    # Corporate actions: SPY's Lean factor and map files, landed as a user would drop them.
    shutil.copytree(SAMPLE_DATA_DIR / "reference" / "lean", reference_folder(settings), dirs_exist_ok=True)
    run("corporate actions, ticker history, adjusted daily bars", jobs.REFERENCE_JOB)
    run(
        "research datasets (stage1, from the bars and EMAs)",
        jobs.STAGE1_DATASETS_JOB,
        tags=range_tags(*key_range_for_dates(partitions, *span)),
    )
    run("stage1 spool replay (the spool folder)", jobs.SPOOL_JOB)
    # The trading group: bundled option chains, minutes and paper trades landed as a user would drop them.
    shutil.copytree(SAMPLE_DATA_DIR / "trading", settings.landing / "trading", dirs_exist_ok=True)
    run("trading tables (options, intraday, VIX, macro, trades)", jobs.TRADING_JOB, tags=range_tags(keys[0], keys[-1]))
    checked = run_job(jobs.VALIDATE_JOB)
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
        ema_rows = conn.execute(
            "select alignment_source, count(*), count(distinct (asset_id, tf, period)) "
            "from market.ema_multi_tf_u group by 1 order by 1"
        ).fetchall()
        trading_rows = [
            (
                table,
                conn.execute(sql.SQL("select count(*) from trading.{}").format(sql.Identifier(table))).fetchone()[0],
            )
            for table in (
                "option_chain_snapshots",
                "ml_features",
                "multi_resolution_bars",
                "vix_term_structure",
                "macro_signals",
                "trade_history",
            )
        ]
        adjusted = conn.execute(
            "select security, adjustment, count(*), min(factor), max(factor) from market.price_bars_1d_adjusted "
            "group by 1, 2 order by 1, 2"
        ).fetchall()
        linked = conn.execute(
            "select asset_symbol, symbol, count(*), min(tick_size) from catalog.price_bars_1d_with_symbol "
            "group by 1, 2 order by 1"
        ).fetchall()
    print(f"\ncore_energy.v_series_wide: {rows} dates {first}..{last}, columns {', '.join(columns)}")
    for source, total, canonical in bars:
        print(f"market.price_bars_multi_tf_u [{source}]: {total} snapshot rows, {canonical} canonical")
    for source, total, series_count in ema_rows:
        print(f"market.ema_multi_tf_u [{source}]: {total} EMA rows in {series_count} asset x tf x period series")
    for asset, symbol, days, tick in linked:
        print(f"catalog.price_bars_1d_with_symbol: {asset} -> {symbol}, {days} daily bars, tick size {tick}")
    for security, adjustment, days, low, high in adjusted:
        print(
            f"market.price_bars_1d_adjusted [{security}, {adjustment}]: {days} daily bars, factor {low:.4f}..{high:.4f}"
        )
    for table, count in trading_rows:
        print(f"trading.{table}: {count} rows")
    print(
        f"\ndemo finished in {time.perf_counter() - started:.1f}s. Open the UI with `make ui` (http://127.0.0.1:3000)."
    )
    succeeded = all(summary.success for summary in runs)
    return 0 if succeeded and not checked.failed_error_checks else 1


def _series_import(settings: Settings, args: argparse.Namespace) -> int:
    """Print the plan of importing a dim_series CSV, then apply it in one run of the import job."""
    from trading_assets.compute.series import (
        emptying_problems,
        import_plan_problems,
        plan_series_import,
        series_config_problems,
    )
    from trading_assets.defs.jobs import SERIES_IMPORT_JOB
    from trading_assets.defs.metadata.series_import import SERIES_IMPORT_OP, file_digest
    from trading_assets.errors import raise_if_any
    from trading_assets.io import series_store
    from trading_assets.io.postgres import connect
    from trading_assets.orchestration import prepare_environment, run_job
    from trading_assets.sources.series_files import read_series_config

    url = prepare_environment(settings)
    path = args.file.resolve()
    incoming = read_series_config(path, args.encoding)
    raise_if_any(series_config_problems(incoming))
    with connect(url) as conn:
        series_store.read_consistently(conn)
        state = series_store.dim_series_state(conn)
        plan = plan_series_import(series_store.read_dim_series(conn), incoming, args.delete_missing)
    raise_if_any(import_plan_problems(plan, incoming) + emptying_problems(plan, str(path), args.allow_empty))
    print(f"plan: {path} into core_energy.dim_series (version {state.version})")
    for line in plan.lines():
        print(f"  {line}")
    print(f"  {plan.summary()}")
    if args.dry_run:
        print("dry run: nothing changed")
        return 0
    if plan.is_empty:
        print("nothing to change")
        return 0
    # The run applies exactly this plan: it refuses a table edited or a file changed since.
    config = {"file": str(path), "delete_missing": args.delete_missing, "allow_empty": args.allow_empty}
    config["encoding"] = args.encoding
    config |= {"expected_version": state.version, "file_sha256": file_digest(path)}
    started = time.perf_counter()
    summary = run_job(SERIES_IMPORT_JOB, run_config={"ops": {SERIES_IMPORT_OP: {"config": config}}})
    _print_summary("series import", summary, time.perf_counter() - started)
    if summary.success:
        with connect(url) as conn:
            version = series_store.dim_series_state(conn).version
        print(
            f"core_energy.dim_series is at version {version}; map_model_series, v_series_wide and the backup "
            "follow by automation (`trading-assets ui`)"
        )
    return _finished(settings, url, summary)


def _validate(settings: Settings) -> int:
    from trading_assets.defs.jobs import VALIDATE_JOB
    from trading_assets.orchestration import prepare_environment, run_job

    prepare_environment(settings)
    started = time.perf_counter()
    summary = run_job(VALIDATE_JOB)
    _print_summary("validate", summary, time.perf_counter() - started)
    failed = summary.failed_error_checks
    if failed:
        print(f"\n{len(failed)} ERROR check(s) failed: {', '.join(failed)}")
    return 1 if failed else 0


def _clean_logs(settings: Settings) -> int:
    from trading_assets.defs.ops.run_log import CLEAN_LOGS_JOB
    from trading_assets.orchestration import prepare_environment, run_job

    url = prepare_environment(settings)
    summary = run_job(CLEAN_LOGS_JOB)
    print(f"{'removed old day logs' if summary.success else 'FAILED'} (run {summary.run_id})")
    return _finished(settings, url, summary)


def _ui(settings: Settings, args: argparse.Namespace) -> int:
    from trading_assets.orchestration import dagster_instance, prepare_environment

    prepare_environment(settings)
    # The workspace names the code location as the CLI's runs do (trading_assets).
    serve = ["-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", args.host, "-p", str(args.port)]
    if args.read_only:
        # Browsing only: no daemon here (the deployment's own runs the schedules), nothing can be launched.
        command = [str(Path(sys.executable).with_name("dagster-webserver")), *serve, "--read-only"]
    else:
        command = [str(Path(sys.executable).with_name("dagster")), "dev", *serve]
    mode = " (read-only)" if args.read_only else ""
    print(f"Dagster UI{mode} on http://{args.host}:{args.port} (Ctrl-C stops it)")
    try:
        return subprocess.call(command, env=os.environ.copy())
    except KeyboardInterrupt:
        return 130
    finally:
        if not args.read_only:
            # The daemon is gone: the CLI's next runs must not wait in its queue.
            with dagster_instance() as instance:
                instance.wipe_daemon_heartbeats()


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from trading_assets.defs.executors import run_celery_worker
    from trading_assets.orchestration import prepare_environment

    if settings.executor != "celery":
        print(
            f"note: TRADING_ASSETS_EXECUTOR is {settings.executor!r}; runs reach this worker only where it is celery",
            file=sys.stderr,
        )
    prepare_environment(settings)
    run_celery_worker(settings, args.name, args.concurrency)
    return 0


def _run(settings: Settings, args: argparse.Namespace) -> int:
    """One run of a named job of the code location, over the months of --start..--end when it is partitioned."""
    from trading_assets.definitions import build_definitions
    from trading_assets.defs.partitions import key_range_for_dates, monthly_partitions, range_tags
    from trading_assets.orchestration import prepare_environment, run_job

    prepare_environment(settings)
    jobs = {job.name for job in build_definitions(settings).jobs}
    if args.job not in jobs:
        raise ConfigError(f"no job {args.job!r}; the code location's jobs: {', '.join(sorted(jobs))}")
    tags = {}
    if args.start or args.end:
        partitions = monthly_partitions(settings)
        first = date.fromisoformat(args.start) if args.start else settings.start_date
        last = date.fromisoformat(args.end) if args.end else datetime.now(UTC).date()
        tags = range_tags(*key_range_for_dates(partitions, first, last))
    started = time.perf_counter()
    summary = run_job(args.job, tags=tags, progress=sys.stderr)
    _print_summary(f"run {args.job}", summary, time.perf_counter() - started)
    return 0 if summary.success and not summary.failed_error_checks else 1


def _backup(settings: Settings) -> int:
    from trading_assets.defs.jobs import BACKUP_JOB
    from trading_assets.orchestration import prepare_environment, run_job

    prepare_environment(settings)
    summary = run_job(BACKUP_JOB, progress=sys.stderr)
    _print_summary("backup", summary, 0.0)
    return 0 if summary.success and not summary.failed_error_checks else 1


def _restore(settings: Settings, args: argparse.Namespace) -> int:
    """Restore a backup into a new database; exit 1 when a table's row count differs from the dump's."""
    from trading_assets.io import dumps
    from trading_assets.orchestration import prepare_environment

    url = prepare_environment(settings)
    differences = dumps.restore(url, args.path.resolve(), args.into)
    for table, (expected, restored) in differences.items():
        print(f"{table}: {expected} rows at dump time, {restored} restored")
    print(f"restored {args.path} into {args.into}: " + ("row counts differ" if differences else "every table matches"))
    return 1 if differences else 0


def _archive(settings: Settings, args: argparse.Namespace) -> int:
    """List the archived partitions, or put one back (its checksum checked first)."""
    from trading_assets.io import retention
    from trading_assets.io.postgres import connect
    from trading_assets.orchestration import prepare_environment

    url = prepare_environment(settings)
    with connect(url) as conn:
        if args.action == "list":
            for row in conn.execute(
                "select table_name, partition_name, range_start, range_end, rows, file, reattached_at "
                "from ops.retention_archives order by 1, 3"
            ):
                table, name, start, end, rows, file, back = row
                state = f"re-attached {back:%Y-%m-%d}" if back else "dropped"
                print(f"{table} {name} [{start}, {end}) {rows} rows {state} {settings.archive_dir / file}")
            return 0
        if not args.table or not args.partition:
            raise ConfigError("archive attach needs TABLE PARTITION (see `trading-assets archive list`)")
        restored = retention.reattach(conn, settings.archive_dir, args.table, args.partition)
        conn.commit()
    print(f"{args.table} {args.partition}: {restored} rows re-attached; retention keeps it from now on")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trading-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="the PostgreSQL server and its schema")
    db.add_argument("action", choices=["up", "url", "stop", "migrate", "backup"])
    db.add_argument("--schema", default="stage1", help="backup: the schema whose tables are backed up")

    run = commands.add_parser("run", help="one run of a named job (trading_tables, trading_intraday, ...)")
    run.add_argument("job", help="the job's name, as the UI lists it")
    run.add_argument("--start", help="first date (ISO) of the months a partitioned job runs over")
    run.add_argument("--end", help="last date (ISO); default today")
    commands.add_parser("backup", help="pg_dump the platform and Dagster databases, rotate (job ops_backup)")
    restore = commands.add_parser("restore", help="restore a backup into a new database and compare row counts")
    restore.add_argument("path", type=Path, help="a backup folder (<time>_<rotation>.dump)")
    restore.add_argument("--into", required=True, help="the new database to restore into")

    archive = commands.add_parser("archive", help="partitions retention archived")
    archive.add_argument("action", choices=["list", "attach"])
    archive.add_argument("table", nargs="?", help="attach: schema.table")
    archive.add_argument("partition", nargs="?", help="attach: the partition's name (see `archive list`)")

    load = commands.add_parser("load", help="load input files through Dagster")
    load_kinds = load.add_subparsers(dest="kind", required=True)
    series = load_kinds.add_parser("series", help="FRED CSV or series_code,obs_date,value files")
    series.add_argument("files", nargs="+", type=Path)
    series.add_argument("--encoding", default="utf-8", help="the files' text encoding (default UTF-8)")

    prices = load_kinds.add_parser("prices", help="daily price files: CSV (any common header) or Lean daily")
    prices.add_argument("files", nargs="+", type=Path)
    prices.add_argument("--symbol", help="symbol of every file (default: each file's name)")
    prices.add_argument("--format", choices=["auto", "csv", "lean"], default="auto")
    prices.add_argument(
        "--price-divisor", type=float, help="Lean equity files store price x 10000 (refused unless given)"
    )
    prices.add_argument("--encoding", help="the files' text encoding, e.g. latin-1 (default: UTF-8 or the BOM's)")
    prices.add_argument(
        "--date-order",
        choices=["mdy", "dmy"],
        help="how to read D/M/YYYY-style dates (default mdy; dmy refused unless given)",
    )
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
    symbols.add_argument(
        "--full-listing",
        action=argparse.BooleanOptionalAction,
        help="the inputs are full listings (retire what they omit); --no-full-listing: partial, upsert only; "
        "default: judged by how much of the exchange they cover",
    )

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
    refresh.add_argument(
        "--continue-on-error",
        action="store_true",
        help="(always so: in the one run, a failed family stops only what is built on it)",
    )
    refresh.add_argument("--skip-stale-check", action="store_true", help="(EMAs) build on stale bars")
    refresh.add_argument(
        "--staleness-hours", type=float, help="(EMAs) bars older than this are stale (default: the setting, 48)"
    )

    series_import = commands.add_parser(
        "series-import", help="import a dim_series CSV into core_energy.dim_series: prints the plan, then applies it"
    )
    series_import.add_argument("file", type=Path, help="model_col,series_code,unit,freq,description,tags")
    series_import.add_argument("--delete-missing", action="store_true", help="delete the rows the file lacks")
    series_import.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    series_import.add_argument(
        "--allow-empty",
        action="store_true",
        help="with --delete-missing, let a file with no rows delete every row (refused without it)",
    )
    series_import.add_argument("--encoding", default="utf-8", help="the file's text encoding, e.g. latin-1")
    commands.add_parser("clean-logs", help="remove day logs older than 30 days (job clean_logs)")
    commands.add_parser("demo", help="load the sample data, materialize everything, run the checks")
    commands.add_parser("validate", help="run every asset check; exit 1 when an ERROR check fails")
    ui = commands.add_parser("ui", help="Dagster UI with the daemon (schedules, sensors, automation)")
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    ui.add_argument(
        "--read-only", action="store_true", help="browse only: no launching, re-executing or toggling automation"
    )
    worker = commands.add_parser(
        "worker", help="a Celery worker executing the steps of runs (with TRADING_ASSETS_EXECUTOR=celery)"
    )
    worker.add_argument("--name", default="trading-assets", help="the worker's name (default trading-assets)")
    worker.add_argument("--concurrency", type=int, default=1, help="steps executed at once (default 1)")
    return parser


class _WithoutStorageNoise:
    """stderr without Dagster's own reports of a lost storage connection, which it writes on every event the
    run still tries to store: the CLI reports the lost database once, with what to do."""

    _NOISE = (
        "Exception while writing logger call to event log",
        "Exception while storing event batch: too many retries for DB connection",
    )
    # Written after a failed batch store; noise only when that failure was the lost connection.
    _FALLBACK = "Falling back to storing multiple single-event storage requests"

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._after_noise = False

    def write(self, text: str) -> int:
        noise = text.startswith(self._NOISE) or (self._after_noise and text.startswith(self._FALLBACK))
        self._after_noise = noise
        return len(text) if noise else self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    stderr, sys.stderr = sys.stderr, _WithoutStorageNoise(sys.stderr)
    try:
        return _main(argv)
    finally:
        sys.stderr = stderr


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # Dagster flags beta/preview parameters (e.g. backfill_policy) on every load; they are not the user's concern.
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")
    # A lost database is reported once, below; the pools' reconnect attempts (psycopg's, Dagster's storage's
    # on the root logger) would repeat it line after line.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    logging.getLogger().addFilter(lambda record: not record.getMessage().startswith("Retrying failed database"))
    try:
        settings = Settings.from_env()
        if args.command == "db":
            return _cmd_db(args, settings)
        if args.command == "archive":
            return _archive(settings, args)
        if args.command == "backup":
            return _backup(settings)
        if args.command == "run":
            return _run(settings, args)
        if args.command == "restore":
            return _restore(settings, args)
        if args.command == "load":
            if args.kind == "prices":
                return _load_prices(settings, args)
            if args.kind == "symbols":
                return _load_symbols(settings, args)
            return _load_series(settings, args.files, args.encoding)
        if args.command == "refresh":
            return _refresh(settings, args)
        if args.command == "symbols":
            return _symbols_as_of(settings, args)
        if args.command == "demo":
            return _demo(settings)
        if args.command == "series-import":
            return _series_import(settings, args)
        if args.command == "validate":
            return _validate(settings)
        if args.command == "clean-logs":
            return _clean_logs(settings)
        if args.command == "worker":
            return _worker(settings, args)
        return _ui(settings, args)
    except (InputError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except QueueNotServed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if not _is_connection_failure(exc):
            raise
        _database_unreachable(settings, args.command, exc)
        return EXIT_UNREACHABLE


def _is_connection_failure(exc: BaseException) -> bool:
    """Whether the database could not be reached, anywhere in the exception's chain (Dagster's storage too)."""
    from trading_assets.io.alerts import DATABASE_UNREACHABLE

    while exc is not None:
        if type(exc).__name__ in DATABASE_UNREACHABLE:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _database_unreachable(settings: Settings, command: str, exc: BaseException) -> None:
    """A command that cannot reach the database raises a CRITICAL alert, delivered without it."""
    from trading_assets.io.alerts import Alert, send_alert
    from trading_assets.io.run_logs import append_line

    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    lines = [
        f"error: the database cannot be reached: {reason}",
        f"  trading-assets {command} stopped: nothing of an unfinished run was kept (each write is one "
        "transaction); the next command marks such a run failed. Run it again once the database is back.",
    ]
    print("\n".join(lines), file=sys.stderr)
    for line in lines:
        append_line(settings.logs_dir, "ERROR", line.strip())
    alert = Alert(
        "CRITICAL",
        "Database connection failure",
        f"trading-assets {command}: {reason}",
        "cli",
        group_key="database_unreachable",
    )
    send_alert(settings, None, alert)


if __name__ == "__main__":
    sys.exit(main())
