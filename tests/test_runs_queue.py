"""JobQueue with a fake executor: dedup, cache, force, cancel, progress, weights reuse, and
the failure cases (concurrent submitters, SIGKILL of runner and worker, damaged cache)."""
import dataclasses
import threading
from pathlib import Path

import pytest
import queue_fakes as qs
from helpers import wait_for

from engines.runs import queue as jobqueue
from engines.runs.followers import Follower
from engines.runs.queue import JobQueue


def queue(**kw) -> tuple[JobQueue, "qs.FakeExecutor"]:
    ex = qs.FakeExecutor(sleep_s=kw.pop("sleep_s", 0.05), status=kw.pop("status", "ok"))
    return JobQueue(executor=ex, **kw), ex


def test_runs_then_serves_from_cache_and_force_recomputes():
    q, ex = queue()
    spec = qs.demo_spec(2).replace(frameworks=("pytorch", "jax"))
    job = q.submit(spec)
    assert q.status(job)["state"] == "queued" and q.status(job)["position"] == 1
    assert q.run_next() and not q.run_next()
    st = q.status(job)
    assert st["state"] == "done" and [t["state"] for t in st["tasks"]] == ["ok", "ok"]
    assert len(st["tasks"][0]["history"]) == 2 and st["tasks"][0]["progress"]["epochs"] == 2
    assert [r.status for r in q.results(job)] == ["ok", "ok"] and len(ex.calls) == 2
    again = q.submit(spec)
    assert again != job and q.status(again)["state"] == "done"
    assert [t["state"] for t in q.status(again)["tasks"]] == ["cached", "cached"]
    assert q.results(again)[0].key == q.results(job)[0].key
    forced = q.submit(spec, force=True)
    assert q.status(forced)["state"] == "queued"
    q.wait(forced, poll_s=0.02)
    assert len(ex.calls) == 4


def test_a_dataset_that_cannot_be_downloaded_fails_the_job_once(monkeypatch):
    """No network: the job fetches its data once, before any worker; it fails with one
    sentence (dataset, URL, LAB_DATA_PATH) and its tasks are not run."""
    from helpers import unreachable_medmnist

    name = unreachable_medmnist(monkeypatch)
    q, ex = queue()
    spec = qs.demo_spec(1).replace(dataset=name, resolution=28, architecture="fan_arch1", dataset_options={},
                                   frameworks=("pytorch", "jax"))
    job = q.submit(spec)
    q.wait(job, poll_s=0.02)
    st = q.status(job)
    assert st["state"] == "failed" and ex.calls == []
    assert "http://127.0.0.1:9/lostmnist.npz" in st["message"] and "LAB_DATA_PATH" in st["message"]
    assert all(t["state"] == "error" and "not run" in t["message"] and "http" not in t["message"]
               for t in st["tasks"])


def test_a_request_with_one_frameworks_toggle_is_one_comparison():
    q, _ = queue()
    spec = qs.demo_spec(1).replace(frameworks=("pytorch", "jax"), cudnn_benchmark=True)
    job = q.submit(spec)
    q.wait(job, poll_s=0.02)
    comparisons = q.store.comparisons()
    assert len(comparisons) == 1 and sorted(comparisons[0]["frameworks"]) == ["jax", "pytorch"]
    assert comparisons[0]["spec"]["cudnn_benchmark"] is True  # the request's toggle names the comparison
    # each result holds what its worker computed: the toggle applies to PyTorch only
    assert {r.framework: r.spec["cudnn_benchmark"] for r in q.results(job)} == {"pytorch": True, "jax": False}


def test_a_toggle_of_another_framework_reuses_the_cached_result():
    """PyTorch's result of a request with XLA autotune level 2 is the one of XLA's default
    level: served from the cache, and shown in both comparisons."""
    q, ex = queue()
    plain = qs.demo_spec(1).replace(frameworks=("pytorch", "jax"))
    first = q.wait(q.submit(plain), poll_s=0.02)
    tuned = q.wait(q.submit(plain.replace(xla_autotune=2)), poll_s=0.02)
    assert [t["state"] for t in tuned["tasks"]] == ["cached", "ok"] and len(ex.calls) == 3
    assert tuned["tasks"][0]["key"] == first["tasks"][0]["key"] != tuned["tasks"][1]["key"]
    shown = {c["comparison_key"]: c["frameworks"] for c in q.store.comparisons()}
    assert shown == {plain.comparison_key(): ["pytorch", "jax"],
                     plain.replace(xla_autotune=2).comparison_key(): ["pytorch", "jax"]}


def test_identical_requests_share_one_job_and_shared_tasks_are_not_recomputed():
    q, ex = queue()
    both = qs.demo_spec(1).replace(frameworks=("pytorch", "jax"))
    alice, bob = (dataclasses.replace(Follower.this_process(), token=who, submitter=who) for who in ("alice", "bob"))
    a, b = q.submit(both, follower=alice), q.submit(both, follower=bob)
    assert a == b and q.status(a)["followers"] == 2
    only_torch = q.submit(qs.demo_spec(1))  # queued before `both` ran: its task is cached by run time
    q.wait(only_torch, poll_s=0.02)
    assert q.status(only_torch)["tasks"][0]["state"] == "cached" and len(ex.calls) == 2
    assert [j["id"] for j in q.jobs()] == [only_torch, a] and q.jobs(states="queued") == []


def test_failed_results_are_shown_not_cached():
    q, ex = queue(status="error")
    job = q.submit(qs.demo_spec(1))
    st = q.wait(job, poll_s=0.02)
    assert st["state"] == "failed" and st["tasks"][0]["state"] == "error" and "pytorch seed 0: error" in st["message"]
    assert q.results(job)[0].status == "error"
    ex.status = "ok"
    again = q.submit(qs.demo_spec(1))
    assert q.status(again)["state"] == "queued"
    assert q.wait(again, poll_s=0.02)["state"] == "done"


def test_executor_that_raises_gives_an_error_result():
    def broken(job, **kw):
        raise RuntimeError("boom")

    q = JobQueue(executor=broken)
    st = q.wait(q.submit(qs.demo_spec(1)), poll_s=0.02)
    assert st["state"] == "failed" and "RuntimeError: boom" in st["tasks"][0]["message"]


def test_cancel_queued_and_running_jobs():
    q, ex = queue(sleep_s=30)
    running, waiting = q.submit(qs.demo_spec(1)), q.submit(qs.demo_spec(2))
    runner = threading.Thread(target=q.run_next)
    runner.start()
    wait_for(lambda: q.status(running)["tasks"][0]["state"] == "running")
    assert q.status(waiting)["position"] == 1
    assert q.cancel(waiting) and q.status(waiting)["state"] == "cancelled"
    assert q.cancel(running)
    runner.join()  # the fake's worker lives 30 s: only a cancel ends it sooner, as "cancelled"
    st = q.status(running)
    assert st["state"] == "cancelled" and st["tasks"][0]["state"] == "cancelled"
    assert [c["status"] for c in ex.calls] == ["cancelled"]  # the worker was stopped, not waited for
    assert not q.cancel(running) and q.results(waiting)[0].status == "cancelled"


def test_progress_is_visible_from_another_queue_object(monkeypatch):
    monkeypatch.setattr(jobqueue, "PROGRESS_INTERVAL_S", 0.0)
    q, _ = queue(sleep_s=30)  # the task runs until this test cancels it: seen running however slow the reader
    job = q.submit(qs.demo_spec(3))
    runner = threading.Thread(target=q.run_next)
    runner.start()
    reader = JobQueue(executor=None)  # another session: only reads the shared state
    st = wait_for(lambda: len((s := reader.status(job))["tasks"][0]["history"]) == 3 and s)
    assert st["state"] == "running" and st["position"] == 0
    assert st["tasks"][0]["progress"]["stage"] == "training" and len(st["tasks"][0]["history"]) == 3
    assert reader.cancel(job)  # another session's cancel reaches the runner too
    runner.join()
    assert q.status(job)["state"] == "cancelled"


def test_trained_weights_are_reused_for_other_inference_settings():
    q, ex = queue()
    first = q.wait(q.submit(qs.demo_spec(2)), poll_s=0.02)
    second_job = q.submit(qs.demo_spec(2, measure_iters=5).replace(batch_sizes=(4,)))
    q.wait(second_job, poll_s=0.02)
    assert ex.calls[0]["weights_out"] and ex.calls[0]["weights_in"] is None
    assert ex.calls[1]["weights_in"] == ex.calls[0]["weights_out"] + ".fake" and ex.calls[1]["weights_out"] is None
    reused = q.results(second_job)[0]
    assert reused.train_reused_from == first["tasks"][0]["key"]
    assert reused.train.epochs == q.results(first["id"])[0].train.epochs
    assert "reused" in reused.message


def test_weights_that_fail_their_checksum_are_trained_again():
    q, ex = queue()
    q.wait(q.submit(qs.demo_spec(2)), poll_s=0.02)
    weights = Path(ex.calls[0]["weights_out"] + ".fake")
    weights.write_text("not the weights that were trained")
    with pytest.warns(RuntimeWarning, match="SHA-256"):
        second = q.wait(q.submit(qs.demo_spec(2, measure_iters=5)), poll_s=0.02)
    assert ex.calls[1]["weights_in"] is None and ex.calls[1]["weights_out"]  # trained again
    result = q.results(second["id"])[0]
    assert result.status == "ok" and result.train_reused_from is None and "trained again" in result.message


def test_background_runner_runs_submitted_jobs():
    q, ex = queue()
    jobqueue.start_background_runner(q, idle_s=0.05)
    jobqueue.start_background_runner(q, idle_s=0.05)  # idempotent
    job = q.submit(qs.demo_spec(1))
    wait_for(lambda: q.status(job)["state"] == "done", timeout_s=10)
    assert len(ex.calls) == 1


def test_eight_concurrent_submitters_three_specs(tmp_path):
    r = qs.concurrent_submitters(tmp_path / "calls.jsonl", n=8, distinct=3, sleep_s=0.3)
    assert len(r["executions"]) == 3
    assert sorted(c["epochs"] for c in r["executions"]) == [1, 2, 3]
    assert r["overlaps"] == []
    assert [s["results"] for s in r["submitters"]] == [["ok"]] * 8


def test_runner_killed_with_sigkill(tmp_path):
    r = qs.sigkill_runner(tmp_path / "calls.jsonl")
    assert r["lock_held_while_running"] and r["lock_free_after_kill"] and r["run_next"]
    # This process still follows the job: its task is run again (once) rather than lost.
    assert r["doomed"]["state"] == "done" and r["doomed"]["tasks"][0]["state"] == "ok"
    task = r["doomed"]["tasks"][0]
    assert task["attempts"] == 1 and "runner of its first run died" in task["message"]
    assert r["following"]["state"] == "done" and not r["orphan_worker_alive"]


def test_worker_killed_with_sigkill(tmp_path):
    r = qs.sigkill_worker(tmp_path / "calls.jsonl")
    assert r["doomed"]["state"] == "failed" and r["doomed"]["tasks"][0]["state"] == "crashed"
    assert r["lock_free"] and r["run_next"] and r["following"]["state"] == "done"


def test_truncated_cache_entry_is_recomputed(tmp_path):
    r = qs.corrupt_entry(tmp_path / "calls.jsonl")
    assert any("dropped the cache entry" in w for w in r["warnings"])
    assert r["second_task"] == "ok" and r["executions"] == 2 and r["third_task"] == "cached"
