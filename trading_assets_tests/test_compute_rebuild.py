"""What a run over a window rewrites, from the pending changes (hand-worked cases)."""

from datetime import date

from trading_assets.compute.rebuild import Window, plan_rebuild, restrict

MARCH = Window(date(2024, 3, 1), date(2024, 4, 1))


def test_changes_inside_the_window_are_applied_and_earlier_ones_wait() -> None:
    marks = {1: date(2024, 3, 10), 2: date(2024, 1, 5), 3: date(2024, 4, 2)}
    plan = plan_rebuild(marks, MARCH)
    assert plan.starts == {1: date(2024, 3, 10)}
    assert plan.waiting == {2: date(2024, 1, 5)}  # a run that starts in January applies it
    assert plan.settled == {1}  # asset 3 changes after March: not this run's


def test_recomputing_the_window_rewrites_every_asset_with_rows_in_it_from_its_start() -> None:
    marks = {1: date(2024, 3, 10), 2: date(2024, 1, 5)}
    plan = plan_rebuild(marks, MARCH, recompute=[1, 2, 4])
    assert plan.starts == dict.fromkeys([1, 2, 4], date(2024, 3, 1))
    # Asset 2 is rewritten on its stored rows before March; its earlier change still waits.
    assert plan.waiting == {2: date(2024, 1, 5)} and plan.settled == {1}


def test_the_first_partition_owns_everything_before_it() -> None:
    plan = plan_rebuild({1: date(1985, 6, 1)}, Window(None, date(1990, 2, 1)), recompute=[1])
    assert plan.starts == {1: date.min} and plan.settled == {1} and not plan.waiting


def test_an_asset_selection_limits_the_plan() -> None:
    plan = restrict(plan_rebuild({1: date(2024, 3, 2), 2: date(2024, 3, 3)}, MARCH), [2])
    assert (plan.starts, plan.settled) == ({2: date(2024, 3, 3)}, {2})
