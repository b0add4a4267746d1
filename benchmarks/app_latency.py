"""How fast the app answers a user: `streamlit run app.py` started headless on a free
port with a store of N synthetic results, every page opened in headless Chromium (Debian's
chromium + chromedriver through selenium, as tests/test_browser_smoke.py does), and the
UI process's resident memory once every page has been opened.

    python benchmarks/app_latency.py [--results 1000] [--repo PATH] [--rounds 2]

Prints one table: start -> home rendered, then each page's first visit ("cold": the
page's imports and first reads) and its later visits ("warm", the best of --rounds - 1),
then the server's RSS; the load average beside every figure, since the machine may be
shared. `--repo` measures another checkout (e.g. the code before a change) with the same
seeded store, so before and after come from one run of this script.

A benchmark, not a test: nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE / "tests"))  # this checkout's tests/chromium.py and tests/sample_results.py
import chromium

# (url slug, its heading, whether the page draws a chart with the seeded results)
PAGES = [("run", "Run a comparison", False), ("speed", "Speed", True), ("energy_memory", "Energy & memory", True),
         ("accuracy", "Accuracy", True), ("papers", "Papers", False), ("runs", "Runs", False)]
FRAMEWORKS = ("keras", "pytorch", "jax")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def seed_store(cache: Path, n: int) -> None:
    """N schema-1 results from tests/sample_results.make_result, three frameworks x three
    seeds per comparison, comparisons differing by resolution and dataset (so the lists
    hold N/9 comparisons). Runs inside the measured checkout (its store code)."""
    os.environ["LAB_CACHE_DIR"] = str(cache)
    try:
        from engines.runs.store import ResultStore
    except ImportError:  # a checkout from before engines/ was grouped by concern
        from engines.store import ResultStore
    from sample_results import make_result

    store = ResultStore()
    datasets = ("digits", "mnist", "cifar10")
    for i in range(n):
        group = i // len(FRAMEWORKS)
        comp = group // 3
        r = make_result(FRAMEWORKS[i % len(FRAMEWORKS)], group % 3, dataset=datasets[comp % len(datasets)],
                        resolution=8 + comp // len(datasets), gpu=comp % 2 == 0, oom_from=1024)
        store.put(f"bench-{i:05d}", r)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _open(driver, wait, slug: str, heading: str, chart: bool) -> float:
    """Click the page's sidebar link; seconds until it has rendered (an exception box fails)."""
    seconds = chromium.open_page(driver, wait, slug, heading, chart)
    error = chromium.page_exception(driver)
    if error:
        raise RuntimeError(f"{slug}: the page shows an exception: {error[:500]}")
    return seconds

def measure(repo: Path, n: int, rounds: int) -> list[tuple[str, str, str, str]]:
    """Rows (what, seconds, second figure, load) for one checkout."""
    from selenium.webdriver.support.ui import WebDriverWait

    tmp = Path(tempfile.mkdtemp(prefix="app-latency-"))
    cache = tmp / "cache"
    env = dict(os.environ, LAB_CACHE_DIR=str(cache), KERAS_BACKEND="tensorflow",
               PYTHONPATH=os.pathsep.join([str(repo), str(repo / "tests")]))
    t = time.monotonic()
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--seed-into", str(cache), "--results", str(n)],
                   cwd=repo, env=env, check=True)
    rows = [(f"seed {n} results", f"{time.monotonic() - t:.1f}", "", load())]
    driver = chromium.driver()  # started before the server's clock: Chromium's own start is not the app's
    wait = WebDriverWait(driver, 180)
    t0 = time.monotonic()
    try:
        with chromium.served_app(repo, env, tmp / "streamlit.log") as app:
            rows += _measure_served(app, driver, wait, t0, n, rounds)
    finally:
        driver.quit()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def _measure_served(app, driver, wait, t0: float, n: int, rounds: int) -> list[tuple[str, str, str, str]]:
    """The rows of one served app: home from the server's start (t0), every page, its RSS."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    url, rows = app.url, []
    rows.append(("start -> server healthy", f"{app.healthy_s:.2f}", "", load()))
    t1 = time.monotonic()
    driver.get(url)
    wait.until(EC.presence_of_element_located((By.XPATH, '//h1[contains(., "Framework comparison lab")]')))
    wait.until(EC.presence_of_element_located((By.XPATH, '//button[contains(., "Run the default comparison")]')))
    chromium.settle(driver, wait)
    first = time.monotonic() - t1
    rows.append(("start -> home rendered", f"{time.monotonic() - t0:.2f}", f"(browser open -> home {first:.2f})",
                 load()))
    times: dict[str, list[float]] = {slug: [] for slug, _, _ in PAGES}
    times["home"] = []
    for _ in range(rounds):
        for slug, heading, chart in PAGES:
            times[slug].append(_open(driver, wait, slug, heading, chart and n > 0))  # no results: no chart
        home = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNav"] a')[0]
        t = time.monotonic()
        home.click()
        wait.until(EC.presence_of_element_located((By.XPATH, '//h1[contains(., "Framework comparison lab")]')))
        chromium.settle(driver, wait)
        times["home"].append(time.monotonic() - t)
    for slug in [p[0] for p in PAGES] + ["home"]:
        warm = min(times[slug][1:]) if len(times[slug]) > 1 else float("nan")
        rows.append((f"page {slug}", f"{times[slug][0]:.2f}", f"{warm:.2f}", load()))
    t = time.monotonic()  # a bookmarked page opened in a new page load (a new session)
    driver.get(url + "/run")
    wait.until(EC.presence_of_element_located((By.XPATH, '//h1[contains(., "Run a comparison")]')))
    chromium.settle(driver, wait)
    rows.append(("direct load of /run", f"{time.monotonic() - t:.2f}", "", load()))
    rows.append(("UI process RSS (MB)", f"{_rss_mb(app.proc.pid):.0f}", "", load()))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=int, default=1000, help="synthetic results in the store (default 1000)")
    ap.add_argument("--repo", action="append", type=Path,
                    help="checkout(s) to measure, in this order (default: this one); repeat to compare")
    ap.add_argument("--rounds", type=int, default=3, help="visits of every page (the first is the cold one)")
    ap.add_argument("--seed-into", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.seed_into:
        seed_store(args.seed_into, args.results)
        return 0
    repos = args.repo or [HERE]
    results = {repo: measure(repo.resolve(), args.results, max(2, args.rounds)) for repo in repos}
    for repo, rows in results.items():
        print(f"\n{repo}  ({args.results} results; page rows: cold s, warm s)")
        print(f"{'what':<28} {'s':>8}  {'':<32} load (1/5/15 min)")
        for what, a, b, ld in rows:
            print(f"{what:<28} {a:>8}  {b:<32} {ld}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
