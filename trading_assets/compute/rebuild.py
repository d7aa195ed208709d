"""Which rows a run over a window of dates rewrites, and what it leaves queued.

A derived market table is rebuilt per asset from a first date to the end of the run's window, continuing
from the stored rows just before that date (the carry). Pending changes are marks `asset -> first changed
date`. A run never writes outside its window: a mark before the window is left for a run that starts
there, and when a rewrite changed the state the rows after the window continue from, the asset is queued
again from the window's end.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Window:
    """Dates `[start, end)` a run owns; `start` None: from the beginning of history."""

    start: date | None
    end: date

    @property
    def first_day(self) -> date:
        return self.start or date.min


@dataclass(frozen=True)
class RebuildPlan:
    # Per asset, the first date rewritten (inside the window).
    starts: dict[int, date]
    # Marks of assets whose changes start before the window: left queued.
    waiting: dict[int, date]
    # Marks this run settles (their changes lie inside the window).
    settled: frozenset[int]


def plan_rebuild(marks: dict[int, date], window: Window, recompute: Iterable[int] | None = None) -> RebuildPlan:
    """Rewrite each marked asset from its mark inside the window; with `recompute` (the assets that have rows
    in the window), rewrite those over the whole window too, on the stored rows before it."""
    first = window.first_day
    settled = {asset for asset, day in marks.items() if first <= day < window.end}
    starts = {asset: marks[asset] for asset in settled}
    waiting = {asset: day for asset, day in marks.items() if day < first}
    if recompute is not None:
        starts.update(dict.fromkeys(recompute, first))
    return RebuildPlan(starts=starts, waiting=waiting, settled=frozenset(settled))


def restrict(plan: RebuildPlan, asset_ids: Iterable[int] | None) -> RebuildPlan:
    """The part of `plan` for `asset_ids` only (None: all of it)."""
    if asset_ids is None:
        return plan
    keep = set(asset_ids)
    return RebuildPlan(
        starts={a: d for a, d in plan.starts.items() if a in keep},
        waiting={a: d for a, d in plan.waiting.items() if a in keep},
        settled=frozenset(a for a in plan.settled if a in keep),
    )
