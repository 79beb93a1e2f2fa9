"""The app in a real browser (Debian's headless Chromium through Playwright) on the embedded model:
pick the first example, run it, and check the plotly figures really render (SVG with node markers).

Screenshots go to test-output/ at the repository root (git-ignored), to be looked at by a person.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.serving import serving

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUT = Path(__file__).resolve().parent.parent / "test-output"
RUN_TIMEOUT_MS = 100_000  # the first run loads the model, then beam search N=4 on a slow CPU

pytestmark = [pytest.mark.browser, pytest.mark.model]


@pytest.fixture(scope="module")
def app_url():
    from app.ui import CSS, THEME

    with serving(theme=THEME, css=CSS) as url:
        yield url


@pytest.fixture(scope="module")
def page(app_url):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(app_url)
        page.wait_for_selector("#prompt textarea", timeout=60_000)
        page.errors = errors  # type: ignore[attr-defined]
        yield page
        browser.close()


def _text_of(page, selector: str) -> str:
    return page.eval_on_selector(selector, "el => el.value ?? el.textContent")


def _wait_status(page, text: str, timeout: int = RUN_TIMEOUT_MS) -> None:
    """Wait until the status line contains `text`; on timeout, fail showing the status."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    js = f"() => document.querySelector('#status').textContent.includes({text!r})"
    try:
        page.wait_for_function(js, timeout=timeout)
    except PlaywrightTimeout:
        pytest.fail(f"status never said {text!r}; it says {_text_of(page, '#status')!r}")


def test_first_example_runs_and_renders_the_tree(page):
    OUT.mkdir(exist_ok=True)
    from playwright.sync_api import expect

    page.locator("button.gallery-item").first.click()
    expect(page.locator("#prompt textarea")).to_have_value(re.compile("pencils"))
    page.click("#run-btn")

    # steps are drawn as they end, before their iteration is over
    _wait_status(page, "writing steps")
    page.wait_for_selector("#tree-plot .js-plotly-plot svg .scatterlayer path.point")
    page.screenshot(path=str(OUT / "explorer_writing.png"), full_page=True)

    # plotly's SVG inside the tree plot, with node markers drawn
    page.wait_for_selector(
        "#tree-plot .js-plotly-plot svg .scatterlayer path.point", timeout=RUN_TIMEOUT_MS
    )
    answer = "#final-answer textarea, #final-answer input"
    page.wait_for_function(
        f"() => {{ const el = document.querySelector('{answer}'); return el && el.value; }}",
        timeout=RUN_TIMEOUT_MS,
    )
    assert _text_of(page, answer).strip()
    # then majority voting runs for the comparison panel
    _wait_status(page, "majority voting:")
    page.wait_for_selector(
        "#votes-plot .js-plotly-plot svg .barlayer path", state="attached", timeout=10_000
    )
    markers = page.locator("#tree-plot .scatterlayer path.point").count()
    assert markers >= 4
    assert page.locator("#tree-plot .colorbar").count() == 1  # the PRM score scale
    page.screenshot(path=str(OUT / "explorer.png"), full_page=True)

    # the replay slider rewinds the tree to an earlier iteration
    page.locator("#replay input[type=range]").fill("1")
    page.wait_for_function(
        "() => document.querySelector('#tree-plot .gtitle').textContent.includes('replay 1/')",
        timeout=10_000,
    )
    page.screenshot(path=str(OUT / "explorer_replay.png"))
    assert not page.errors  # type: ignore[attr-defined]


def test_how_it_works_tab_draws_every_lesson(page):
    OUT.mkdir(exist_ok=True)
    page.get_by_role("tab", name="How it works").click()
    page.wait_for_function(
        "() => document.querySelectorAll('.js-plotly-plot svg .scatterlayer').length >= 7",
        timeout=30_000,
    )
    page.screenshot(path=str(OUT / "how_it_works.png"), full_page=True)


def test_stop_cancels_a_run_and_the_app_keeps_serving(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Explore").click()
    page.fill("#prompt textarea", "A box holds 6 eggs. How many eggs are in 4 boxes?")
    page.click("#run-btn")
    _wait_status(page, "Running")
    page.click("#stop-btn")
    _wait_status(page, "Stopped", timeout=5_000)
    expect(page.locator("#run-btn")).to_be_enabled()
    page.wait_for_timeout(1_000)
    assert "Stopped" in _text_of(page, "#status")  # nothing more arrives from the stopped run
    # a run right after Stop (without the majority comparison, to be quick) runs to the end
    page.get_by_text("Advanced").click()
    page.get_by_label("Compare with majority voting at the same N").uncheck()
    page.click("#run-btn")
    _wait_status(page, "Done")
    expect(page.locator("#run-btn")).to_be_enabled()
    assert not page.errors  # type: ignore[attr-defined]
