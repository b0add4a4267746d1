"""The teacher's click, timed as a class sees it: the app started on an empty cache, the
home page opened in headless Chromium, "Run the default comparison" clicked, and the
seconds until the page links to the results; meanwhile each task's stages are read from
the queue, so the table says where the time went (start-up, data, import, training, ...).

    python benchmarks/demo_click.py [--warm] [--warm-workers 0|1]

Default: the button is clicked as soon as the home page is drawn (the app just started:
the job's workers start together when it begins, engines.runs.spares). `--warm`: the
click waits until the idle app keeps a worker of every installed framework waiting, as
when the teacher opened the app a minute before class. `--warm-workers 0` runs it with
LAB_WARM_WORKERS=0 (every task starts its own worker when it starts), for comparison.
The load average is printed beside every figure. A benchmark: nothing asserts a time.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(HERE), str(HERE / "tests")]
import chromium

BUTTON = '//button[contains(., "Run the default comparison")]'
PAGE_EVERY_S = 2.0  # how often follow() reads the page while the job runs


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _spares(parent: int) -> dict[int, float]:
    """The app's waiting workers (`worker --spare`): pid -> CPU seconds used so far."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if b"--spare" in cmd and int(stat[1]) == parent:
            found[int(proc.name)] = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return found


def wait_warm(parent: int, expected: int, timeout_s: float = 600) -> float:
    """Seconds until `expected` spares of the app exist and none used CPU for a second
    (each has imported and waits on its stdin)."""
    t = time.monotonic()
    before: dict[int, float] = {}
    while time.monotonic() - t < timeout_s:
        now = _spares(parent)
        if len(now) >= expected and now == before:
            return time.monotonic() - t
        before = now
        time.sleep(1.0)
    raise TimeoutError(f"the app kept {len(before)} of {expected} workers waiting after {timeout_s:g} s")


def follow(driver, queue, t_click: float, timeout_s: float = 900) -> tuple[float, dict]:
    """Poll the queue (4 times a second) and the page until the page links to the results:
    (seconds from the click, {framework: [(stage, seconds from the click), ...]}). The page
    is read every PAGE_EVERY_S, and at once when the queue says the job has ended: reading
    it makes Chromium lay the page out, and at 4 reads a second that kept its renderer at
    70-100% of a core, beside the timed tasks (PyTorch's epochs 5x slower, the click 52-56 s
    instead of 39), which no class's browser does."""
    from selenium.webdriver.common.by import By

    from engines.runs.queue import FINISHED

    stages: dict[str, list[tuple[str, float]]] = {}
    next_read = 0.0
    while time.monotonic() - t_click < timeout_s:
        jobs = queue.jobs(limit=1)
        status = queue.status(jobs[0]["id"]) if jobs else {}
        for task in status.get("tasks") or []:
            stage = task["state"] if task["state"] != "running" else (task.get("progress") or {}).get("stage")
            seen = stages.setdefault(task["framework"], [])
            if stage and (not seen or seen[-1][0] != stage):
                seen.append((stage, time.monotonic() - t_click))
        ended = status.get("state") in FINISHED
        if ended or time.monotonic() >= next_read:
            next_read = time.monotonic() + PAGE_EVERY_S
            if "See the results" in driver.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]').text:
                return time.monotonic() - t_click, stages
        time.sleep(0.25)
    raise TimeoutError(f"no results {timeout_s:g} s after the click")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--warm", action="store_true", help="click once the idle app keeps its workers waiting")
    ap.add_argument("--warm-workers", choices=("0", "1"), default="1", help="LAB_WARM_WORKERS for the app")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="demo-click-"))
    os.environ["LAB_CACHE_DIR"] = str(tmp / "cache")  # an empty cache, shared with the app
    env = dict(os.environ, KERAS_BACKEND="tensorflow", LAB_WARM_WORKERS=args.warm_workers)
    from selenium.webdriver.support.ui import WebDriverWait

    from engines.frameworks import FRAMEWORKS, installed
    from engines.runs.queue import JobQueue

    driver = chromium.driver()
    wait = WebDriverWait(driver, 180)
    try:
        t0 = time.monotonic()
        with chromium.served_app(HERE, env, tmp / "streamlit.log") as app:
            driver.get(app.url)
            wait.until(lambda d: d.find_elements("xpath", BUTTON))
            chromium.settle(driver, wait)
            print(f"start -> home rendered         {time.monotonic() - t0:7.1f} s   load {load()}", flush=True)
            if args.warm:
                expected = sum(installed(fw) for fw in FRAMEWORKS)
                waited = wait_warm(app.proc.pid, expected)
                print(f"workers waiting ({expected})            {waited:7.1f} s   load {load()}", flush=True)
            t_click = time.monotonic()
            driver.find_element("xpath", BUTTON).click()
            seconds, stages = follow(driver, JobQueue(), t_click)
            print(f"click -> results               {seconds:7.1f} s   load {load()}   "
                  f"(LAB_WARM_WORKERS={args.warm_workers}{', warm' if args.warm else ''})", flush=True)
            for framework, seen in stages.items():
                print(f"  {framework:<10}" + " -> ".join(f"{stage} {t:.1f}" for stage, t in seen))
    finally:
        driver.quit()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
