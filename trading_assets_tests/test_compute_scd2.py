"""Point-in-time versions from the observation log (SEMANTICS §D 25-28), without a database."""

import random
from datetime import UTC, date, datetime, timedelta, timezone

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading_assets.catalog import SymbolCatalog, to_utc
from trading_assets.compute.scd2 import (
    SYMBOL_FIELDS,
    SYMBOL_VERSIONED,
    derive_versions,
    retirements_from_snapshots,
    version_problems,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
_SCHEMA = {
    "observation_id": pl.Int64,
    "symbol": pl.String,
    "action": pl.String,
    "effective_at": pl.Datetime("us", "UTC"),
    "recorded_at": pl.Datetime("us", "UTC"),
    **SYMBOL_FIELDS,
}


def log(*events: tuple) -> pl.DataFrame:
    """(effective_at, action, {fields}) events of BINANCE:ETHBTC, recorded in the given order."""
    rows = []
    for number, (at, action, fields) in enumerate(events, start=1):
        symbol = fields.get("symbol", "BINANCE:ETHBTC")
        rows.append(
            {
                "observation_id": number,
                "symbol": symbol,
                "action": action,
                "effective_at": at,
                "recorded_at": T0 + timedelta(days=1000 + number),
                "exchange": "BINANCE",
                **{k: v for k, v in fields.items() if k != "symbol"},
            }
        )
    return pl.DataFrame(rows, schema=_SCHEMA)


def versions_of(observations: pl.DataFrame) -> pl.DataFrame:
    return derive_versions(observations, SYMBOL_FIELDS, SYMBOL_VERSIONED)


def test_d25_identical_upserts_make_one_version_and_a_missing_field_clears_nothing() -> None:
    fields = {"description": "Ethereum / Bitcoin", "pricescale": 100, "tick_size": 0.01}
    versions = versions_of(
        log(
            (T0, "upsert", fields),
            (T0 + timedelta(days=1), "upsert", fields),
            (T0 + timedelta(days=2), "upsert", {"description": None, "pricescale": 100}),
        )
    )
    assert versions.height == 1
    assert versions.row(0, named=True)["description"] == "Ethereum / Bitcoin"
    assert versions["valid_from"].to_list() == [T0]
    assert versions["valid_until"].to_list() == [None]


def test_d26_version_boundary_the_newer_version_wins_and_before_the_first_is_none() -> None:
    t1 = T0 + timedelta(days=10)
    versions = versions_of(log((T0, "upsert", {"pricescale": 100}), (t1, "upsert", {"pricescale": 1000})))
    assert versions["pricescale"].to_list() == [100, 1000]
    assert versions["valid_until"][0] == versions["valid_from"][1] == t1
    assert versions.filter(pl.col("valid_until").is_null()).height == 1
    catalog = SymbolCatalog(versions)
    assert catalog.get_instrument("BINANCE:ETHBTC", t1 - timedelta(microseconds=1))["pricescale"] == 100
    assert catalog.get_instrument("BINANCE:ETHBTC", t1)["pricescale"] == 1000
    assert catalog.get_instrument("BINANCE:ETHBTC", T0 - timedelta(seconds=1)) is None
    assert catalog.get_instrument("BINANCE:ETHBTC")["pricescale"] == 1000


@pytest.mark.parametrize("relist_fields", [{"active": True}, {}], ids=["active-true", "no-active-key"])
def test_d27_delist_then_relist(relist_fields: dict) -> None:
    t1, t2 = T0 + timedelta(days=5), T0 + timedelta(days=9)
    versions = versions_of(log((T0, "upsert", {"pricescale": 100}), (t1, "retire", {}), (t2, "upsert", relist_fields)))
    assert versions.select("valid_from", "valid_until", "active").rows() == [
        (T0, t1, True),
        (t1, t2, False),
        (t2, None, True),
    ]
    catalog = SymbolCatalog(versions)
    assert catalog.list_active_symbols("BINANCE") == ["BINANCE:ETHBTC"]
    assert catalog.list_active_symbols("binance", as_of=t1) == []
    assert catalog.list_active_symbols(as_of=T0) == ["BINANCE:ETHBTC"]


def test_retiring_an_inactive_symbol_is_a_no_op() -> None:
    t1 = T0 + timedelta(days=1)
    versions = versions_of(log((T0, "upsert", {}), (t1, "retire", {}), (t1 + timedelta(days=1), "retire", {})))
    assert versions.select("valid_from", "active").rows() == [(T0, True), (t1, False)]


def test_d28_as_of_in_every_accepted_form_and_nanoseconds_refused() -> None:
    t1 = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)  # epoch 1_700_000_000
    catalog = SymbolCatalog(
        versions_of(log((T0 - timedelta(days=400), "upsert", {"pricescale": 10}), (t1, "upsert", {"pricescale": 20})))
    )
    get = catalog.get_instrument
    assert get("BINANCE:ETHBTC", 1_700_000_000)["pricescale"] == 20
    assert get("BINANCE:ETHBTC", 1_699_999_999.5)["pricescale"] == 10
    assert get("BINANCE:ETHBTC", t1.replace(tzinfo=None))["pricescale"] == 20  # naive = UTC
    assert get("BINANCE:ETHBTC", t1.astimezone(timezone(timedelta(hours=-5))))["pricescale"] == 20
    assert get("BINANCE:ETHBTC", date(2023, 11, 14))["pricescale"] == 10
    assert get("BINANCE:ETHBTC", "2023-11-15T00:00:00Z")["pricescale"] == 20
    with pytest.raises(ValueError, match="not epoch seconds"):
        get("BINANCE:ETHBTC", 1_700_000_000_000_000_000)
    assert to_utc(0).tzinfo is UTC
    assert get("BINANCE:ETHBTC")["valid_from"].tzinfo is not None


def test_a_late_snapshot_with_an_old_effective_time_resplits_history() -> None:
    t1, t2 = T0 + timedelta(days=10), T0 + timedelta(days=20)
    # Recorded last, effective in the middle: lands between the two it was recorded after.
    versions = versions_of(
        log(
            (T0, "upsert", {"tick_size": 0.1}),
            (t2, "upsert", {"tick_size": 0.001}),
            (t1, "upsert", {"tick_size": 0.01}),
        )
    )
    assert versions.select("valid_from", "valid_until", "tick_size").rows() == [
        (T0, t1, 0.1),
        (t1, t2, 0.01),
        (t2, None, 0.001),
    ]


def test_symbols_missing_from_a_full_snapshot_are_retired_only_after_they_were_seen() -> None:
    t1 = T0 + timedelta(days=30)
    observations = log(
        (T0, "upsert", {"symbol": "BINANCE:AAABTC"}),
        (T0, "upsert", {"symbol": "BINANCE:BBBBTC"}),
        (t1 + timedelta(days=1), "upsert", {"symbol": "BINANCE:CCCBTC"}),
    )
    snapshot = pl.DataFrame(
        {"exchange": ["BINANCE"], "effective_at": [t1], "symbol": ["BINANCE:AAABTC"]},
        schema={"exchange": pl.String, "effective_at": pl.Datetime("us", "UTC"), "symbol": pl.String},
    )
    assert retirements_from_snapshots(observations, snapshot).rows() == [("BINANCE:BBBBTC", t1)]


# One symbol's history as random events: (day, action, tick size or None, active flag or None).
_events = st.lists(
    st.tuples(
        st.integers(0, 40),
        st.sampled_from(["upsert", "upsert", "retire"]),
        st.sampled_from([None, 0.1, 0.01]),
        st.sampled_from([None, None, True, False]),
    ),
    min_size=1,
    max_size=25,
)


def _brute_force(events: list[tuple], at: datetime) -> dict | None:
    """Replay the events effective on or before `at` in (effective time, recorded order)."""
    state: dict | None = None
    for day, _recorded, action, tick, active in sorted((e[0], i, *e[1:]) for i, e in enumerate(events)):
        if T0 + timedelta(days=day) > at:
            break
        state = dict(state or {"tick_size": None, "active": True})
        if action == "retire":
            state["active"] = False
        else:
            if tick is not None:
                state["tick_size"] = tick
            state["active"] = True if active is None else active
    return state


@settings(max_examples=150, deadline=None)
@given(_events, st.randoms(use_true_random=False))
def test_any_sequence_gives_contiguous_versions_and_as_of_agrees_with_a_brute_force_replay(
    events: list[tuple], rng: random.Random
) -> None:
    observations = log(
        *[
            (T0 + timedelta(days=d), a, {"tick_size": t, "active": None if a == "retire" else f})
            for d, a, t, f in events
        ]
    )
    versions = versions_of(observations)
    assert version_problems(versions) == {"several_current": 0, "not_contiguous": 0, "empty_or_reversed": 0}
    catalog = SymbolCatalog(versions)
    for day in range(-1, 43):
        for at in (T0 + timedelta(days=day), T0 + timedelta(days=day, hours=12)):
            expected = _brute_force(events, at)
            found = catalog.get_instrument("BINANCE:ETHBTC", at)
            if expected is None:
                assert found is None
            else:
                assert (found["tick_size"], found["active"]) == (expected["tick_size"], expected["active"])
    # The log's recorded order never matters, only effective times (ties keep their recorded order).
    order = list(range(observations.height))
    rng.shuffle(order)
    recorded = observations.select("observation_id", "recorded_at")[order]
    shuffled = observations.with_columns(recorded)
    columns = ["valid_from", "valid_until", "tick_size", "active"]
    same_instant = observations["effective_at"].is_duplicated().any()
    if not same_instant:
        assert versions_of(shuffled).select(columns).equals(versions.select(columns))
