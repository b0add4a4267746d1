"""Issue 14, one test (or a few) per defect found by the class probe: a queue and inputs
that a whole class can share. Queue tests use the fake executor of
tests/queue_fakes.py (a real subprocess per task, no framework); the time-limit and
SIGTERM tests use the real launcher with the worker's test fault hook (no framework
either)."""
import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import queue_fakes as qs
from conftest import REPO
from helpers import run_page_for, wait_for
from PIL import Image

from engines.runs import queue as jobqueue
from engines.runs.followers import Follower, process_identity
from engines.runs.queue import JobQueue, QueueFull, runner_gone
from engines.runs.spec import RunSpec, SpecError

pytestmark = pytest.mark.heavy(seconds=50)  # its wall time in the parallel suite: see conftest.py


def follower(name: str, **changes) -> Follower:
    """Another follower in this process: its own token and submitter."""
    return dataclasses.replace(Follower.this_process(), token=name, submitter=name, **changes)


def dead_follower(name: str) -> Follower:
    """A follower whose process has exited (a CLI killed while its job waited)."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    identity = process_identity(proc.pid)
    proc.communicate(b"")
    return follower(name, process=identity)


def cli(*args, env=None, timeout=120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engines", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, **kw)


def one_line_error(p: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in p.stderr, p.stderr
    return p.stderr


# -- 1. a job whose runner died strands nobody ----------------------------------------------------
def test_a_waiter_recovers_a_job_whose_runner_was_killed(tmp_path):
    """Kill the process running a job: a second client following the same job notices,
    takes the lock, kills the orphaned worker and runs the task again; it gets the result."""
    log = tmp_path / "calls.jsonl"
    q = JobQueue(executor=qs.FakeExecutor(log, sleep_s=0.1))
    job = q.submit(qs.demo_spec(3))
    runner = qs.spawn("runner", "--log", str(log), "--sleep", "60")
    wait_for(lambda: q.status(job)["tasks"][0]["state"] == "running", timeout_s=180)
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    st = q.wait(job, poll_s=0.05)  # this process follows the job
    assert st["state"] == "done" and st["tasks"][0]["state"] == "ok" and st["tasks"][0]["attempts"] == 1
    assert "runner of its first run died" in st["tasks"][0]["message"]


def test_the_same_command_again_attaches_to_the_dead_job_and_finishes_it(tmp_path):
    log = tmp_path / "calls.jsonl"
    q = JobQueue(executor=qs.FakeExecutor(log, sleep_s=0.1))
    first = q.submit(qs.demo_spec(4))
    runner = qs.spawn("runner", "--log", str(log), "--sleep", "60")
    wait_for(lambda: q.status(first)["state"] == "running", timeout_s=180)
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    again = q.submit(qs.demo_spec(4), follower=follower("second terminal"))
    assert again == first
    assert q.wait(again, poll_s=0.05, follower=follower("second terminal"))["state"] == "done"


def test_a_task_whose_runner_dies_twice_is_crashed_not_run_forever():
    q = JobQueue(executor=qs.FakeExecutor(sleep_s=0.05))
    job = q.submit(qs.demo_spec(1))
    with q._tx() as con:  # as if two runners had died while it ran
        con.execute("UPDATE jobs SET state='running', runner_pid=1, runner='1:0' WHERE id=?", (job,))
        con.execute("UPDATE tasks SET state='running', attempts=1 WHERE job_id=?", (job,))
    st = q.wait(job, poll_s=0.05)
    assert st["state"] == "failed" and st["tasks"][0]["state"] == "crashed"
    assert "died once already" in st["tasks"][0]["message"]


def test_a_queued_job_whose_submitter_died_is_cancelled_not_run():
    ex = qs.FakeExecutor(sleep_s=0.05)
    q = JobQueue(executor=ex)
    orphan = q.submit(qs.demo_spec(5), follower=dead_follower("killed cli"))
    mine = q.submit(qs.demo_spec(6))
    assert q.wait(mine, poll_s=0.05)["state"] == "done"
    st = q.status(orphan)
    assert st["state"] == "cancelled" and "nobody follows it" in st["message"]
    assert [c["epochs"] for c in ex.calls] == [6]


def test_a_job_joined_by_a_live_client_runs_although_its_submitter_died():
    q = JobQueue(executor=qs.FakeExecutor(sleep_s=0.05))
    job = q.submit(qs.demo_spec(2), follower=dead_follower("killed cli"))
    assert q.submit(qs.demo_spec(2)) == job  # this process asks for the same: it follows it now
    assert q.wait(job, poll_s=0.05)["state"] == "done"


def test_a_running_job_without_heartbeat_counts_as_stranded(monkeypatch):
    monkeypatch.setenv("LAB_RUNNER_STALE_S", "30")
    now = time.time()
    alive = {"state": "running", "runner": process_identity(os.getpid()), "runner_host": jobqueue.HOST,
             "heartbeat_at": now, "started_at": now - 100}
    assert not runner_gone(alive)
    assert runner_gone({**alive, "heartbeat_at": now - 31})
    assert runner_gone({**alive, "runner": "1:0"})  # pid 1 with another start time: not that process
    assert not runner_gone({**alive, "state": "queued"})


# -- 2. limits and fair share ---------------------------------------------------------------------
def test_a_hung_worker_is_timed_out_its_group_killed_and_the_queue_goes_on(monkeypatch):
    """The real launcher: a worker that hangs (test fault hook) is stopped at
    LAB_TASK_TIMEOUT_S, its process group killed, and the next job runs."""
    from engines.runs.launcher import run_job

    monkeypatch.setenv("LAB_TASK_TIMEOUT_S", "3")
    monkeypatch.setenv("LAB_TEST_WORKER_FAULT", "hang")
    q = JobQueue(executor=run_job)
    hung = q.submit(qs.demo_spec(1))
    st = q.wait(hung, poll_s=0.1)
    assert st["state"] == "failed" and st["tasks"][0]["state"] == "timed_out"
    assert "no result within 3 s" in st["tasks"][0]["message"]
    pid = q.results(hung)[0].worker_pid
    assert pid and process_identity(pid) is None  # the worker is gone
    monkeypatch.delenv("LAB_TASK_TIMEOUT_S")
    monkeypatch.setenv("LAB_TEST_WORKER_FAULT", "raise")
    assert q.wait(q.submit(qs.demo_spec(2)), poll_s=0.1)["tasks"][0]["state"] == "crashed"  # and the queue went on


def test_a_submitter_cap_refuses_before_queueing(monkeypatch):
    monkeypatch.setenv("LAB_MAX_QUEUED_JOBS", "3")
    q = JobQueue(executor=qs.FakeExecutor())
    for epochs in (1, 2, 3):
        q.submit(qs.demo_spec(epochs))
    with pytest.raises(QueueFull, match="LAB_MAX_QUEUED_JOBS=3"):
        q.submit(qs.demo_spec(4))
    assert len(q.jobs(states="queued")) == 3
    q.submit(qs.demo_spec(4), follower=follower("bob"))  # another submitter has room
    assert q.submit(qs.demo_spec(1)) in {j["id"] for j in q.jobs()}  # joining a queued job takes no room


def test_round_robin_puts_another_submitters_job_second_not_last(monkeypatch):
    monkeypatch.setenv("LAB_MAX_QUEUED_JOBS", "50")
    q = JobQueue(executor=qs.FakeExecutor())
    alice = follower("alice")
    jobs = [q.submit(qs.demo_spec(e), follower=alice) for e in range(1, 21)]
    bob = q.submit(qs.demo_spec(30), follower=follower("bob"))
    assert q.status(jobs[0])["position"] == 1 and q.status(bob)["position"] == 2
    q.run_next()  # alice's first runs: bob is next
    st = q.status(bob)
    assert st["position"] == 1 and st["ahead"] == 0
    assert [j["position"] for j in sorted(q.jobs(states="queued", limit=100), key=lambda j: j["position"])] \
        == list(range(1, 21))


def test_tasks_per_request_and_data_here_are_checked_at_submit(monkeypatch):
    q = JobQueue(executor=qs.FakeExecutor())
    monkeypatch.setenv("LAB_MAX_TASKS", "4")
    with pytest.raises(SpecError) as e:
        q.submit(qs.demo_spec(1).replace(repeats=5))
    assert "repeats" in e.value.problems and "LAB_MAX_TASKS=4" in e.value.problems["repeats"]
    with pytest.raises(SpecError) as e:
        q.submit(RunSpec(dataset="imagenet100", frameworks=("pytorch",)))
    assert "dataset_options.path" in e.value.problems
    assert q.jobs() == []


def test_a_bad_setting_is_named():
    p = cli("run", "--dataset", "synthetic", env={"LAB_TASK_TIMEOUT_S": "soon"})
    assert p.returncode == 2 and "LAB_TASK_TIMEOUT_S" in one_line_error(p)


# -- 3. ownership -----------------------------------------------------------------------------------
def test_cancel_removes_only_the_callers_interest():
    ex = qs.FakeExecutor(sleep_s=0.05)
    q = JobQueue(executor=ex)
    a, b = follower("a"), follower("b")
    job = q.submit(qs.demo_spec(1), follower=a)
    assert q.submit(qs.demo_spec(1), follower=b) == job
    assert q.cancel(job, a) and q.status(job)["state"] == "queued"  # b still wants it
    assert not q.cancel(job, a)  # a no longer follows it
    assert q.cancel(job, b) and q.status(job)["state"] == "cancelled" and ex.calls == []


def test_a_watcher_cannot_cancel():
    q = JobQueue(executor=qs.FakeExecutor())
    job = q.submit(qs.demo_spec(1), follower=follower("owner"))
    assert q.follow(job, follower("someone with the link")) == "watcher"
    assert not q.cancel(job, follower("someone with the link"))
    assert q.status(job)["state"] == "queued" and q.role(job, "owner") == "owner"


def test_ctrl_c_in_one_of_two_clis_leaves_the_other_ones_job_running(monkeypatch):
    """The real CLI, twice, the same spec, a worker that hangs: SIGINT to the first keeps
    the job for the second; SIGTERM to the second (handled like Ctrl-C) cancels it."""
    env = {"LAB_TEST_WORKER_FAULT": "hang", "PYTHONUNBUFFERED": "1"}
    args = ["run", "--dataset", "synthetic", "--size", "8", "--arch", "fan_arch1", "--frameworks", "pytorch",
            "--epochs", "1", "--dataset-option", "train=64"]
    first = subprocess.Popen([sys.executable, "-m", "engines", *args], cwd=REPO, env={**os.environ, **env},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    q = JobQueue()
    st = wait_for(lambda: (j := q.jobs(states="running")) and j[0], timeout_s=180)
    second = subprocess.Popen([sys.executable, "-m", "engines", *args], cwd=REPO, env={**os.environ, **env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: q.status(st["id"])["followers"] == 2, timeout_s=180)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130 and "goes on for its 1 other follower" in err and "Traceback" not in err
    wait_for(lambda: q.status(st["id"])["state"] == "running" and q.status(st["id"])["runner"] != st["runner"],
                timeout_s=180)  # the second CLI took the job over
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 130 and "Traceback" not in err
    final = q.status(st["id"])
    assert final["state"] == "cancelled" and final["tasks"][0]["state"] == "cancelled"


# -- 4. folder datasets read only the data folders ----------------------------------------------------
def _class_folder(root: Path, classes=("a", "b"), n=8, size=12):
    for i, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            Image.fromarray(np.full((size, size, 3), 40 * i + k, np.uint8)).save(root / c / f"{k}.png")


@pytest.mark.parametrize("path", ["/usr/share", "/etc", "../../..", "/root"])
def test_a_folder_outside_the_data_folders_is_refused_at_spec_time(path):
    with pytest.raises(SpecError) as e:
        RunSpec(dataset="folder", dataset_options={"path": path})
    assert "outside the data folders" in e.value.problems["dataset_options.path"]


def test_the_app_does_not_call_system_folders_ready():
    from engines.datasets import dataset_state, get_info

    for path in ("/root", "/etc"):
        assert dataset_state(get_info("folder"), path=path).state == "needs_folder"


def test_a_link_out_of_a_data_folder_is_refused(tmp_path):
    from engines.datasets import DatasetError, load_dataset
    from engines.paths import data_root

    folder = data_root() / "pets"
    _class_folder(folder)
    outside = tmp_path / "elsewhere"
    _class_folder(outside, classes=("x",))
    (folder / "b" / "sneaky.png").symlink_to(outside / "x" / "0.png")
    with pytest.raises(DatasetError, match="sneaky.png is a link to .*outside the data folders"):
        load_dataset("folder", 12, path="pets")
    (folder / "b" / "sneaky.png").unlink()
    (folder / "c").symlink_to(outside / "x", target_is_directory=True)
    with pytest.raises(DatasetError, match="outside the data folders"):
        load_dataset("folder", 12, path="pets")
    (folder / "c").unlink()
    (folder / "c").symlink_to(folder / "a", target_is_directory=True)  # a link that stays inside is read
    assert load_dataset("folder", 12, path="pets").class_names == ("a", "b", "c")


def test_the_app_lists_the_folders_found():
    from engines.datasets.folders import find_folders
    from engines.paths import data_root

    _class_folder(data_root() / "pets")
    (data_root() / "resized").mkdir(parents=True, exist_ok=True)
    assert find_folders("folder") == [data_root() / "pets"]


def test_a_folder_of_images_above_the_maximum_size_is_refused_by_name():
    from engines.datasets import DatasetError, load_dataset
    from engines.paths import data_root

    _class_folder(data_root() / "big", n=7, size=2100)
    with pytest.raises(DatasetError, match="2100 px, above the lab's 2048 px maximum.*--size"):
        load_dataset("folder", path="big")


# -- 5. damaged weights are dropped and trained again -------------------------------------------------------
def test_weights_that_do_not_load_are_dropped_and_trained_again():
    """Weights whose SHA-256 matches but which do not load (saved broken): the task
    trains again, the training record is replaced and the result says so."""
    class BrokenLoad(qs.FakeExecutor):
        broken = True  # the first weights saved do not load; the retrained ones do

        def __call__(self, job, **kw):
            result = super().__call__(job, **kw)
            if kw.get("weights_in") and self.broken:
                result.status, result.weights_rejected = "error", "OSError: truncated file"
                self.broken = False
            return result

    ex = BrokenLoad(sleep_s=0.05)
    q = JobQueue(executor=ex)
    q.wait(q.submit(qs.demo_spec(2)), poll_s=0.02)
    with pytest.warns(RuntimeWarning, match="do not load"):
        st = q.wait(q.submit(qs.demo_spec(2, measure_iters=5)), poll_s=0.02)
    assert st["tasks"][0]["state"] == "ok"
    assert [bool(c["weights_in"]) for c in ex.calls] == [False, True, False]  # trained again
    assert "dropped" in q.results(st["id"])[0].message
    third = q.wait(q.submit(qs.demo_spec(2, measure_iters=7)), poll_s=0.02)
    assert third["tasks"][0]["state"] == "ok" and ex.calls[-1]["weights_in"]  # the new weights are used
    assert len(ex.calls) == 4


def test_the_scenario_marks_weights_that_do_not_load():
    from engines.runs.result import RunResult
    from engines.runs.scenario import load_weights
    from engines.training.engine import WeightsError

    class Engine:
        def load(self, path):
            raise OSError("Unable to open file (truncated file: eof = 96)")

    result = RunResult()
    with pytest.raises(WeightsError, match="did not load"):
        load_weights(Engine(), "/x.weights.h5", result)
    assert result.weights_rejected.startswith("OSError: Unable to open file")


# -- 6. the CLI: one line, exit 2 for bad input, bounded sweeps ------------------------------------------
def test_an_unwritable_cache_folder_is_one_line_exit_1(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    p = cli("run", "--dataset", "synthetic", env={"LAB_CACHE_DIR": str(blocker)})
    assert p.returncode == 1 and "could not use its files" in one_line_error(p) and len(p.stderr.splitlines()) == 1


def test_the_app_says_when_its_cache_folder_cannot_be_used(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("LAB_CACHE_DIR", str(blocker))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90).run()
    assert not at.exception and "cannot use its cache folder" in at.error[0].value


def test_a_huge_grid_is_refused_before_it_is_expanded(tmp_path):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({k: list(range(1, 41)) for k in
                                ("epochs", "seed", "warmup_iters", "measure_iters", "repeats", "train_batch_size")}))
    p = cli("sweep", str(grid))
    assert p.returncode == 2 and "4,096,000,000 combinations, more than 100" in one_line_error(p)


def test_nested_yaml_aliases_are_refused(tmp_path):
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\nepochs: *a8\n")
    p = cli("sweep", str(bomb))
    assert p.returncode == 2 and "nested YAML aliases" in one_line_error(p)


def test_max_runs_raises_the_grid_limit(tmp_path, monkeypatch):
    from engines.cli import GridError, load_grid

    grid = tmp_path / "grid.yaml"
    grid.write_text("dataset: synthetic\nepochs: [1, 2, 3]\nseed: [0, 1]\n")
    monkeypatch.setenv("LAB_MAX_SWEEP_RUNS", "5")
    with pytest.raises(GridError, match="6 combinations, more than 5"):
        load_grid(str(grid))
    assert len(load_grid(str(grid), max_runs=6)) == 6
    grid.write_text("dataset: synthetic\nepoch: [1, 2]\n")
    with pytest.raises(GridError, match="unknown field"):
        load_grid(str(grid))


def test_a_sweep_takes_its_share_of_the_queue_at_a_time(monkeypatch, capsys):
    """Ten runs with LAB_MAX_QUEUED_JOBS=3: never more than 3 queued, all ten run."""
    from engines import cli as cli_mod

    monkeypatch.setenv("LAB_MAX_QUEUED_JOBS", "3")
    ex = qs.FakeExecutor(sleep_s=0.02)
    queued_seen = []

    def make_queue():
        q = JobQueue(executor=ex)
        original = q.submit

        def submit(*a, **kw):
            job = original(*a, **kw)
            queued_seen.append(len(q.jobs(states="queued")))
            return job
        q.submit = submit
        return q

    monkeypatch.setattr(cli_mod, "make_queue", make_queue)
    assert cli_mod.execute([qs.demo_spec(e) for e in range(1, 11)], force=False, as_json=False) == 0
    assert len(ex.calls) == 10 and max(queued_seen) == 3


# -- 7. every dataset option and number checked when the spec is made ------------------------------------
@pytest.mark.parametrize("options, field", [
    ({"classes": 1}, "dataset_options.classes"), ({"train": -5}, "dataset_options.train"),
    ({"train": "abc"}, "dataset_options.train"), ({"channels": 2}, "dataset_options.channels"),
    ({"channels": "abc"}, "dataset_options.channels"), ({"val": 0}, "dataset_options.val"),
    ({"train": 10**9}, "dataset_options.train"), ({"colour": 1}, "dataset_options")])
def test_synthetic_options_are_typed_and_ranged(options, field):
    with pytest.raises(SpecError) as e:
        RunSpec(dataset="synthetic", dataset_options=options)
    assert list(e.value.problems) == [field]


@pytest.mark.parametrize("options, field", [({"max_per_class": "abc"}, "dataset_options.max_per_class"),
                                            ({"max_per_class": -3}, "dataset_options.max_per_class"),
                                            ({"channels": 4}, "dataset_options.channels")])
def test_folder_options_are_typed_and_ranged(options, field):
    with pytest.raises(SpecError) as e:
        RunSpec(dataset="folder", dataset_options=options)
    assert field in e.value.problems


def test_seed_and_repeats_stay_in_range():
    RunSpec(seed=2**31 - 2, repeats=2)
    with pytest.raises(SpecError, match="past the largest seed"):
        RunSpec(seed=2**31 - 1, repeats=2)


@pytest.mark.parametrize("fields, field", [({"frameworks": {"a": 1}}, "frameworks"),
                                           ({"dataset_options": "abc"}, "dataset_options"),
                                           ({"resolution": [32]}, "resolution"),
                                           ({"precision": ["fp32"]}, "precision")])
def test_values_of_the_wrong_shape_are_refused_by_name(fields, field):
    with pytest.raises(SpecError) as e:
        RunSpec(**fields)
    assert field in e.value.problems


def test_spec_mistakes_from_the_cli_exit_2_with_the_field_and_queue_nothing():
    for option, field in (("classes=1", "dataset_options.classes"), ("train=abc", "dataset_options.train"),
                          ("channels=abc", "dataset_options.channels")):
        p = cli("run", "--dataset", "synthetic", "--dataset-option", option)
        assert p.returncode == 2 and field in one_line_error(p) and "resolution" not in p.stderr
    p = cli("run", "--dataset", "folder")
    assert p.returncode == 2 and "--dataset-option path=" in p.stderr and "--folder" not in p.stderr
    assert JobQueue().jobs() == []


# -- 8. nothing in the cache is ever unpickled ------------------------------------------------------------
class _Marker:
    def __reduce__(self):
        return (Path.write_text, (Path(os.environ["LAB_CACHE_DIR"]) / "pwned", "code ran"))


def test_a_tampered_cache_entry_is_refused_and_runs_no_code():
    q = JobQueue(executor=qs.FakeExecutor(sleep_s=0.02))
    job = q.wait(q.submit(qs.demo_spec(1)), poll_s=0.02)
    key = job["tasks"][0]["key"]
    path = q.store.result_path(key)
    for payload in (pickle.dumps(_Marker()), json.dumps({"py/reduce": [{"py/function": "os.system"}, ["id"]]}).encode(),
                    b"\x80\x04" + b"x" * 50):
        path.write_bytes(payload)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert q.store.get(key) is None
        assert any("dropped the cache entry" in str(w.message) for w in caught)
        assert not (Path(os.environ["LAB_CACHE_DIR"]) / "pwned").exists()
        q.wait(q.submit(qs.demo_spec(1)), poll_s=0.02)  # recomputed and stored again
        assert q.store.get(key) is not None


# -- 9. the smaller ones ----------------------------------------------------------------------------------
def test_the_app_listens_on_localhost_by_default():
    import tomllib

    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "localhost"
    assert "--server.address 0.0.0.0" in (REPO / "README.md").read_text()


def test_a_keras_style_mnist_npz_must_hold_mnists_arrays():
    from engines.datasets import DatasetError, load_dataset
    from engines.paths import data_root

    rng = np.random.default_rng(0)
    fake = data_root() / "mnist" / "mnist.npz"
    fake.parent.mkdir(parents=True)
    np.savez(fake, x_train=rng.integers(0, 255, (60000, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, 60000).astype(np.uint8),
             x_test=rng.integers(0, 255, (10000, 28, 28), dtype=np.uint8), y_test=np.zeros(10000, np.uint8))
    with pytest.raises(DatasetError, match="neither Keras's mnist.npz"):
        load_dataset("mnist", download_missing=False)


def test_a_resized_cache_file_with_wrong_data_is_rebuilt_and_named():
    from engines.datasets import load_dataset
    from engines.paths import data_root

    good = load_dataset("digits", 16)
    cache = data_root() / "resized" / "digits_8px_to_16px.npz"
    arrays = dict(np.load(cache))
    arrays["train_labels"] = (arrays["train_labels"] + 1) % 10  # opens fine, holds the wrong labels
    np.savez(cache, **arrays)
    with pytest.warns(RuntimeWarning, match=f"{cache.name} was damaged.*labels"):
        again = load_dataset("digits", 16)
    assert np.array_equal(again.train.y, good.train.y)
    assert np.array_equal(np.load(cache)["train_labels"], good.train.y)


def test_a_crafted_job_parameter_is_not_rendered():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    at.query_params["job"] = "[click me](https://evil.example)"
    at.run()
    at.switch_page("pages/run.py")
    at.query_params["job"] = "[click me](https://evil.example)"
    at.run()
    assert not at.exception
    shown = " ".join(str(getattr(e, "value", "")) for e in at.main)
    assert "evil.example" not in shown and "click me" not in shown
    assert any("not a job id" in w.value for w in at.warning)


def test_another_sessions_job_has_no_cancel_button_and_the_owners_has(monkeypatch):
    from streamlit.testing.v1 import AppTest

    import labui.backend
    monkeypatch.setattr(labui.backend, "start_runner", lambda: None)
    owner = AppTest.from_file(str(REPO / "app.py"), default_timeout=90).run()
    owner.switch_page("pages/run.py").run()
    owner.button(key="submit").click().run()
    assert not owner.exception
    job = owner.query_params["job"]
    job = job[0] if isinstance(job, list) else job
    assert owner.button(key=f"cancel_{job}")
    other = run_page_for(job)
    assert not other.exception
    assert not [b for b in other.button if b.key == f"cancel_{job}"]
    assert JobQueue().role(job, other.session_state[labui.backend.TOKEN_KEY]) == "watcher"
    owner.button(key=f"cancel_{job}").click().run()
    assert JobQueue().status(job)["state"] == "cancelled"


def test_the_delete_confirmation_resets_and_delete_can_be_switched_off(monkeypatch):
    from sample_results import fill_store
    from streamlit.testing.v1 import AppTest

    import labui.backend
    from engines.runs.store import ResultStore
    monkeypatch.setattr(labui.backend, "start_runner", lambda: None)
    store = ResultStore()
    fill_store(store, seeds=(0,))
    fill_store(store, seeds=(0,), precision="bf16")
    fill_store(store, seeds=(0,), precision="fp32")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90).run()
    at.switch_page("pages/runs.py").run()
    at.checkbox(key="del_sure").check().run()
    at.button(key="del_btn").click().run()
    assert not at.exception and len(store.comparisons()) == 2
    assert at.checkbox(key="del_sure").value is False and at.button(key="del_btn").disabled
    monkeypatch.setenv("LAB_ALLOW_DELETE", "0")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90).run()
    at.switch_page("pages/runs.py").run()
    assert not [b for b in at.button if b.key == "del_btn"] and "LAB_ALLOW_DELETE=0" in " ".join(
        c.value for c in at.caption)
