"""A matrix of bad inputs and faults, tried as a new user (or an unlucky class) would, each
judged by what the lab did:

    clear error      refused, or failed, with a message that names what is wrong
                     (a spec mistake: exit 2 before anything is queued, the field named)
    correct outcome  the fault was absorbed: the right result, or the right thing done
    weak error       refused or failed, but late (after queueing) or without naming it
    silent wrong     accepted and did something other than asked, without a word
    crash or hang    a traceback, or no answer within the case's time limit
    lost work        someone's request or result was destroyed by another's fault

    .venv/bin/python benchmarks/fault_matrix.py              # every case, in a temp folder
    .venv/bin/python benchmarks/fault_matrix.py --area queue # one area (cli, sweep, data,
                                                             # cache, queue, app)
    .venv/bin/python benchmarks/fault_matrix.py --list       # the cases, without running

Areas: the CLI (`python -m engines`, a fresh process per case), sweep grids, data files,
the cache (result store and weights), the queue with real workers (the real launcher and
a real PyTorch worker on a tiny synthetic set, on the CPU; runners, waiting clients and
workers killed with SIGKILL, a worker hung through its test hook) and the app (Streamlit
AppTest). Every case has its own LAB_CACHE_DIR. Prints one line per case, the totals per
verdict, and (with --json FILE) the rows and the figures for the report.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

VERDICTS = ("clear error", "correct outcome", "weak error", "silent wrong", "crash or hang", "lost work")
CLI_TIMEOUT_S = 180
REAL_TIMEOUT_S = 420  # a real PyTorch worker on a busy 2-core machine
FIGURES: dict[str, object] = {}  # measured along the way, for the report


@dataclass
class Outcome:
    verdict: str
    detail: str

    def __post_init__(self):
        assert self.verdict in VERDICTS, self.verdict


@dataclass
class Case:
    area: str
    name: str
    run: Callable[[Path], Outcome]


CASES: list[Case] = []


def case(area: str, name: str):
    def register(fn):
        CASES.append(Case(area, name, fn))
        return fn
    return register


# -- helpers ------------------------------------------------------------------------------------
def env_for(root: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    env.update(LAB_CACHE_DIR=str(root / "cache"), LAB_DATA_PATH=os.environ.get("LAB_DATA_PATH", ""),
               PYTHONUNBUFFERED="1", KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def cli(root: Path, *args, env=None, timeout=CLI_TIMEOUT_S) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["nice", "-n", "10", sys.executable, "-m", "engines", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=timeout, env=env or env_for(root))
    except subprocess.TimeoutExpired:
        return None


def queued_jobs(root: Path) -> int:
    db = root / "cache" / "queue" / "queue.sqlite3"
    if not db.exists():
        return 0
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        con.close()


def first_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-2:])[:160] if lines else "(nothing on stderr)"


def judge_refusal(root: Path, p, field: str, *, exit_code: int = 2) -> Outcome:
    """A spec-level mistake: exit 2 (or `exit_code`), the field named, one reason, nothing
    queued, no traceback."""
    if p is None:
        return Outcome("crash or hang", f"no answer within {CLI_TIMEOUT_S} s")
    if "Traceback" in p.stderr:
        return Outcome("crash or hang", "traceback: " + first_error(p.stderr))
    jobs = queued_jobs(root)
    if p.returncode == 0:
        return Outcome("silent wrong", f"exit 0, accepted ({jobs} job(s))")
    if p.returncode == exit_code and field in p.stderr and jobs == 0:
        return Outcome("clear error", f"exit {p.returncode}: " + first_error(p.stderr))
    return Outcome("weak error", f"exit {p.returncode}, {jobs} job(s) queued, field {field!r} "
                                 f"{'named' if field in p.stderr else 'not named'}: " + first_error(p.stderr))


def in_cache(root: Path):
    """Point this process at the case's cache (the queue, the store and the data root)."""
    os.environ["LAB_CACHE_DIR"] = str(root / "cache")
    os.environ.pop("LAB_DATA_ROOT", None)


def expect_dataset_error(fn, *needles) -> Outcome:
    from engines.datasets import DatasetError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = fn()
    except DatasetError as e:
        text = str(e)
        if all(n in text for n in needles):
            return Outcome("clear error", text[:160])
        return Outcome("weak error", f"message lacks {needles}: {text[:160]}")
    return Outcome("silent wrong", f"loaded {getattr(ds, 'name', ds)!r} without a word")


# -- CLI: spec-level mistakes are refused before queueing, exit 2, the field named ----------------
SYN = ["--dataset", "synthetic", "--size", "8", "--frameworks", "pytorch"]
CLI_REFUSALS = [
    ("unknown dataset", ["--dataset", "nosuch"], "dataset"),
    ("resolution 0", ["--dataset", "synthetic", "--size", "0"], "resolution"),
    ("resolution 5000", ["--dataset", "synthetic", "--size", "5000"], "resolution"),
    ("unknown architecture", SYN + ["--arch", "nosuch"], "architecture"),
    ("unknown framework", ["--dataset", "synthetic", "--frameworks", "mxnet"], "frameworks"),
    ("empty framework list", ["--dataset", "synthetic", "--frameworks", ","], "frameworks"),
    ("batch size 0", SYN + ["--batch-sizes", "0"], "batch_sizes"),
    ("batch size not a number", SYN + ["--batch-sizes", "1,abc"], "--batch-sizes"),
    ("epochs 0", SYN + ["--epochs", "0"], "epochs"),
    ("epochs 100000", SYN + ["--epochs", "100000"], "epochs"),
    ("repeats 0", SYN + ["--repeats", "0"], "repeats"),
    ("negative seed", SYN + ["--seed", "-1"], "seed"),
    ("seed + repeats past 2^31-1", SYN + ["--seed", "2147483647", "--repeats", "2"], "seed"),
    ("learning rate 0", SYN + ["--lr", "0"], "learning_rate"),
    ("learning rate nan", SYN + ["--lr", "nan"], "learning_rate"),
    ("weight decay 2", SYN + ["--optimizer", "adamw", "--weight-decay", "2"], "weight_decay"),
    ("unknown precision", SYN + ["--precision", "fp8"], "precision"),
    ("unknown optimizer", SYN + ["--optimizer", "lion"], "optimizer"),
    ("XLA autotune level 9", ["--dataset", "synthetic", "--frameworks", "jax", "--xla-autotune", "9"],
     "xla_autotune"),
    ("cuDNN toggle without PyTorch", ["--dataset", "synthetic", "--frameworks", "jax", "--cudnn-benchmark"],
     "cudnn_benchmark"),
    ("training batch 0", SYN + ["--train-batch-size", "0"], "train_batch_size"),
    ("measure iterations 0", SYN + ["--measure-iters", "0"], "measure_iters"),
    ("synthetic classes=1", SYN + ["--dataset-option", "classes=1"], "dataset_options.classes"),
    ("synthetic train=-5", SYN + ["--dataset-option", "train=-5"], "dataset_options.train"),
    ("synthetic train=abc", SYN + ["--dataset-option", "train=abc"], "dataset_options.train"),
    ("synthetic channels=2", SYN + ["--dataset-option", "channels=2"], "dataset_options.channels"),
    ("synthetic channels=abc (named, not resolution)", SYN + ["--dataset-option", "channels=abc"],
     "dataset_options.channels"),
    ("synthetic 1e6 images at 512 px", ["--dataset", "synthetic", "--size", "512", "--dataset-option",
                                        "train=1000000"], "dataset_options.train"),
    ("unknown dataset option", SYN + ["--dataset-option", "colour=1"], "dataset_options"),
    ("dataset option without =", SYN + ["--dataset-option", "classes"], "--dataset-option"),
    ("folder max_per_class=abc", ["--dataset", "folder", "--dataset-option", "max_per_class=abc"],
     "dataset_options.max_per_class"),
    ("folder max_per_class=-3", ["--dataset", "folder", "--dataset-option", "max_per_class=-3"],
     "dataset_options.max_per_class"),
    ("folder without a path (the hint names the real option)", ["--dataset", "folder"],
     "--dataset-option path="),
    ("folder path=/usr/share/icons", ["--dataset", "folder", "--dataset-option", "path=/usr/share/icons"],
     "dataset_options.path"),
    ("folder path=../../..", ["--dataset", "folder", "--dataset-option", "path=../../.."], "dataset_options.path"),
    ("folder path=/root", ["--dataset", "folder", "--dataset-option", "path=/root"], "dataset_options.path"),
    ("imagenet100 path=/etc", ["--dataset", "imagenet100", "--dataset-option", "path=/etc"], "dataset_options.path"),
    ("multi-label MedMNIST (unsupported)", ["--dataset", "chestmnist"], "dataset"),
    ("2 frameworks x 100 repeats (tasks per request)", ["--dataset", "synthetic", "--frameworks", "pytorch,jax",
                                                        "--repeats", "100"], "repeats"),
]
for _name, _args, _field in CLI_REFUSALS:
    def _refusal(root, args=_args, field=_field):
        return judge_refusal(root, cli(root, "run", *args), field)
    case("cli", _name)(_refusal)


@case("cli", "a setting that is not a number (LAB_TASK_TIMEOUT_S=soon)")
def _bad_setting(root):
    return judge_refusal(root, cli(root, "run", *SYN, env=env_for(root, LAB_TASK_TIMEOUT_S="soon")),
                         "LAB_TASK_TIMEOUT_S")


@case("cli", "models --resolution 0")
def _models_resolution(root):
    return judge_refusal(root, cli(root, "models", "--resolution", "0"), "--resolution")


@case("cli", "models --channels 2")
def _models_channels(root):
    return judge_refusal(root, cli(root, "models", "--channels", "2"), "--channels")


@case("cli", "the cache folder is a file (unwritable)")
def _cache_is_a_file(root):
    root.mkdir(parents=True, exist_ok=True)
    (root / "cache").write_text("not a folder")
    p = cli(root, "run", *SYN)
    if p is None or "Traceback" in p.stderr:
        return Outcome("crash or hang", first_error(p.stderr) if p else "no answer")
    one = len(p.stderr.strip().splitlines()) == 1
    if p.returncode == 1 and one and "LAB_CACHE_DIR" in p.stderr:
        return Outcome("clear error", first_error(p.stderr))
    return Outcome("weak error", f"exit {p.returncode}: {first_error(p.stderr)}")


@case("cli", "the disk fills up (file size limit 16 KiB)")
def _disk_full(root):
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, 16 * 1024))
    try:
        p = subprocess.run([sys.executable, "-m", "engines", "run", *SYN, "--dataset-option", "train=64",
                            "--no-compile"], cwd=REPO,
                           capture_output=True, text=True, timeout=REAL_TIMEOUT_S, env=env_for(root),
                           preexec_fn=limit)
    except subprocess.TimeoutExpired:
        return Outcome("crash or hang", f"no answer within {REAL_TIMEOUT_S} s")
    if "Traceback" in p.stderr:
        return Outcome("crash or hang", "traceback: " + first_error(p.stderr))
    if p.returncode == 1 and "could not use its files" in p.stderr and len(p.stderr.strip().splitlines()) == 1:
        return Outcome("clear error", first_error(p.stderr))
    if p.returncode == 0:
        return Outcome("correct outcome", "the run finished within the limit")
    return Outcome("weak error", f"exit {p.returncode}: {first_error(p.stderr)}")


# -- sweeps ---------------------------------------------------------------------------------------------
def sweep_refusal(root: Path, name: str, text: str | bytes, field: str, *extra) -> Outcome:
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return judge_refusal(root, cli(root, "sweep", str(path), *extra), field)


@case("sweep", "6 keys x 40 values (4.1e9 combinations)")
def _grid_huge(root):
    grid = {k: list(range(1, 41)) for k in ("epochs", "seed", "warmup_iters", "measure_iters", "repeats",
                                            "train_batch_size")}
    t0 = time.monotonic()
    out = sweep_refusal(root, "grid.json", json.dumps(grid), "LAB_MAX_SWEEP_RUNS")
    out.detail += f" ({time.monotonic() - t0:.1f} s)"
    return out


@case("sweep", "nested YAML aliases (10^9 values in 10 lines)")
def _grid_aliases(root):
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return sweep_refusal(root, "bomb.yaml", "\n".join(lines) + "\nepochs: *a8\n", "YAML aliases")


@case("sweep", "a misspelt field (epoch)")
def _grid_unknown(root):
    return sweep_refusal(root, "grid.yaml", "dataset: synthetic\nepoch: [1, 2]\n", "epoch")


@case("sweep", "invalid YAML")
def _grid_invalid_yaml(root):
    return sweep_refusal(root, "grid.yaml", "dataset: [synthetic\nepochs: 1\n", "not valid YAML")


@case("sweep", "a list of numbers instead of a mapping")
def _grid_list(root):
    return sweep_refusal(root, "grid.json", "[1, 2, 3]", "expected a mapping")


@case("sweep", "a mapping where a value belongs (precision: {a: 1})")
def _grid_mapping_value(root):
    return sweep_refusal(root, "grid.yaml", "dataset: synthetic\nprecision: {a: 1}\n", "precision")


@case("sweep", "a missing grid file")
def _grid_missing(root):
    root.mkdir(parents=True, exist_ok=True)
    return judge_refusal(root, cli(root, "sweep", str(root / "nope.yaml")), "cannot read")


@case("sweep", "a 5 MB binary file as the grid")
def _grid_binary(root):
    return sweep_refusal(root, "grid.yaml", os.urandom(5 << 20), "grid file is at most")


@case("sweep", "JSON nested 100,000 lists deep")
def _grid_deep(root):
    return sweep_refusal(root, "grid.json", "[" * 100000 + "]" * 100000, "not valid JSON")


@case("sweep", "--max-runs 0")
def _grid_max_runs_zero(root):
    return sweep_refusal(root, "grid.yaml", "dataset: synthetic\n", "--max-runs", "--max-runs", "0")


@case("sweep", "one bad combination among good ones: nothing runs")
def _grid_one_bad(root):
    return sweep_refusal(root, "grid.yaml", "dataset: synthetic\nsize: 8\nframeworks: [pytorch]\n"
                                            "epochs: [1, 0, 2]\n", "epochs")


@case("sweep", "a 12-run sweep with LAB_MAX_QUEUED_JOBS=3 (fake executor)")
def _grid_share(root):
    from engines import cli as cli_mod
    from engines.runs.queue import JobQueue

    in_cache(root)
    os.environ["LAB_MAX_QUEUED_JOBS"] = "3"
    qs = _queue_stress()
    ex = qs.FakeExecutor(sleep_s=0.02)
    most = [0]

    def make_queue():
        q = JobQueue(executor=ex)
        submit = q.submit

        def counting(*a, **kw):
            job = submit(*a, **kw)
            most[0] = max(most[0], len(q.jobs(states="queued")))
            return job
        q.submit = counting
        return q
    saved = cli_mod.make_queue
    cli_mod.make_queue = make_queue
    try:
        with contextlib.redirect_stdout(open(os.devnull, "w")), contextlib.redirect_stderr(open(os.devnull, "w")):
            rc = cli_mod.execute([qs.demo_spec(e) for e in range(1, 13)], force=False, as_json=False)
    finally:
        cli_mod.make_queue = saved
        os.environ.pop("LAB_MAX_QUEUED_JOBS", None)
    if rc == 0 and len(ex.calls) == 12 and most[0] <= 3:
        return Outcome("correct outcome", f"12 runs done, at most {most[0]} queued at once")
    return Outcome("weak error" if rc else "silent wrong", f"exit {rc}, {len(ex.calls)} runs, {most[0]} queued")


# -- data files ---------------------------------------------------------------------------------------
def _pngs(folder: Path, classes=("a", "b"), n=8, size=12):
    from PIL import Image

    for i, c in enumerate(classes):
        (folder / c).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            Image.fromarray(np.full((size, size, 3), 40 * i + k, np.uint8)).save(folder / c / f"{k}.png")


@case("data", "a link inside a data folder to a file outside")
def _link_file(root):
    from engines.datasets import load_dataset
    from engines.paths import data_root

    in_cache(root)
    _pngs(data_root() / "pets")
    _pngs(root / "outside", classes=("x",))
    (data_root() / "pets" / "b" / "icon.png").symlink_to(root / "outside" / "x" / "0.png")
    return expect_dataset_error(lambda: load_dataset("folder", 12, path="pets"), "icon.png", "outside the data")


@case("data", "a class folder that links to /usr/share")
def _link_dir(root):
    from engines.datasets import load_dataset
    from engines.paths import data_root

    in_cache(root)
    _pngs(data_root() / "pets")
    (data_root() / "pets" / "c").symlink_to("/usr/share", target_is_directory=True)
    return expect_dataset_error(lambda: load_dataset("folder", 12, path="pets"), "outside the data")


@case("data", "a folder of 3000 px images at the folder's own size")
def _big_images(root):
    from engines.datasets import load_dataset
    from engines.paths import data_root

    in_cache(root)
    _pngs(data_root() / "big", n=7, size=3000)
    return expect_dataset_error(lambda: load_dataset("folder", path="big"), "2048 px maximum", "--size")


@case("data", "a folder with one class")
def _one_class(root):
    from engines.datasets import load_dataset
    from engines.paths import data_root

    in_cache(root)
    _pngs(data_root() / "one", classes=("only",))
    return expect_dataset_error(lambda: load_dataset("folder", 12, path="one"), "at least two classes")


@case("data", "a folder with a broken image")
def _broken_image(root):
    from engines.datasets import load_dataset
    from engines.paths import data_root

    in_cache(root)
    _pngs(data_root() / "pets")
    (data_root() / "pets" / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    return expect_dataset_error(lambda: load_dataset("folder", 12, path="pets"), "broken.png")


@case("data", "a folder with too few images to split")
def _too_few(root):
    from engines.datasets import load_dataset
    from engines.paths import data_root

    in_cache(root)
    _pngs(data_root() / "few", n=2)
    return expect_dataset_error(lambda: load_dataset("folder", 12, path="few"), "too few images")


@case("data", "a keras-style mnist.npz with other arrays")
def _fake_mnist(root):
    from engines.datasets import load_dataset
    from engines.paths import data_root

    in_cache(root)
    rng = np.random.default_rng(0)
    fake = data_root() / "mnist" / "mnist.npz"
    fake.parent.mkdir(parents=True)
    np.savez(fake, x_train=rng.integers(0, 255, (60000, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, 60000).astype(np.uint8),
             x_test=rng.integers(0, 255, (10000, 28, 28), dtype=np.uint8), y_test=np.zeros(10000, np.uint8))
    return expect_dataset_error(lambda: load_dataset("mnist", download_missing=False), "mnist.npz")


@case("data", "a truncated mnist.npz")
def _truncated_mnist(root):
    from engines.datasets import load_dataset
    from engines.paths import data_root

    in_cache(root)
    fake = data_root() / "mnist" / "mnist.npz"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    return expect_dataset_error(lambda: load_dataset("mnist", download_missing=False), "mnist.npz")


@case("data", "a MedMNIST file that holds a pickled object")
def _pickled_npz(root):
    from engines.datasets import load_dataset
    from engines.paths import data_root

    in_cache(root)
    f = data_root() / "breastmnist" / "breastmnist.npz"
    f.parent.mkdir(parents=True)
    np.savez(f, train_images=np.array([{"evil": 1}], dtype=object))
    return expect_dataset_error(lambda: load_dataset("breastmnist", 28, download_missing=False),
                                "breastmnist.npz")


def _resized_case(root, damage: Callable[[Path], None]) -> Outcome:
    from engines.datasets import load_dataset
    from engines.paths import data_root

    in_cache(root)
    good = load_dataset("digits", 16)
    cache = data_root() / "resized" / "digits_8px_to_16px.npz"
    damage(cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = load_dataset("digits", 16)
    named = any(cache.name in str(w.message) for w in caught)
    same = np.array_equal(again.train.x, good.train.x) and np.array_equal(again.train.y, good.train.y)
    if same and named:
        return Outcome("correct outcome", "rebuilt; the warning names " + cache.name)
    if same:
        return Outcome("weak error", "rebuilt without naming the file")
    return Outcome("silent wrong", "the damaged cache was used")


@case("data", "a resized-data cache file that opens but holds wrong labels")
def _resized_labels(root):
    def damage(cache):
        arrays = dict(np.load(cache))
        arrays["train_labels"] = (arrays["train_labels"] + 1) % 10
        np.savez(cache, **arrays)
    return _resized_case(root, damage)


@case("data", "a resized-data cache file of garbage")
def _resized_garbage(root):
    return _resized_case(root, lambda cache: cache.write_bytes(b"garbage"))


@case("data", "a folder's decoded-image cache of the wrong shape")
def _folder_cache(root):
    from engines.datasets import load_dataset
    from engines.paths import data_root

    in_cache(root)
    _pngs(data_root() / "pets")
    good = load_dataset("folder", 12, path="pets")
    (cache,) = (data_root() / "folders").glob("*.npz")
    np.savez(cache, images=np.zeros((3, 12, 12, 3), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = load_dataset("folder", 12, path="pets")
    ok = np.array_equal(again.train.x, good.train.x)
    return Outcome("correct outcome" if ok else "silent wrong", "rebuilt" if ok else "the bad cache was used")


@case("data", "a data root that cannot be written (digits resized)")
def _data_root_readonly(root):
    from engines.datasets import load_dataset

    in_cache(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "blocked").write_text("a file where the data root should be")
    os.environ["LAB_DATA_ROOT"] = str(root / "blocked")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = load_dataset("digits", 16)
    except Exception as e:  # noqa: BLE001 - judged
        return Outcome("weak error", f"{type(e).__name__}: {e}"[:160])
    finally:
        os.environ.pop("LAB_DATA_ROOT", None)
    told = any("without caching" in str(w.message) for w in caught)
    return Outcome("correct outcome" if told and ds.resolution == 16 else "weak error",
                   "loaded; the warning says it is not cached" if told else "no warning")


# -- the cache --------------------------------------------------------------------------------------------
def _queue_stress():
    """The queue's fake executor (a real subprocess per task, no framework): tests/queue_fakes.py."""
    sys.path.insert(0, str(REPO / "tests"))
    import queue_fakes

    return queue_fakes


def _cached_job(root):
    from engines.runs.queue import JobQueue

    in_cache(root)
    qs = _queue_stress()
    ex = qs.FakeExecutor(sleep_s=0.02)
    q = JobQueue(executor=ex)
    st = q.wait(q.submit(qs.demo_spec(2)), poll_s=0.02)
    return q, ex, qs, st["tasks"][0]["key"]


class _Payload:
    def __reduce__(self):
        return (Path.write_text, (Path(os.environ["LAB_CACHE_DIR"]) / "PWNED", "code ran"))


def _tampered(root, payload: Callable[[bytes], bytes]) -> Outcome:
    """Replace a cached result's file with payload(its bytes): it must be refused (a
    warning names it), run no code, and be computed again."""
    q, ex, qs, key = _cached_job(root)
    path = q.store.result_path(key)
    path.write_bytes(payload(path.read_bytes()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hit = q.store.get(key)
    if (Path(os.environ["LAB_CACHE_DIR"]) / "PWNED").exists():
        return Outcome("silent wrong", "the entry ran code")
    if hit is not None:
        return Outcome("silent wrong", "the tampered entry was served")
    st = q.wait(q.submit(qs.demo_spec(2)), poll_s=0.02)
    told = any("dropped the cache entry" in str(w.message) for w in caught)
    if st["tasks"][0]["state"] == "ok" and len(ex.calls) == 2 and told:
        return Outcome("correct outcome", "refused (a warning names the entry), no code ran, computed again")
    return Outcome("weak error", f"task {st['tasks'][0]['state']}, warned {told}")


@case("cache", "a result entry replaced by a pickle that runs code")
def _tamper_pickle(root):
    return _tampered(root, lambda _: pickle.dumps(_Payload()))


@case("cache", "a result entry with jsonpickle-style reduce tags")
def _tamper_jsonpickle(root):
    return _tampered(root, lambda _: json.dumps({"py/reduce": [{"py/function": "os.system"}, ["id"]]}).encode())


@case("cache", "a truncated result entry")
def _tamper_truncated(root):
    return _tampered(root, lambda data: data[:len(data) // 2])


@case("cache", "a result entry stored under another key")
def _tamper_key(root):
    return _tampered(root, lambda data: json.dumps({**json.loads(data), "key": "0" * 32}).encode())


@case("cache", "trained weights altered after training (SHA-256 mismatch)")
def _weights_sha(root):
    q, ex, qs, key = _cached_job(root)
    Path(ex.calls[0]["weights_out"] + ".fake").write_text("other weights")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = q.wait(q.submit(qs.demo_spec(2, measure_iters=5)), poll_s=0.02)
    r = q.results(st["id"])[0]
    if ex.calls[1]["weights_in"] is None and r.status == "ok" and "trained again" in (r.message or ""):
        return Outcome("correct outcome", "dropped and trained again; the result says so")
    return Outcome("silent wrong" if ex.calls[1]["weights_in"] else "weak error", r.message or "")


@case("cache", "trained weights that match their SHA-256 but do not load")
def _weights_broken(root):
    from engines.runs.queue import JobQueue

    in_cache(root)
    qs = _queue_stress()

    class BrokenOnce(qs.FakeExecutor):
        broken = True

        def __call__(self, job, **kw):
            result = super().__call__(job, **kw)
            if kw.get("weights_in") and self.broken:
                result.status, result.weights_rejected, self.broken = "error", "OSError: truncated file", False
            return result
    ex = BrokenOnce(sleep_s=0.02)
    q = JobQueue(executor=ex)
    q.wait(q.submit(qs.demo_spec(2)), poll_s=0.02)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = q.wait(q.submit(qs.demo_spec(2, measure_iters=5)), poll_s=0.02)
    r = q.results(st["id"])[0]
    if r.status == "ok" and ex.calls[-1]["weights_in"] is None and "dropped" in (r.message or ""):
        return Outcome("correct outcome", "dropped, trained again, said so")
    return Outcome("lost work" if r.status != "ok" else "weak error", f"{r.status}: {r.message}")


@case("cache", "the result index deleted")
def _index_deleted(root):
    from engines.runs.store import ResultStore

    q, ex, qs, key = _cached_job(root)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{q.store.index_path}{suffix}").unlink(missing_ok=True)
    store = ResultStore()
    ok = store.get(key) is not None and len(store.comparisons()) == 1
    return Outcome("correct outcome" if ok else "lost work", "rebuilt from the files" if ok else "results gone")


@case("cache", "the result index overwritten with garbage")
def _index_garbage(root):
    from engines.runs.store import ResultStore

    q, ex, qs, key = _cached_job(root)
    for suffix in ("-wal", "-shm"):
        Path(f"{q.store.index_path}{suffix}").unlink(missing_ok=True)
    q.store.index_path.write_bytes(os.urandom(8192))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            store = ResultStore()
    except Exception as e:  # noqa: BLE001 - judged
        return Outcome("crash or hang", f"{type(e).__name__}: {e}")
    ok = store.get(key) is not None and any("damaged" in str(w.message) for w in caught)
    return Outcome("correct outcome" if ok else "lost work", "set aside, rebuilt from the files" if ok else "")


@case("cache", "the queue database overwritten with garbage")
def _queue_garbage(root):
    from engines.runs.queue import JobQueue

    q, ex, qs, key = _cached_job(root)
    for suffix in ("-wal", "-shm"):
        Path(f"{q.db_path}{suffix}").unlink(missing_ok=True)
    q.db_path.write_bytes(os.urandom(8192))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            q2 = JobQueue(executor=ex)
            st = q2.wait(q2.submit(qs.demo_spec(2)), poll_s=0.02)
    except Exception as e:  # noqa: BLE001 - judged
        return Outcome("crash or hang", f"{type(e).__name__}: {e}")
    told = any("damaged" in str(w.message) for w in caught)
    ok = st["tasks"][0]["state"] == "cached" and told
    return Outcome("correct outcome" if ok else "weak error", "set aside (warning), the cached result served")


@case("cache", "an old diskcache folder with pickled values")
def _old_diskcache(root):
    from engines.runs.store import ResultStore

    in_cache(root)
    old = Path(os.environ["LAB_CACHE_DIR"]) / "results"
    old.mkdir(parents=True)
    (old / "cache.db").write_bytes(b"SQLite format 3\0" + b"\0" * 100)
    (old / "00").mkdir()
    (old / "00" / "value.val").write_bytes(pickle.dumps(_Payload()))
    ResultStore().comparisons()
    if (Path(os.environ["LAB_CACHE_DIR"]) / "PWNED").exists():
        return Outcome("silent wrong", "the old entry ran code")
    return Outcome("correct outcome", "never opened: the store reads JSON files only")


# -- the queue with real workers ------------------------------------------------------------------------------
REAL = ["run", "--dataset", "synthetic", "--size", "8", "--arch", "fan_arch1", "--frameworks", "pytorch",
        "--epochs", "1", "--batch-sizes", "1", "--no-compile", "--warmup-iters", "1", "--measure-iters", "2",
        "--dataset-option", "train=64", "--dataset-option", "val=16", "--dataset-option", "test=16"]


def real(root: Path, seed: int, **env) -> subprocess.Popen:
    return subprocess.Popen(["nice", "-n", "10", sys.executable, "-m", "engines", *REAL, "--seed", str(seed)],
                            cwd=REPO, env=env_for(root, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def finish(p: subprocess.Popen, timeout=REAL_TIMEOUT_S) -> tuple[int | None, str]:
    """(exit code, stdout and stderr): the table and its failure lines are on stdout."""
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out + err
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return None, "no answer"


def until(predicate, timeout_s=REAL_TIMEOUT_S, every_s=0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise TimeoutError("the expected state was not reached")


def running_worker(q, job_id=None) -> dict | None:
    """The status of a running job whose task has a worker process (the kill can land)."""
    from engines.runs.queue import STARTING, STARTING_AHEAD

    jobs = [q.status(job_id)] if job_id else q.jobs(states="running")
    for st in jobs:
        if st["state"] == "running" and any(t["state"] == "running" and t["progress"].get("stage")
                                            not in (None, "starting", STARTING, STARTING_AHEAD) for t in st["tasks"]):
            return st
    return None


def worker_pid(q, job_id) -> int | None:
    with q._tx(write=False) as con:
        row = con.execute("SELECT worker FROM tasks WHERE job_id=? AND state='running'", (job_id,)).fetchone()
    return int(row[0].split(":")[0]) if row and row[0] else None


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def queue_for(root):
    from engines.runs.queue import JobQueue

    in_cache(root)
    return JobQueue(executor=None)


@case("queue", "kill the runner; a second client follows the same job")
def _kill_runner_follower(root):
    q = queue_for(root)
    a = real(root, 1)
    st = until(lambda: running_worker(q))
    orphan = worker_pid(q, st["id"])
    b = real(root, 1)  # the same command: joins the job
    until(lambda: q.status(st["id"])["followers"] == 2)
    t_kill, wall_kill = time.monotonic(), time.time()
    os.killpg(a.pid, signal.SIGKILL)
    a.communicate()
    rc, err = finish(b)
    seconds = time.monotonic() - t_kill
    final = q.status(st["id"])
    FIGURES["kill runner -> the follower's runner starts the task again (s)"] = round(
        (final["tasks"][0]["started_at"] or wall_kill) - wall_kill, 1)
    FIGURES["kill runner -> follower's result (s)"] = round(seconds, 1)
    if rc == 0 and final["state"] == "done" and not alive(orphan):
        return Outcome("correct outcome", f"the follower recovered the job and got its result {seconds:.1f} s after "
                                          "the kill; the orphaned worker was killed")
    return Outcome("lost work", f"follower exit {rc}, job {final['state']}: {first_error(err)}")


@case("queue", "kill the runner; the same command run again")
def _kill_runner_rerun(root):
    q = queue_for(root)
    a = real(root, 2)
    st = until(lambda: running_worker(q))
    t_kill = time.monotonic()
    os.killpg(a.pid, signal.SIGKILL)
    a.communicate()
    again = real(root, 2)
    rc, err = finish(again)
    seconds = time.monotonic() - t_kill
    FIGURES["kill runner -> same command again, result (s)"] = round(seconds, 1)
    if rc == 0 and q.status(st["id"])["state"] == "done":
        return Outcome("correct outcome", f"attached to the stranded job, recovered it, result {seconds:.1f} s after "
                                          "the kill")
    return Outcome("crash or hang" if rc is None else "lost work", f"exit {rc}: {first_error(err)}")


@case("queue", "kill the runner; nobody else follows its job")
def _kill_runner_alone(root):
    q = queue_for(root)
    a = real(root, 3, LAB_TEST_WORKER_FAULT="hang")
    st = until(lambda: (j := q.jobs(states="running")) and worker_pid(q, j[0]["id"]) and j[0])
    orphan = worker_pid(q, st["id"])
    os.killpg(a.pid, signal.SIGKILL)
    a.communicate()
    t_kill = time.monotonic()
    b = real(root, 4)  # the next student
    rc, err = finish(b)
    FIGURES["kill lone runner -> next student's result (s)"] = round(time.monotonic() - t_kill, 1)
    dead = q.status(st["id"])
    if rc == 0 and dead["state"] == "cancelled" and not alive(orphan):
        return Outcome("correct outcome", f"the next client's job ran; the dead one was cancelled ({dead['message']}) "
                                          "and its worker killed")
    return Outcome("crash or hang" if rc is None else "weak error", f"next exit {rc}, dead job {dead['state']}")


@case("queue", "kill a client whose job is waiting in the queue")
def _kill_waiting_client(root):
    q = queue_for(root)
    a = real(root, 5)
    until(lambda: running_worker(q))
    b = real(root, 6)
    b_job = until(lambda: (j := q.jobs(states="queued")) and j[0]["id"])
    os.killpg(b.pid, signal.SIGKILL)
    b.communicate()
    rc, err = finish(a)
    until(lambda: q.status(b_job)["state"] != "queued", timeout_s=60)
    st = q.status(b_job)
    if rc == 0 and st["state"] == "cancelled":
        return Outcome("correct outcome", f"its job was cancelled, not run ({st['message'][:60]}…); the other "
                                          "client's job finished")
    return Outcome("weak error" if rc == 0 else "lost work", f"waiting job {st['state']}, other exit {rc}")


@case("queue", "kill the worker process mid-task")
def _kill_worker(root):
    q = queue_for(root)
    a = real(root, 7)
    st = until(lambda: running_worker(q))
    os.kill(worker_pid(q, st["id"]), signal.SIGKILL)
    rc, err = finish(a)
    b = real(root, 8)
    rc_b, _ = finish(b)
    if rc == 1 and "crashed" in err and "SIGKILL" in err and rc_b == 0:
        return Outcome("clear error", "task crashed: " + next(line.strip() for line in err.splitlines()
                                                             if "SIGKILL" in line)[:110] + "; the queue went on")
    return Outcome("weak error", f"exit {rc} / next {rc_b}: {first_error(err)}")


@case("queue", "a worker that hangs (LAB_TASK_TIMEOUT_S=8)")
def _hang_worker(root):
    q = queue_for(root)
    t0 = time.monotonic()
    a = real(root, 9, LAB_TEST_WORKER_FAULT="hang", LAB_TASK_TIMEOUT_S="8")
    until(lambda: q.jobs(states="running"))
    job = q.jobs(states="running")[0]["id"]
    pid = until(lambda: worker_pid(q, job))
    b = real(root, 10)  # queued behind the hung one
    rc, err = finish(a)
    seconds = time.monotonic() - t0
    rc_b, _ = finish(b)
    FIGURES["hung worker -> timed_out (s)"] = round(seconds, 1)
    if rc == 1 and "timed_out" in err and not alive(pid) and rc_b == 0:
        return Outcome("clear error", f"timed_out after {seconds:.0f} s ('no result within 8 s'), its process "
                                      "group killed, the next job ran")
    return Outcome("crash or hang" if rc is None else "weak error", f"exit {rc}, next {rc_b}: {first_error(err)}")


@case("queue", "a worker that exits without a result")
def _worker_exits(root):
    q = queue_for(root)
    rc, err = finish(real(root, 11, LAB_TEST_WORKER_FAULT="exit"))
    st = q.jobs()[0] if q.jobs() else {}
    if rc == 1 and "exited with code 3 and wrote no result" in err:
        return Outcome("clear error", f"job {st.get('state')}: the pytorch worker exited with code 3 and wrote no "
                                      "result")
    return Outcome("weak error", f"exit {rc}: {first_error(err)}")


@case("queue", "Ctrl-C in one of two CLIs following the same job")
def _ctrl_c_shared(root):
    q = queue_for(root)
    a = real(root, 12)
    st = until(lambda: running_worker(q))
    b = real(root, 12)
    until(lambda: q.status(st["id"])["followers"] == 2)
    a.send_signal(signal.SIGINT)
    rc_a, err_a = finish(a)
    rc_b, err_b = finish(b)
    if rc_a == 130 and rc_b == 0 and q.status(st["id"])["state"] == "done":
        return Outcome("correct outcome", "the interrupted CLI withdrew its own interest only; the other got "
                                          "the result")
    return Outcome("lost work", f"interrupted exit {rc_a}, other exit {rc_b}: {first_error(err_b)}")


def _signal_lone(root, seed: int, sig) -> Outcome:
    q = queue_for(root)
    a = real(root, seed, LAB_TEST_WORKER_FAULT="hang")
    st = until(lambda: (j := q.jobs(states="running")) and worker_pid(q, j[0]["id"]) and j[0])
    pid = worker_pid(q, st["id"])
    os.kill(int(_cli_pid(a)), sig)
    rc, err = finish(a, timeout=120)
    final = q.status(st["id"])
    if rc == 130 and final["state"] == "cancelled" and not alive(pid) and "Traceback" not in err:
        return Outcome("correct outcome", f"exit 130, job cancelled, worker stopped ({signal.Signals(sig).name} "
                                          "handled like Ctrl-C)")
    return Outcome("crash or hang" if rc is None else "weak error",
                   f"exit {rc}, job {final['state']}, worker alive {alive(pid)}")


def _cli_pid(p: subprocess.Popen) -> int:
    """The python process under `nice` (nice execs it: the same pid)."""
    return p.pid


@case("queue", "SIGTERM to a CLI while its job runs")
def _sigterm(root):
    return _signal_lone(root, 13, signal.SIGTERM)


@case("queue", "SIGHUP to a CLI while its job runs (terminal closed)")
def _sighup(root):
    return _signal_lone(root, 14, signal.SIGHUP)


@case("queue", "500 requests from one submitter, then one from another")
def _five_hundred(root):
    import dataclasses as dc

    from engines.runs.followers import Follower
    from engines.runs.queue import JobQueue, QueueFull

    in_cache(root)
    qs = _queue_stress()
    q = JobQueue(executor=qs.FakeExecutor())
    alice = dc.replace(Follower.this_process(), token="alice", submitter="alice")
    accepted = refused = 0
    for i in range(500):
        try:
            q.submit(qs.demo_spec(1 + i, seed=i), follower=alice)
            accepted += 1
        except QueueFull:
            refused += 1
    bob = q.submit(qs.demo_spec(1, seed=9999), follower=dc.replace(alice, token="bob", submitter="bob"))
    st = q.status(bob)
    FIGURES["500 requests: accepted / refused / the other's position"] = f"{accepted} / {refused} / {st['position']}"
    if st["position"] <= 2 and accepted <= 12:
        return Outcome("correct outcome", f"{accepted} accepted, {refused} refused (LAB_MAX_QUEUED_JOBS); the other "
                                          f"submitter's job is at position {st['position']}")
    return Outcome("lost work", f"the other submitter is at position {st['position']}")


@case("queue", "a task whose runner dies twice")
def _dies_twice(root):
    from engines.runs.queue import JobQueue

    in_cache(root)
    qs = _queue_stress()
    q = JobQueue(executor=qs.FakeExecutor(sleep_s=0.02))
    job = q.submit(qs.demo_spec(1))
    with q._tx() as con:
        con.execute("UPDATE jobs SET state='running', runner_pid=1, runner='1:0' WHERE id=?", (job,))
        con.execute("UPDATE tasks SET state='running', attempts=1 WHERE job_id=?", (job,))
    try:
        st = until(lambda: (s := q.wait(job, poll_s=0.05)) and s, timeout_s=60)
    except TimeoutError:
        return Outcome("crash or hang", "still waiting")
    if st["state"] == "failed" and st["tasks"][0]["state"] == "crashed":
        return Outcome("clear error", st["tasks"][0]["message"][:150])
    return Outcome("weak error", f"{st['state']}: {st['message']}")


# -- the app (AppTest) -----------------------------------------------------------------------------------------
def apptest(root, page="pages/run.py", query=None):
    from streamlit.testing.v1 import AppTest

    import labui.backend

    in_cache(root)
    labui.backend.start_runner = lambda: None  # no background runner: nothing real runs
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    at.switch_page(page)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    return at.run()


def page_text(at) -> str:
    return " ".join(str(getattr(e, "value", "")) for e in at.main)


@case("app", "?job= holding a markdown link")
def _app_job_markdown(root):
    at = apptest(root, query={"job": "[click me](https://evil.example)"})
    if at.exception:
        return Outcome("crash or hang", str(at.exception[0].value)[:150])
    shown = page_text(at)
    if "evil.example" in shown or "click me" in shown:
        return Outcome("silent wrong", "the value was rendered")
    return Outcome("clear error", "ignored, not rendered: 'The link's job parameter is not a job id'")


@case("app", "?job= with an unknown job id")
def _app_job_unknown(root):
    at = apptest(root, query={"job": "0123456789ab"})
    if at.exception:
        return Outcome("crash or hang", str(at.exception[0].value)[:150])
    ok = any("not known to the queue" in w.value for w in at.warning)
    return Outcome("clear error" if ok else "weak error", "'This job is not known to the queue'")


@case("app", "?comparison= holding HTML")
def _app_comparison(root):
    from sample_results import fill_store  # tests/ helper: realistic results

    from engines.runs.store import ResultStore

    in_cache(root)
    fill_store(ResultStore())
    at = apptest(root, "pages/speed.py", query={"comparison": "<script>alert(1)</script>"})
    if at.exception:
        return Outcome("crash or hang", str(at.exception[0].value)[:150])
    shown = page_text(at)
    return Outcome("silent wrong" if "<script>" in shown else "correct outcome",
                   "ignored: the newest comparison is shown")


@case("app", "another session opens your ?job= link")
def _app_other_session(root):
    from engines.runs.queue import JobQueue

    owner = apptest(root)
    owner.button(key="submit").click().run()
    job = owner.query_params["job"]
    job = job[0] if isinstance(job, list) else job
    other = apptest(root, query={"job": job})
    cancel = [b for b in other.button if b.key == f"cancel_{job}"]
    owner_cancel = [b for b in owner.button if b.key == f"cancel_{job}"]
    if cancel:
        return Outcome("silent wrong", "the other session got a Cancel button")
    if not owner_cancel:
        return Outcome("weak error", "the owner has no Cancel button")
    owner_cancel[0].click().run()
    st = JobQueue(executor=None).status(job)
    return Outcome("correct outcome" if st["state"] == "cancelled" else "weak error",
                   f"read-only for the other session; the owner's Cancel {st['state']} it")


@case("app", "two deletes with one confirmation")
def _app_delete_twice(root):
    from sample_results import fill_store

    from engines.runs.store import ResultStore

    in_cache(root)
    store = ResultStore()
    for precision in ("default", "bf16", "fp32"):
        fill_store(store, precision=precision)
    at = apptest(root, "pages/runs.py")
    at.checkbox(key="del_sure").check().run()
    at.button(key="del_btn").click().run()
    left = len(store.comparisons())
    if at.exception:
        return Outcome("crash or hang", str(at.exception[0].value)[:150])
    if at.checkbox(key="del_sure").value or not at.button(key="del_btn").disabled:
        return Outcome("lost work", "the confirmation stayed ticked: the next click deletes without asking")
    return Outcome("correct outcome", f"one deleted ({left} left); the box is unticked and Delete disabled again")


@case("app", "delete switched off for a class (LAB_ALLOW_DELETE=0)")
def _app_delete_off(root):
    from sample_results import fill_store

    from engines.runs.store import ResultStore

    in_cache(root)
    fill_store(ResultStore())
    os.environ["LAB_ALLOW_DELETE"] = "0"
    try:
        at = apptest(root, "pages/runs.py")
    finally:
        os.environ.pop("LAB_ALLOW_DELETE", None)
    has = [b for b in at.button if b.key == "del_btn"]
    return Outcome("silent wrong" if has else "correct outcome", "no Delete button; the page says why")


@case("app", "the folder dataset offers /root and /etc")
def _app_folders(root):
    from engines.paths import data_root

    in_cache(root)
    _pngs(data_root() / "pets")
    at = apptest(root)
    at.selectbox(key="dataset").set_value("folder").run()
    options = at.selectbox(key="folder_path").options
    if any(o in ("/root", "/etc") for o in options):
        return Outcome("silent wrong", f"offers {options}")
    return Outcome("correct outcome", f"offers only the data folders' image folders: {[Path(o).name for o in options]}")


@case("app", "a preset's bad dataset option reaches the form")
def _app_bad_option(root):
    from streamlit.testing.v1 import AppTest

    import labui.backend

    in_cache(root)
    labui.backend.start_runner = lambda: None
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    at.switch_page("pages/run.py")
    at.session_state["dataset"] = "synthetic"
    at.session_state["preset_extra_options"] = {"dataset": "synthetic", "options": {"classes": 1}}
    at.run()
    errors = " ".join(e.value for e in at.error)
    if at.exception:
        return Outcome("crash or hang", str(at.exception[0].value)[:150])
    if "classes" in errors and at.button(key="submit").disabled:
        return Outcome("clear error", "Queue disabled; the error names dataset_options.classes")
    return Outcome("weak error", errors[:150] or "no error shown")


@case("app", "a session that already has its share of the queue")
def _app_share(root):
    os.environ["LAB_MAX_QUEUED_JOBS"] = "1"
    try:
        at = apptest(root)
        at.button(key="submit").click().run()
        at.number_input(key="epochs").set_value(2).run()
        at.button(key="submit").click().run()
    finally:
        os.environ.pop("LAB_MAX_QUEUED_JOBS", None)
    errors = " ".join(e.value for e in at.error)
    if at.exception:
        return Outcome("crash or hang", str(at.exception[0].value)[:150])
    if "LAB_MAX_QUEUED_JOBS" in errors:
        return Outcome("clear error", "'Not queued: … already has 1 job(s) waiting … (LAB_MAX_QUEUED_JOBS=1)'")
    return Outcome("weak error", errors[:150] or "no message")


@case("app", "the cache folder is a file (unwritable)")
def _app_cache_file(root):
    from streamlit.testing.v1 import AppTest

    import labui.backend

    in_cache(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "cache").write_text("not a folder")
    labui.backend.start_runner = lambda: None
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    if at.exception:
        return Outcome("crash or hang", str(at.exception[0].value).splitlines()[0][:150])
    errors = " ".join(e.value for e in at.error)
    if "LAB_CACHE_DIR" in errors:
        return Outcome("clear error", errors[:150])
    return Outcome("weak error", errors[:150] or "no message")


@case("app", "the server listens beyond this machine")
def _app_bind(root):
    import tomllib

    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    address = config.get("server", {}).get("address")
    return Outcome("correct outcome" if address == "localhost" else "silent wrong",
                   f"server.address = {address!r}; the README names --server.address 0.0.0.0 for a class")


# -- running ------------------------------------------------------------------------------------------------------
def run_case(c: Case, root: Path) -> tuple[Outcome, float]:
    t0 = time.monotonic()
    saved = dict(os.environ)
    try:
        out = c.run(root)
    except Exception as e:  # noqa: BLE001 - the matrix judges, it does not stop
        out = Outcome("crash or hang", f"the case raised {type(e).__name__}: {e}".splitlines()[0][:160])
        if os.environ.get("LAB_DEBUG"):
            traceback.print_exc()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return out, time.monotonic() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--area", action="append", help="only this area (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--keep", help="work in this folder and keep it")
    ap.add_argument("--json", help="write the rows, totals and figures to this file")
    args = ap.parse_args(argv)
    cases = [c for c in CASES if not args.area or c.area in args.area]
    if args.list:
        for i, c in enumerate(cases, 1):
            print(f"{i:3d}  {c.area:<6} {c.name}")
        print(f"{len(cases)} cases")
        return 0
    sys.path.insert(0, str(REPO / "tests"))  # sample_results: realistic results
    base = Path(args.keep or tempfile.mkdtemp(prefix="fault-matrix-"))
    logging_quiet()
    rows, t_all = [], time.monotonic()
    print(f"{'#':>3}  {'area':<6} {'case':<58} {'verdict':<16} {'s':>5}  detail")
    for i, c in enumerate(cases, 1):
        out, seconds = run_case(c, base / f"{i:03d}")
        rows.append({"n": i, "area": c.area, "case": c.name, "verdict": out.verdict, "seconds": round(seconds, 1),
                     "detail": out.detail})
        print(f"{i:3d}  {c.area:<6} {c.name[:58]:<58} {out.verdict:<16} {seconds:5.1f}  {out.detail}", flush=True)
    totals = Counter(r["verdict"] for r in rows)
    print(f"\n{len(rows)} cases in {time.monotonic() - t_all:.0f} s: "
          + ", ".join(f"{v} {totals.get(v, 0)}" for v in VERDICTS))
    for name, value in FIGURES.items():
        print(f"  {name}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "totals": {v: totals.get(v, 0) for v in VERDICTS},
                                               "figures": FIGURES, "load": os.getloadavg()}, indent=1))
    bad = sum(totals.get(v, 0) for v in ("silent wrong", "crash or hang", "lost work"))
    return 1 if bad else 0


def logging_quiet() -> None:
    """The cases' own warnings are judged, not printed (AppTest's "missing
    ScriptRunContext" lines, the store's dropped entries)."""
    import logging

    import streamlit.logger

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("engines").setLevel(logging.ERROR)
    streamlit.logger.set_log_level("error")
    from streamlit.runtime.scriptrunner_utils import script_run_context

    script_run_context._LOGGER.disabled = True  # AppTest outside a server: harmless, said per call


if __name__ == "__main__":
    sys.exit(main())
