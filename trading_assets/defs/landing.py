"""Sensors that load files dropped into a landing folder, as one ranged run per batch of new files."""

import hashlib
from collections.abc import Callable
from datetime import date
from pathlib import Path

import dagster as dg

from trading_assets.defs.partitions import key_range_for_dates, range_tags
from trading_assets.errors import InputError


def files_version(paths: list[Path]) -> dg.DataVersion:
    """A version of a folder's files that changes when any file's name or contents do."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return dg.DataVersion(digest.hexdigest())


def file_source(key: dg.AssetKey, folder: Path, pattern: str, description: str) -> dg.SourceAsset:
    """The files matching `pattern` in `folder`, observed (in the group of the key's first part): their version
    is their names and contents."""

    @dg.observable_source_asset(
        key=key, group_name=key.path[0], kinds={"file"}, description=f"{description} in {folder}."
    )
    def observed() -> dg.DataVersion:
        return files_version(sorted(folder.glob(pattern)))

    return observed


def landing_sensor(
    *,
    name: str,
    folder: Path,
    job_name: str,
    op_name: str,
    partitions: dg.TimeWindowPartitionsDefinition,
    op_config: Callable[[list[Path]], dict],
    date_span: Callable[[list[Path]], tuple[date, date]],
    description: str,
) -> dg.SensorDefinition:
    """Watch `folder` for CSVs newer than the cursor; run the loading job (whose asset is the op `op_name`)
    over the months the files cover."""

    @dg.sensor(
        name=name,
        job_name=job_name,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description,
    )
    def watch(context: dg.SensorEvaluationContext):
        last_seen = float(context.cursor or 0)
        new_files = sorted(p for p in folder.glob("*.csv") if p.stat().st_mtime > last_seen)
        if not new_files:
            return dg.SkipReason(f"no new files in {folder}")
        try:
            first_key, last_key = key_range_for_dates(partitions, *date_span(new_files))
        except (InputError, TypeError, ValueError):
            # Unreadable or empty: still run, so the failure and its reason show up (and alert) in the UI.
            first_key = last_key = partitions.get_first_partition_key()
        newest = max(p.stat().st_mtime for p in new_files)
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"{name}:{newest}",
                    run_config=dg.RunConfig(ops={op_name: {"config": op_config(new_files)}}),
                    tags=range_tags(first_key, last_key),
                )
            ],
            cursor=str(newest),
        )

    return watch
