"""A real browser: `streamlit run app.py` on 127.0.0.1, headless Chromium through
selenium, click through every page, check that charts render (a canvas or svg inside the
Vega element) and that no exception box is shown. Screenshots of each page are saved
to $LAB_ARTIFACT_DIR (default cache/artifacts/browser)."""
import os
import time
from pathlib import Path

import pytest
from chromium import CHART, CHROMEDRIVER, CHROMIUM, open_page, page_exception, served_app, settle
from chromium import driver as chromium_driver
from conftest import REPO
from sample_results import fill_store

from engines.frameworks import FRAMEWORKS

selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.heavy(seconds=50)  # its wall time in the parallel suite: see conftest.py

PAGES = [("speed", "Speed", True), ("energy_memory", "Energy & memory", True), ("accuracy", "Accuracy", True),
         ("papers", "Papers", False), ("runs", "Runs", False), ("run", "Run a comparison", False)]


@pytest.fixture
def server(tmp_path):
    from engines.runs.store import ResultStore

    cache = tmp_path / "lab-cache"
    os.environ["LAB_CACHE_DIR"] = str(cache)
    fill_store(ResultStore(), seeds=(0, 1), oom_from=1024)
    env = dict(os.environ, LAB_CACHE_DIR=str(cache), KERAS_BACKEND="tensorflow")
    t0 = time.monotonic()
    with served_app(REPO, env, tmp_path / "streamlit.log", timeout_s=120) as app:
        yield app.url, t0


@pytest.fixture
def browser():
    driver = chromium_driver()
    yield driver
    driver.quit()


def _artifacts() -> Path:
    path = Path(os.environ.get("LAB_ARTIFACT_DIR") or REPO / "cache" / "artifacts" / "browser")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _no_exception(driver):
    text = page_exception(driver)
    assert text is None, text


def test_click_through_every_page_and_see_charts(server, browser):
    url, t0 = server
    wait = WebDriverWait(browser, 90)
    out = _artifacts()
    browser.get(url)
    wait.until(EC.presence_of_element_located((By.XPATH, '//h1[contains(., "Framework comparison lab")]')))
    wait.until(EC.presence_of_element_located((By.XPATH, '//button[contains(., "Run the default comparison")]')))
    settle(browser, wait)
    tables = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMarkdownContainer"] table')
    assert len(tables) == 2, "the home page's tables of frameworks and datasets"  # Markdown: labui.text
    rows = tables[0].find_elements(By.TAG_NAME, "tr")
    cells = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in rows]
    assert [row[0] for row in cells if row] == list(FRAMEWORKS)
    assert not any("\\" in text for row in cells for text in row), cells  # every escape was read as one
    home_s = time.monotonic() - t0
    _no_exception(browser)
    browser.save_screenshot(str(out / "home.png"))
    timings = {"streamlit run -> home rendered (s)": round(home_s, 1)}
    for slug, heading, has_chart in PAGES:
        timings[f"{slug} (s)"] = round(open_page(browser, wait, slug, heading, has_chart), 1)
        _no_exception(browser)
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(out / f"{slug}.png"))
        if has_chart:
            assert browser.find_elements(By.CSS_SELECTOR, CHART)
    (out / "timings.txt").write_text("\n".join(f"{k}: {v}" for k, v in timings.items()) + "\n")


def test_a_deep_link_is_the_first_visit(server, browser):
    """A fresh server whose first visitor opens a bookmarked page (with its query) gets the
    app around it (wide layout, the sidebar's sections), not the page file alone."""
    url, _ = server
    wait = WebDriverWait(browser, 90)
    browser.get(url + "/papers?preset=tf_keras_variance")
    wait.until(EC.presence_of_element_located((By.XPATH, '//h1[contains(., "Papers")]')))
    settle(browser, wait)
    _no_exception(browser)
    nav = [a.text for a in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNav"] a')]
    assert any("Papers" in t for t in nav) and any("Home" in t for t in nav), nav
    assert "TensorFlow vs Keras" in browser.page_source
    browser.save_screenshot(str(_artifacts() / "papers_deep_link.png"))
