"""`trading-assets`: the database, loads, the demo, validation and the UI, all through Dagster."""

import argparse
import os
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


def _demo(settings: Settings) -> int:
    from trading_assets.defs.metadata.assets import series_landing_dir
    from trading_assets.defs.partitions import monthly_partitions, range_tags
    from trading_assets.io.postgres import connect
    from trading_assets.orchestration import all_asset_keys, prepare_environment, run_all_checks, run_assets

    started = time.perf_counter()
    url = prepare_environment(settings)
    print(f"database ready ({time.perf_counter() - started:.1f}s)")
    landing = series_landing_dir(settings)
    landing.mkdir(parents=True, exist_ok=True)
    for sample in sorted((SAMPLE_DATA_DIR / "macro").glob("*.csv")):
        shutil.copy2(sample, landing / sample.name)
    keys = monthly_partitions(settings).get_partition_keys()
    materialized = run_assets(settings, all_asset_keys(settings), tags=range_tags(keys[0], keys[-1]))
    _print_summary("materialize the whole graph", materialized, time.perf_counter() - started)
    checked = run_all_checks(settings)
    _print_summary("validate (all asset checks)", checked, time.perf_counter() - started)
    with connect(url) as conn:
        columns = [d.name for d in conn.execute("select * from core_energy.v_series_wide limit 0").description]
        rows, first, last = conn.execute(
            "select count(*), min(date), max(date) from core_energy.v_series_wide"
        ).fetchone()
    print(f"\ncore_energy.v_series_wide: {rows} dates {first}..{last}, columns {', '.join(columns)}")
    print(
        f"\ndemo finished in {time.perf_counter() - started:.1f}s. Open the UI with `make ui` (http://127.0.0.1:3000)."
    )
    return 0 if materialized.success and not checked.failed_error_checks else 1


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
            return _load_series(settings, args.files)
        if args.command == "demo":
            return _demo(settings)
        if args.command == "validate":
            return _validate(settings)
        return _ui(settings, args.port)
    except (InputError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
