"""`python -m engines ...`: the lab from the command line, with --json for scripts.

Exit codes: 0 success (for run/sweep: every result's status is ok), 1 a requested thing
failed (a status other than ok), 2 a bad command line or a bad run spec.
"""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_datasets(args) -> int:
    from engines.datasets import catalog, dataset_state

    rows = []
    for info in catalog().values():
        state = dataset_state(info, args.resolution)
        rows.append({
            "name": info.name, "title": info.title, "task": info.task,
            "classes": len(info.class_names) or None, "class_names": list(info.class_names),
            "channels": info.channels, "resolutions": list(info.native_resolutions),
            "splits": info.splits or None, "state": state.state, "reason": state.reason,
            "download_bytes": state.download_bytes, "license": info.license, "source": info.source,
        })
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    header = f"{'dataset':<22}{'task':<28}{'classes':>8}{'ch':>4}  {'native px':<16}{'train/val/test':<22}state"
    print(header)
    print("-" * len(header))
    for r in rows:
        splits = "/".join(f"{n:,}" for n in r["splits"].values()) if r["splits"] else "from folder"
        classes = r["classes"] or ("any" if r["name"] == "synthetic" else "folder")
        print(f"{r['name']:<22}{r['task']:<28}{classes:>8}{r['channels']:>4}  "
              f"{','.join(map(str, r['resolutions'])):<16}{splits:<22}{r['state']}: {r['reason']}")
    return 0


def _cmd_models(args) -> int:
    import models

    rows, missing = models.parameter_table(args.resolution, args.channels, args.classes)
    if missing:
        print(f"not installed, left out: {', '.join(missing)}", file=sys.stderr)
    if args.json:
        json.dump([{k: r[k] for k in ("architecture", "framework", "parameters", "flops_per_image")}
                   for r in rows], sys.stdout, indent=1)
        print()
        return 0
    print(f"input {args.resolution}x{args.resolution}x{args.channels}, {args.classes} classes; "
          "parameters are trainable ones, FLOPs = 2 x multiply-accumulates per image")
    header = f"{'architecture':<20}{'framework':<11}{'parameters':>14}{'GFLOPs/image':>14}"
    print(header)
    print("-" * len(header))
    for r in rows:
        if r["parameters"] is None:
            print(f"{r['architecture']:<20}{r['framework']:<11}  {r['note']}")
            continue
        print(f"{r['architecture']:<20}{r['framework']:<11}{r['parameters']:>14,}"
              f"{r['flops_per_image'] / 1e9:>14.4f}")
    return 0


def _cmd_run(args) -> int:
    from engines.runcli import run_command

    return run_command(args)


def _cmd_sweep(args) -> int:
    from engines.runcli import sweep_command

    return sweep_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("datasets", help="the dataset catalog and each dataset's state on this machine")
    p.add_argument("--resolution", type=int, default=None,
                   help="state at this resolution (default: each dataset's smallest native size)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=_cmd_datasets)
    p = sub.add_parser("models", help="architecture x framework: trainable parameters and FLOPs per image")
    p.add_argument("--resolution", type=int, default=224, help="input size in pixels (default 224)")
    p.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    p.add_argument("--channels", type=int, default=3, help="input channels (default 3)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=_cmd_models)

    from engines.runcli import add_run_arguments, add_sweep_arguments

    p = sub.add_parser("run", help="train, evaluate and time one comparison (results cached; --force recomputes)",
                       description="Queue one comparison (waiting for the GPU behind other jobs), show progress on "
                                   "stderr and a table at the end; --json prints the RunResults on stdout.")
    add_run_arguments(p)
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("sweep", help="run every combination of a JSON or YAML grid of run fields",
                       description="FILE is a JSON or YAML mapping of run fields. A list value is an axis of the "
                                   "grid; frameworks and batch_sizes take lists as their value, so for them a "
                                   "list of lists is an axis. Example: {\"architecture\": [\"fan_arch1\", "
                                   "\"cifar_cnn\"], \"frameworks\": [\"pytorch\", \"jax\"], "
                                   "\"batch_sizes\": [1, 8, 32], \"dataset\": \"synthetic\"}.")
    add_sweep_arguments(p)
    p.set_defaults(func=_cmd_sweep)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `... | head` closed the pipe: not an error of ours
        sys.stderr.close()
        return 0
