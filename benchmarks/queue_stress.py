"""Stress and failure demonstrations of the job queue, with a fake executor (no framework).

    .venv/bin/python benchmarks/queue_stress.py            # every demo, in a temp cache
    .venv/bin/python benchmarks/queue_stress.py --keep DIR # ... in DIR, kept afterwards

1. 8 fresh interpreters submit 3 distinct specs at once: exactly 3 tasks execute, their
   running intervals (recorded by the fake executor) never overlap, all 8 get results.
2. SIGKILL: a runner process killed mid-job: the lock is free, the next runner kills the
   orphaned worker and runs the task again for the job's follower, then the next job.
   A worker killed mid-task: that task crashes, the queue goes on.
3. A truncated result file: detected on read, dropped with a warning, recomputed.

The fake executor and the scenarios live in tests/queue_fakes.py (tests/test_runs_queue.py
runs the same functions); this script prints what they found.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from queue_fakes import concurrent_submitters, corrupt_entry, sigkill_runner, sigkill_worker


def _fmt_t(t, t0):
    return f"{t - t0:7.3f}s"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", help="use this folder as LAB_CACHE_DIR and keep it")
    args = parser.parse_args(argv)

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="queue-stress-"))
    ok = True
    for name in ("submitters", "sigkill_runner", "sigkill_worker", "corrupt"):
        os.environ["LAB_CACHE_DIR"] = str(root / name)
        (root / name).mkdir(parents=True, exist_ok=True)
        log = root / name / "executions.jsonl"
        t = time.time()
        if name == "submitters":
            r = concurrent_submitters(log)
            calls = sorted(r["executions"], key=lambda c: c["start"])
            t0 = calls[0]["start"] if calls else 0
            print(f"== 8 concurrent submitters, 3 distinct specs ({time.time() - t:.1f} s)")
            for c in calls:
                print(f"   executed epochs={c['epochs']} in runner pid {c['runner_pid']}: "
                      f"{_fmt_t(c['start'], t0)} -> {_fmt_t(c['end'], t0)}")
            for s in r["submitters"]:
                print(f"   submitter pid {s['pid']}: job {s['job']} {s['state']} results {s['results']}")
            good = len(calls) == 3 and not r["overlaps"] and all(s["results"] == ["ok"] for s in r["submitters"])
            print(f"   executions {len(calls)} (want 3), overlapping intervals {len(r['overlaps'])} (want 0), "
                  f"submitters with results {sum(s['results'] == ['ok'] for s in r['submitters'])}/8 "
                  f"-> {'PASS' if good else 'FAIL'}")
        elif name == "sigkill_runner":
            r = sigkill_runner(log)
            d, f = r["doomed"], r["following"]
            print(f"== SIGKILL of the runner process mid-job ({time.time() - t:.1f} s)")
            print(f"   lock held while running: {r['lock_held_while_running']}; "
                  f"free after the kill: {r['lock_free_after_kill']}")
            print(f"   killed job: {d['state']}, task {d['tasks'][0]['state']} after "
                  f"{d['tasks'][0]['attempts'] + 1} attempts: {d['tasks'][0]['message']}")
            print(f"   orphaned worker still alive: {r['orphan_worker_alive']}")
            print(f"   next job: {f['state']}, task {f['tasks'][0]['state']}")
            good = (d["state"] == "done" and d["tasks"][0]["attempts"] == 1 and r["lock_free_after_kill"]
                    and f["state"] == "done" and not r["orphan_worker_alive"])
            print(f"   -> {'PASS' if good else 'FAIL'}")
        elif name == "sigkill_worker":
            r = sigkill_worker(log)
            d, f = r["doomed"], r["following"]
            print(f"== SIGKILL of the worker process mid-task ({time.time() - t:.1f} s)")
            print(f"   job: {d['state']}, task {d['tasks'][0]['state']}: {d['tasks'][0]['message']}")
            print(f"   lock free: {r['lock_free']}; next job: {f['state']}, task {f['tasks'][0]['state']}")
            good = d["state"] == "failed" and d["tasks"][0]["state"] == "crashed" and r["lock_free"] \
                and f["state"] == "done"
            print(f"   -> {'PASS' if good else 'FAIL'}")
        else:
            r = corrupt_entry(log)
            print(f"== corrupted cache entry ({time.time() - t:.1f} s)")
            print(f"   truncated {r['value_file']} from {r['size_before']} to {r['size_after_truncate']} bytes")
            for w in r["warnings"]:
                print(f"   warning: {w}")
            print(f"   resubmitted: task {r['second_task']} (recomputed), executions {r['executions']} (want 2); "
                  f"third submit: task {r['third_task']}")
            good = r["warnings"] and r["second_task"] == "ok" and r["executions"] == 2 and r["third_task"] == "cached"
            print(f"   -> {'PASS' if good else 'FAIL'}")
        ok = ok and bool(good)
    print(f"(cache folders under {root}{'' if args.keep else ', temporary'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
