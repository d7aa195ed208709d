"""The user's day in a real browser: headless Chromium (Debian's package, driven by Playwright) working the Dagster
UI of `trading-assets ui` with its daemon, through the UI's own controls. The screenshots it takes are the
README's (docs/screenshots/), so they show the UI as it is."""

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from trading_assets.cli import main
from trading_assets.config import PROJECT_ROOT, SAMPLE_DATA_DIR, Settings
from trading_assets.defs.market.assets import BAR_KEYS, PRICE_HISTORIES
from trading_assets.defs.market.emas import EMA_KEYS
from trading_assets_tests.conftest import instance_rows_holding
from trading_assets_tests.ui_server import graphql, launch, running_ui, wait_for_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"
# The alert channel's token: it must never reach a run's config, the event log or a page of the UI.
TOKEN = "7311:AAtoken-never-shown-8f2c"

try:
    from playwright.sync_api import Page, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(CHROMIUM is None or sync_playwright is None, reason="no chromium (apt install chromium)"),
]


@pytest.fixture
def day(cli_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A platform with SPY's sample prices loaded and its bars and EMAs built, alerts configured with a token."""
    monkeypatch.setenv("TRADING_ASSETS_START_DATE", "2019-01-01")
    monkeypatch.setenv("TRADING_ASSETS_MARKET_STALENESS_HOURS", "1000000")  # the sample ends in 2021
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_CHAT_ID", "42")
    monkeypatch.setenv("TRADING_ASSETS_TELEGRAM_API_URL", "http://127.0.0.1:9")  # refused at once
    monkeypatch.setenv("TRADING_ASSETS_ALERT_URL", f"http://127.0.0.1:9/hooks/{TOKEN}")
    spy = SAMPLE_DATA_DIR / "prices" / "SPY.csv"
    assert main(["load", "prices", str(spy), "--symbol", "SPY"]) == 0
    assert main(["refresh", "--all", "--start", "2019-01-01", "--end", "2021-03-31"]) == 0
    return cli_env


@pytest.fixture
def browser_page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        # Dagster's one-time newsletter prompt, whenever it shows.
        page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda prompt: prompt.click())
        yield page
        browser.close()


def _shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def _launch_partitions(page: Page, selection: str, button: str) -> str:
    """In an open launch dialog: choose `selection` among all partitions, press `button`; the run's or the
    backfill's page the UI links to."""
    confirm = page.get_by_role("button", name="Confirm")
    show_all = page.get_by_role("button", name="Show all partitions")
    confirm.or_(show_all).first.wait_for()
    if confirm.is_visible():  # the UI warns that upstream catalog assets were never materialized
        confirm.click()
    show_all.click()
    partitions = page.locator("[role=dialog] input:not([type=checkbox])").first
    partitions.fill(selection)
    partitions.press("Enter")
    page.get_by_role("button", name=button).click()
    link = page.locator("a[href^='/runs/']", has_text="View").first
    link.wait_for()
    return link.get_attribute("href")


def _run_id(href: str) -> str:
    return re.match(r"/runs/([0-9a-f-]{36})", href).group(1)


def test_a_day_in_the_ui(day: Settings, browser_page: Page, conn: psycopg.Connection) -> None:
    page = browser_page
    with running_ui() as port:
        url = f"http://127.0.0.1:{port}"
        pages_seen = []

        # The asset graph, with the platform's groups.
        page.goto(f"{url}/asset-groups")
        for group in ["catalog", "core_energy", "market", "ops", "stage1", "trading"]:
            page.get_by_text(group, exact=True).first.wait_for()
        page.get_by_text("fetching statuses").first.wait_for(state="detached")
        _shoot(page, "asset-graph")
        pages_seen.append(page.content())

        # One month of daily bars recomputed from the asset's own Materialize button.
        page.goto(f"{url}/assets/market/price_bars_1d")
        page.get_by_role("button", name="Materialize…").first.click()
        href = _launch_partitions(page, "2020-06-01", "Launch 1 run")
        run_id = _run_id(href)
        assert wait_for_run(port, run_id, time.monotonic() + 240) == "SUCCESS"
        page.goto(url + href)
        page.get_by_text("Success", exact=True).first.wait_for()
        page.get_by_text("Loading run logs").first.wait_for(state="detached")
        _shoot(page, "run-succeeded")
        pages_seen.append(page.content())
        with dg.DagsterInstance.get() as instance:
            run = instance.get_run_by_id(run_id)
            assert run.tags["dagster/partition"] == "2020-06-01" and run.asset_selection == {BAR_KEYS["1d"]}
        rows = conn.execute("select count(*) from market.price_bars_1d").fetchone()[0]
        assert rows == 566
        page.goto(f"{url}/assets/market/price_bars_1d")
        page.get_by_text("Row count").first.wait_for()
        page.get_by_text(str(rows), exact=True).first.wait_for()
        _shoot(page, "asset-page")
        pages_seen.append(page.content())

        # A landed file with a crossed row: the daily job's blocking check stops it before the bars and EMAs.
        landed = day.landing / "prices"
        landed.mkdir(parents=True)
        crossed = re.sub(
            r"^2020-07-15,322.48,323.035,319.27,",
            "2020-07-15,322.48,319.27,323.035,",
            (SAMPLE_DATA_DIR / "prices" / "SPY.csv").read_text(),
            flags=re.M,
        )
        (landed / "SPY.csv").write_text(crossed)
        july_15 = "select high, low from market.price_bars_1d where trade_date = '2020-07-15'"
        bars_before = conn.execute(july_15).fetchone()
        page.goto(f"{url}/locations/trading_assets/jobs/market_daily")
        page.get_by_role("button", name="Materialize all…").click()
        href = _launch_partitions(page, "2020-07-01", "Launch 1 run")
        run_id = _run_id(href)
        assert wait_for_run(port, run_id, time.monotonic() + 240) == "FAILURE"
        page.goto(url + href)
        page.get_by_text("Failure", exact=True).first.wait_for()
        page.get_by_text("prices_not_crossed").first.wait_for()
        _shoot(page, "blocking-check")
        pages_seen.append(page.content())
        with dg.DagsterInstance.get() as instance:
            materialized = {
                r.dagster_event.asset_key
                for r in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
            }
            started = {r.step_key for r in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)}
        assert materialized == {PRICE_HISTORIES} and started == {"market__price_histories"}
        assert not materialized & {*BAR_KEYS.values(), *EMA_KEYS.values()}
        assert conn.execute(july_15).fetchone() == bars_before

        # A year of daily bars backfilled from the UI: one run for the twelve months.
        page.goto(f"{url}/assets/market/price_bars_1d")
        page.get_by_role("button", name="Materialize…").first.click()
        href = _launch_partitions(page, "[2019-01-01...2019-12-01]", "Launch backfill")
        backfill_id = href.rsplit("/", 1)[-1]
        with dg.DagsterInstance.get() as instance:
            deadline = time.monotonic() + 240
            # The backfill daemon submits the run on its next pass (every 30 s) and marks the backfill done on
            # the pass after: the run is what the test waits for.
            while not (runs := instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))):
                assert time.monotonic() < deadline, "the backfill made no run"
                time.sleep(1)
            [run] = runs
            assert wait_for_run(port, run.run_id, deadline) == "SUCCESS"
            assert len(instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))) == 1
        assert (run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]) == (
            "2019-01-01",
            "2019-12-01",
        )
        page.goto(f"{url}/runs/{run.run_id}")
        page.get_by_text("Success", exact=True).first.wait_for()
        _shoot(page, "backfill")
        pages_seen.append(page.content())

        for path in ["/runs", f"/runs/{run_id}", "/overview/activity/timeline", "/locations/trading_assets/jobs"]:
            page.goto(url + path)
            page.wait_for_load_state("networkidle")
            pages_seen.append(page.content())
        config = graphql(port, f'{{ runOrError(runId: "{run_id}") {{ ... on Run {{ runConfigYaml }} }} }}')
    assert TOKEN not in str(config)
    assert not [html for html in pages_seen if TOKEN in html]
    assert not instance_rows_holding(TOKEN)


def test_the_ui_listens_on_this_machine_only_and_read_only_refuses_to_launch(cli_env: Settings) -> None:
    with running_ui("--read-only") as port:
        listening = _listening_addresses(port)
        answer = launch(port, "trading_assets", [["core_energy", "dim_series"]], {})
    assert listening == {"127.0.0.1"}
    assert answer["__typename"] == "UnauthorizedError", answer


def _listening_addresses(port: int) -> set[str]:
    """The addresses a TCP socket of this machine listens on at `port` (from /proc/net/tcp, IPv4)."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, local_port = local.split(":")
        if state == "0A" and int(local_port, 16) == port:
            addresses.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return addresses
