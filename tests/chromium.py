"""Headless Chromium on the app, for the browser smoke test and the benchmarks that open it
(app_latency.py, demo_click.py):
Debian's chromium and chromedriver through selenium (imported when a function needs it),
the command that serves the app, and how a page is opened and judged rendered.

It is no test module (pytest does not collect it); tests import it as `chromium`, the
benchmark with tests/ on sys.path.
"""
from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# A chart has rendered once its Vega element holds a canvas or an svg.
CHART = ('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg, '
         '.vega-embed canvas, .vega-embed svg')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_command(port: int, repo=None) -> list[str]:
    """The app as `./lab app` serves it (labui.serve: `streamlit run app.py` with the home
    page's modules preloaded; plain `streamlit run` for a checkout from before it) on
    127.0.0.1:port, headless, nothing sent out."""
    serve = repo is None or (Path(repo) / "labui" / "serve.py").is_file()
    return [sys.executable, "-m", *(("labui.serve",) if serve else ("streamlit", "run")), "app.py",
            "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
            "--browser.gatherUsageStats", "false"]


@dataclass
class App:
    url: str
    proc: subprocess.Popen
    healthy_s: float  # seconds from the command's start until the server answered its health check


@contextlib.contextmanager
def served_app(cwd, env: dict, log_path: Path, timeout_s: float = 180):
    """The app served by `app_command` on a free port, from `cwd` with `env`, until its
    health check answers; stopped when the block ends. Its output goes to `log_path`, and a
    server that exits first raises with that log."""
    port = free_port()
    started = time.monotonic()
    with open(log_path, "w") as log:  # the server keeps its own copy of the file
        proc = subprocess.Popen(app_command(port, cwd), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(Path(log_path).read_text())
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"the app did not answer within {timeout_s:g} s:\n{Path(log_path).read_text()}")
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.1)
        yield App(url, proc, time.monotonic() - started)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--window-size=1500,1100"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def settle(driver, wait) -> None:
    """Wait until Streamlit has finished running the page's script (the app's root says so
    in data-test-script-state, as Streamlit's own browser tests read it), no element is
    still stale from the previous page, and the browser has painted a frame since. The
    callers first wait for the page's own heading, so the run being waited for has begun."""
    from selenium.webdriver.common.by import By

    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="stApp"][data-test-script-state="notRunning"]'))
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, '[data-stale="true"]'))
    driver.execute_async_script("const done = arguments[arguments.length - 1];"
                                "requestAnimationFrame(() => requestAnimationFrame(() => done()));")


def open_page(driver, wait, slug: str, heading: str, chart: bool) -> float:
    """Click the page's sidebar link; seconds until its heading (and chart, if it draws
    one) are there and it has settled."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    link = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, f'[data-testid="stSidebarNav"] a[href$="/{slug}"]')))
    t = time.monotonic()
    link.click()
    wait.until(EC.presence_of_element_located((By.XPATH, f'//h1[contains(., "{heading}")]')))
    if chart:
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, CHART)))
    settle(driver, wait)
    return time.monotonic() - t


def page_exception(driver) -> str | None:
    """The text of the first exception box the page shows, if any."""
    from selenium.webdriver.common.by import By

    boxes = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    return boxes[0].text if boxes else None
