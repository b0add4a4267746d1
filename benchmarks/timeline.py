"""Which task ran where, and when: a timeline of the results of `sweep ... --json`.

    python -m engines sweep benchmarks/sweep_8_tasks.yaml --json > results.json
    python benchmarks/timeline.py results.json            # a Markdown table, earliest first

Per task: architecture, framework, seed, the machine and GPU it ran on (the GPU index
NVML gave, else the CUDA_VISIBLE_DEVICES its worker was pinned to: a declared GPU on a
machine without one), start and end in seconds from the first start, and the most tasks
that ran at once. Reads the JSON only; imports nothing of the lab.
"""
from __future__ import annotations

import json
import sys


def gpu_of(result: dict) -> str:
    env = result.get("environment") or {}
    if env.get("gpu_index") is not None:
        return str(env["gpu_index"])
    pinned = (env.get("worker_env") or {}).get("CUDA_VISIBLE_DEVICES")
    return f"{pinned} (declared)" if pinned not in (None, "") else "cpu"


def most_at_once(results: list[dict]) -> int:
    edges = sorted([(r["started_at"], 1) for r in results] + [(r["finished_at"], -1) for r in results])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def timeline(results: list[dict]) -> str:
    ran = sorted((r for r in results if r.get("started_at")), key=lambda r: r["started_at"])
    t0 = ran[0]["started_at"] if ran else 0.0
    lines = ["| task | key | machine | GPU | start s | end s |", "|---|---|---|---|---:|---:|"]
    for r in ran:
        spec = r.get("spec") or {}
        task = f"{spec.get('architecture')} {r.get('framework')} seed {spec.get('seed')}"
        lines.append(f"| {task} | {r.get('key', '')[:12]} | {(r.get('environment') or {}).get('host')} | "
                     f"{gpu_of(r)} | {r['started_at'] - t0:.1f} | {r['finished_at'] - t0:.1f} |")
    span = (max(r["finished_at"] for r in ran) - t0) if ran else 0.0
    lines.append(f"\n{len(ran)} tasks in {span:.1f} s, at most {most_at_once(ran)} at once.")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as fh:
        print(timeline(json.load(fh)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
