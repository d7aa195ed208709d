"""Progress of a long run on a terminal: steps (families) done out of total, assets done in the current step,
elapsed and estimated remaining time; nothing at all when the output is not a terminal."""

from __future__ import annotations

import re
import threading
import time
from typing import TextIO

import dagster as dg

# What a market asset logs after each group of assets (see defs/market/assets.py asset_chunks).
PROGRESS_MESSAGE = "progress: {done}/{total} assets"
_PROGRESS = re.compile(r"^progress: (\d+)/(\d+) assets$")
_STEP_DONE = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_SKIPPED}


def progress_line(steps_done: int, steps: int, assets_done: int, assets: int, elapsed: float) -> str:
    """`3/12 steps, 500/1000 assets, 42s elapsed, ~2m remaining` (no estimate before anything is done)."""
    fraction = (steps_done + (assets_done / assets if assets else 0)) / steps if steps else 0
    line = f"{steps_done}/{steps} steps"
    if assets:
        line += f", {assets_done}/{assets} assets"
    line += f", {_duration(elapsed)} elapsed"
    if 0 < fraction < 1:
        line += f", ~{_duration(elapsed / fraction - elapsed)} remaining"
    return line


def _duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


class TerminalProgress:
    """Follows a run's events from the instance and rewrites one line of `stream` (a terminal) while it goes."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str, steps: int, stream: TextIO, every: float = 0.5):
        self.instance, self.run_id, self.steps, self.stream, self.every = instance, run_id, steps, stream, every
        self.steps_done = self.assets_done = self.assets = 0
        self.cursor: str | None = None
        self.started = time.monotonic()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> TerminalProgress:
        if self.stream.isatty():
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.stop_event.set()
            self.thread.join()
            self._read()
            self.stream.write(f"\r{self.line()}\n")
            self.stream.flush()

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        return progress_line(self.steps_done, self.steps, self.assets_done, self.assets, elapsed)

    def _read(self) -> None:
        connection = self.instance.get_records_for_run(self.run_id, cursor=self.cursor)
        self.cursor = connection.cursor
        for record in connection.records:
            entry = record.event_log_entry
            if entry.dagster_event is not None and entry.dagster_event.event_type in _STEP_DONE:
                self.steps_done += 1
                self.assets_done = self.assets = 0
            elif entry.dagster_event is None and (match := _PROGRESS.match(entry.user_message)):
                self.assets_done, self.assets = int(match.group(1)), int(match.group(2))

    def _follow(self) -> None:
        while not self.stop_event.wait(self.every):
            self._read()
            self.stream.write(f"\r{self.line()}\033[K")
            self.stream.flush()
