"""`python -m engines ...`: the lab from the command line, with --json for scripts.

    datasets   the catalog and each dataset's state here
    models     architectures: trainable parameters and FLOPs per image (--check: built in each framework)
    doctor     this machine, and the device each framework will compute on (a probe each)
    run        one comparison from the command line, through the shared job queue
    demo       the home page's default comparison (fill the cache before a class)
    sweep      every combination of a JSON or YAML grid of run fields

`run` and `sweep` show a progress line on stderr and a table at the end; nothing here
imports a framework (the work happens in worker processes started by the queue).
Exit codes: 0 success (for run/sweep: every result's status is ok), 1 a requested thing
failed (a status other than ok) or the lab could not work (an unwritable cache folder),
2 a bad command line, a bad run spec or a request over the limits (engines.settings),
130 interrupted. Every error is one line on stderr, never a traceback (LAB_DEBUG=1 adds
it). SIGTERM and SIGHUP are handled like Ctrl-C: this command's interest in its jobs is
withdrawn, and a job nobody else follows is cancelled.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import signal
import sqlite3
import sys
import time
import traceback
from pathlib import Path

from engines import settings
from engines.datasets import MAX_RESOLUTION, MIN_RESOLUTION
from engines.frameworks import FRAMEWORKS, compiled_by_default, default_frameworks, owners
from engines.runs.result import RunResult, clean
from engines.runs.spec import RunSpec, SpecError, compile_text
from engines.training.config import OPTIMIZERS, PIPELINES, PRECISIONS, SCHEDULES, XLA_AUTOTUNE_LEVELS

MAX_GRID_FILE_BYTES = 1 << 20  # a grid file is a few lines; anything near this is a mistake
MAX_GRID_VALUES = 100_000  # values in a parsed grid, counted as a tree (YAML aliases included)


def _check_sizes(args) -> None:
    """The numbers `datasets` and `models` take, in range (SpecError names the option)."""
    from engines.datasets.options import OPTIONS

    problems = {}
    if args.resolution is not None and not MIN_RESOLUTION <= args.resolution <= MAX_RESOLUTION:
        problems["--resolution"] = f"must be {MIN_RESOLUTION}..{MAX_RESOLUTION} px, got {args.resolution}"
    for name in ("classes", "channels"):
        if getattr(args, name, None) is not None and (why := OPTIONS[name].problem(getattr(args, name), "")):
            problems[f"--{name}"] = why
    if problems:
        raise SpecError(problems)


def _cmd_datasets(args) -> int:
    from engines.datasets import catalog, dataset_state, ready_first

    _check_sizes(args)
    rows = []
    for info in ready_first(catalog().values(), args.resolution):
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
    """Parameters and FLOPs per architecture from the definitions (a second, no framework
    imported); with --check, every model built in every installed framework and counted
    there, each count checked against the definition's (exit 1 on a mismatch)."""
    import models

    _check_sizes(args)
    if not args.check:
        rows = models.definition_table(args.resolution, args.channels, args.classes)
        missing = []
    else:
        rows, missing = models.parameter_table(args.resolution, args.channels, args.classes)
        defined = {r["architecture"]: r["parameters"]
                   for r in models.definition_table(args.resolution, args.channels, args.classes)}
        for r in rows:
            r["matches_definition"] = None if r["parameters"] is None else r["parameters"] == defined[r["architecture"]]
    if missing:
        print(f"not installed, left out: {', '.join(missing)}", file=sys.stderr)
    mismatched = [r for r in rows if r.get("matches_definition") is False]
    if args.json:
        fields = ("architecture", "framework", "parameters", "flops_per_image", "matches_definition") if args.check \
            else ("architecture", "parameters", "flops_per_image")
        json.dump([{k: r[k] for k in fields} for r in rows], sys.stdout, indent=1)
        print()
    else:
        _print_models(args, rows)
    for r in mismatched:
        print(f"error: {r['architecture']} built in {r['framework']} has {r['parameters']:,} trainable parameters, "
              "its definition says otherwise (`python -m engines models` without --check)", file=sys.stderr)
    return 1 if mismatched else 0


def _print_models(args, rows: list[dict]) -> None:
    print(f"input {args.resolution}x{args.resolution}x{args.channels}, {args.classes} classes; "
          "parameters are trainable ones, FLOPs = 2 x multiply-accumulates per image; "
          + ("counted on the model built in each framework" if args.check
             else "from the architecture definitions (--check builds every model in each framework)"))
    fw = f"{'framework':<11}" if args.check else ""
    header = f"{'architecture':<20}{fw}{'parameters':>14}{'GFLOPs/image':>14}"
    print(header)
    print("-" * len(header))
    for r in rows:
        fw = f"{r['framework']:<11}" if args.check else ""
        if r["parameters"] is None:
            print(f"{r['architecture']:<20}{fw}  {r['note']}")
            continue
        flag = "" if r.get("matches_definition") in (None, True) else "  differs from the definition"
        print(f"{r['architecture']:<20}{fw}{r['parameters']:>14,}{r['flops_per_image'] / 1e9:>14.4f}{flag}")


# -- run and sweep ---------------------------------------------------------------------
# Fields whose value is itself a list: in a sweep grid, only a list of lists is an axis.
LIST_FIELDS = ("frameworks", "batch_sizes")
# Command-line spellings accepted in grid files too.
ALIASES = {"size": "resolution", "arch": "architecture", "lr": "learning_rate"}


class GridError(ValueError):
    pass


# -- arguments -------------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None


def _option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), int(value)
    except ValueError:
        return key.strip(), value


def _one_of(values) -> str:
    return f"{', '.join(map(str, values[:-1]))} or {values[-1]}"


def _only(option: str) -> str:
    return f"{', '.join(owners(option))} only"


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    d = RunSpec.__dataclass_fields__
    g = p.add_argument_group("a paper's experiment (instead of the fields below)")
    g.add_argument("--preset", metavar="NAME",
                   help="queue every spec of a paper preset as the Papers page does (see presets/: "
                        "the file names without .yaml)")
    g.add_argument("--reduced", action="store_true",
                   help="with --preset: the preset's reduced form, to finish on a CPU in minutes")
    g = p.add_argument_group("what to run (defaults: RunSpec's, the lab's default comparison)")
    g.add_argument("--dataset", help=f"dataset name (default {d['dataset'].default}; see `datasets`)")
    g.add_argument("--size", type=int, dest="resolution", metavar="PX",
                   help="input resolution in pixels (default: the dataset's smallest native size)")
    g.add_argument("--arch", dest="architecture", metavar="NAME",
                   help=f"architecture (default {d['architecture'].default}; see `models`)")
    g.add_argument("--frameworks", metavar="A,B", help=f"comma-separated: {', '.join(FRAMEWORKS)} "
                                                      f"(default {','.join(default_frameworks())})")
    g.add_argument("--batch-sizes", type=_int_list, metavar="1,8,32", help="inference batch sizes to time")
    g.add_argument("--epochs", type=int, metavar="N")
    g.add_argument("--repeats", type=int, metavar="N", help="runs per framework, with seeds seed, seed+1, ...")
    g.add_argument("--seed", type=int, metavar="N")
    g.add_argument("--dataset-option", type=_option, action="append", dest="dataset_options", metavar="KEY=VALUE",
                   help="e.g. train=256 for the synthetic set, source=28 to upsample a native 28 px file (repeatable)")
    g = p.add_argument_group("training")
    g.add_argument("--train-batch-size", type=int, metavar="N", help="default: the architecture's paper value")
    g.add_argument("--lr", type=float, dest="learning_rate", metavar="X",
                   help="default: the architecture's paper value")
    g.add_argument("--optimizer", help=_one_of(OPTIMIZERS))
    g.add_argument("--lr-schedule", help=_one_of(SCHEDULES))
    g.add_argument("--weight-decay", type=float, metavar="X")
    g.add_argument("--class-weights", action="store_true", default=None, help="class-weighted loss")
    g.add_argument("--same-init", action=argparse.BooleanOptionalAction, default=None,
                   help="every framework starts from the same drawn weights (default on)")
    g.add_argument("--recompute-batchnorm", action=argparse.BooleanOptionalAction, default=None,
                   dest="recompute_batchnorm",
                   help="after training, recompute the BatchNorm statistics over the training split "
                        "(default: on where the architecture has BatchNorm)")
    g.add_argument("--pretrained", metavar="torchvision|FILE",
                   help="start every framework from pretrained weights: torchvision's published file for the "
                        "architecture (downloaded once), or a weights file (.pth, .safetensors) inside the data "
                        "folders; a new classifier for the dataset's classes is drawn from the seed")
    g.add_argument("--inference-only", action="store_true", default=None,
                   help="no training: time inference (with trained weights from the cache when there are some)")
    g = p.add_argument_group("toggles")
    g.add_argument("--precision", help=_one_of(PRECISIONS))
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile / TF jit_compile / JAX jit in every framework (--compile) or in none "
                        "(--no-compile); default: each framework's own setting, the faster one for short runs "
                        f"(on in {', '.join(compiled_by_default())})")
    g.add_argument("--xla-autotune", type=int, metavar=f"{XLA_AUTOTUNE_LEVELS[0]}-{XLA_AUTOTUNE_LEVELS[-1]}",
                   help=f"XLA GPU autotune level ({', '.join(owners('xla_autotune'))})")
    g.add_argument("--pipeline", help=_one_of(PIPELINES))
    g.add_argument("--cudnn-benchmark", action="store_true", default=None, help=_only("cudnn_benchmark"))
    g.add_argument("--channels-last", action="store_true", default=None, help=_only("channels_last"))
    g.add_argument("--require-gpu", action="store_true", default=None,
                   help="refuse a framework that would compute on the CPU on a machine with a GPU "
                        "(instead of a comparison that mixes devices; ./lab doctor says where each computes)")
    g.add_argument("--warmup-iters", type=int, metavar="N", help="untimed inference calls per batch size")
    g.add_argument("--measure-iters", type=int, metavar="N", help="timed inference calls per batch size")
    _add_common(p)


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a .json, .yaml or .yml grid")
    p.add_argument("--max-runs", type=int, metavar="N", default=None,
                   help=f"run a grid of up to N combinations (default LAB_MAX_SWEEP_RUNS, "
                        f"{int(settings.SETTINGS['LAB_MAX_SWEEP_RUNS'].default)}); the size is computed before the "
                        "grid is expanded")
    _add_common(p)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="recompute even what is in the cache")
    p.add_argument("--json", action="store_true", help="print the RunResults (schema 1) as a JSON list on stdout")
    p.add_argument("--executor", choices=settings.EXECUTORS, default=None,
                   help="local: this machine's queue, one task per GPU at once (LAB_GPUS); ray: each task a Ray "
                        "task on a cluster (default LAB_EXECUTOR, else local)")
    p.add_argument("--ray-address", metavar="HOST:PORT", default=None,
                   help="the Ray head node (implies --executor ray; default LAB_RAY_ADDRESS, else a local Ray "
                        "instance started and stopped for this command)")


def spec_from_args(args) -> RunSpec:
    fields = {f: getattr(args, f) for f in RunSpec.__dataclass_fields__ if getattr(args, f, None) is not None}
    if "dataset_options" in fields:
        fields["dataset_options"] = dict(fields["dataset_options"])
    return RunSpec.from_dict(fields)


# -- sweep grids -------------------------------------------------------------------------
def load_grid(path: str, max_runs: int | None = None) -> list[dict]:
    """The combinations of a grid file, as RunSpec field dicts (not yet validated). The
    file's size, its number of values (counted as a tree, so that nested YAML aliases
    count for what they expand to), its field names and its number of combinations are
    checked before anything is expanded; GridError says which is wrong."""
    data = _parse_grid(path)
    grids = data if isinstance(data, list) else [data]
    for grid in grids:
        if not isinstance(grid, dict) or not grid:
            raise GridError(f"{path}: expected a mapping of run fields (or a list of them), got {type(grid).__name__}")
    limit = max_runs or settings.max_sweep_runs()
    size = sum(grid_size(g) for g in grids)
    if size > limit:
        raise GridError(f"{path} has {size:,} combinations, more than {limit:,} (LAB_MAX_SWEEP_RUNS; --max-runs N "
                        "raises it): split the grid or give fewer values per field")
    out = []
    for grid in grids:
        out.extend(expand_grid(grid))
    return out


def _parse_grid(path: str):
    try:
        size = os.path.getsize(path)
        if size > MAX_GRID_FILE_BYTES:
            raise GridError(f"{path} is {size:,} bytes; a grid file is at most {MAX_GRID_FILE_BYTES:,}")
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise GridError(f"{path} is not a text file ({e.reason})") from None
    except OSError as e:
        raise GridError(f"cannot read {path}: {e.strerror or e}") from None
    import yaml

    kind = "JSON" if path.endswith(".json") else "YAML"
    try:
        data = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError, RecursionError) as e:  # JSONDecodeError is a ValueError; deep nesting
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise GridError(f"{path} is not valid {kind}: {first}") from None
    _count_values(data, path, [0])
    return data


def _count_values(obj, path: str, seen: list[int]) -> None:
    """Walk the parsed file as the tree it stands for, and stop at MAX_GRID_VALUES: a few
    lines of nested YAML aliases stand for billions of values."""
    seen[0] += 1
    if seen[0] > MAX_GRID_VALUES:
        raise GridError(f"{path} holds more than {MAX_GRID_VALUES:,} values (nested YAML aliases?): "
                        "a grid lists each field's values once")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _count_values(k, path, seen)
            _count_values(v, path, seen)
    elif isinstance(obj, list):
        for v in obj:
            _count_values(v, path, seen)


def _axes(grid: dict) -> list[tuple[str, list]]:
    """(field, its values) per key; unknown field names are refused here, before any
    combination is made."""
    known = set(RunSpec.__dataclass_fields__)
    out, unknown = [], []
    for key, value in grid.items():
        name = ALIASES.get(str(key).replace("-", "_"), str(key).replace("-", "_"))
        if name not in known:
            unknown.append(str(key))
        if name in LIST_FIELDS:
            is_axis = isinstance(value, list) and value and all(isinstance(v, list) for v in value)
        else:
            is_axis = isinstance(value, list)
        out.append((name, value if is_axis else [value]))
    if unknown:
        raise GridError(f"unknown field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}")
    empty = [name for name, values in out if not values]
    if empty:
        raise GridError(f"field(s) {', '.join(empty)} list no values")
    return out


def grid_size(grid: dict) -> int:
    """The number of combinations, without making them."""
    return math.prod(len(values) for _, values in _axes(grid))


def expand_grid(grid: dict) -> list[dict]:
    axes = _axes(grid)
    names = [name for name, _ in axes]
    return [dict(zip(names, combo)) for combo in itertools.product(*(values for _, values in axes))]


# -- progress --------------------------------------------------------------------------
class ProgressPrinter:
    """A progress line on stderr. On a terminal it is rewritten in place; otherwise (a
    pipe, a CI log) a new line is written only when the coarse state changes (a task
    starts, a stage or epoch changes), so the log stays readable."""

    WIDTH = 24

    def __init__(self, stream=None, label: str = ""):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.label = label
        self._last_coarse = None
        self._shown = False

    def __call__(self, st: dict) -> None:
        tasks = st["tasks"]
        finished = sum(t["state"] not in ("queued", "running") for t in tasks)
        partial, detail = 0.0, ""
        running = next((t for t in tasks if t["state"] == "running"), None)
        if running is not None:
            p = running["progress"]
            if p.get("epoch") and p.get("epochs"):
                steps = (p["step"] / p["steps"]) if p.get("step") and p.get("steps") else 0
                partial = min(0.9, 0.9 * ((p["epoch"] - 1) + steps) / p["epochs"])
            if p.get("stage") == "inference":
                partial = 0.95
            detail = f"{running['framework']} seed {running['seed']}: {p.get('stage') or 'starting'}"
            if p.get("epoch") and p.get("stage") in ("train", "training"):
                detail += f" epoch {p['epoch']}/{p.get('epochs') or '?'}"
                if p.get("step") and p.get("steps"):
                    detail += f" step {p['step']}/{p['steps']}"
                if p.get("loss") is not None:
                    detail += f" loss {p['loss']:.4f}"
            if p.get("batch_size"):
                detail += f" batch {p['batch_size']}"
        elif st["state"] == "queued":
            ahead = st.get("ahead")
            detail = f"queued, position {st['position']}" + (f" ({ahead} job(s) ahead)" if ahead else "")
        else:
            detail = st["state"]
        fraction = (finished + partial) / max(1, len(tasks))
        filled = int(round(self.WIDTH * fraction))
        bar = "#" * filled + "." * (self.WIDTH - filled)
        label = f"{self.label} " if self.label else ""
        line = f"{label}[{bar}] {fraction * 100:3.0f}% {finished}/{len(tasks)} tasks · {detail}"
        coarse = (st["state"], finished, detail.split(" step ")[0].split(" loss ")[0])
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(160))
            self._shown = True
        elif coarse != self._last_coarse:
            self.stream.write(line + "\n")
        self._last_coarse = coarse
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()


# -- tables ------------------------------------------------------------------------------
def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


NOISY_MARK = "*"


def _noisy(v: str, flag: bool | None) -> str:
    return v + NOISY_MARK if flag and v != "-" else v


def results_table(results: list[RunResult], sources: list[str] | None = None) -> str:
    """framework, status, source, the device it computed on, epochs, train img/s, test
    accuracy, AUC, and per batch size the p50 latency and the throughput. Figures that
    were not measured show as '-'; a timing taken while other work held the cores ends
    in '*' (conditions_lines says what it means)."""
    sizes = sorted({p.batch_size for r in results for p in r.inference}
                   | {b for r in results for b in r.spec.get("batch_sizes", [])})
    repeats = len({r.spec.get("seed") for r in results}) > 1
    header = ["framework"] + (["seed"] if repeats else []) + ["status", "source", "device", "epochs", "train img/s",
                                                               "test acc", "AUC"]
    for b in sizes:
        header += [f"b{b} p50 ms", f"b{b} img/s"]
    rows = []
    for i, r in enumerate(results):
        train, ev = r.train, r.evaluation
        inf = {p.batch_size: p for p in r.inference}
        row = [r.framework or "?"] + ([str(r.spec.get("seed"))] if repeats else [])
        row += [r.status, (sources[i] if sources else "-"), (r.environment.device if r.environment else None) or "-",
                str(len(train.epochs)) if train else "-",
                _noisy(_num(train.images_per_s if train else None, ",.0f"), train.noisy if train else None),
                _num(ev.accuracy if ev else None, ".4f"),
                _num(ev.auc if ev else None, ".4f")]
        for b in sizes:
            p = inf.get(b)
            if p is None:
                row += ["-", "-"]
            elif p.status != "ok":
                row += [p.status, "-"]
            else:
                row += [_noisy(_num(p.latency_ms.p50 if p.latency_ms else None, ",.3f"), p.noisy),
                        _noisy(_num(p.throughput_images_per_s, ",.0f"), p.noisy)]
        rows.append(row)
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(header)]
    left = header.index("device") + 1  # the words left-aligned, the figures right-aligned
    lines = ["  ".join(h.ljust(w) if c < left else h.rjust(w) for c, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(v.ljust(w) if c < left else v.rjust(w) for c, (v, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def conditions_lines(results: list[RunResult]) -> list[str]:
    """What the table's figures were taken under, when it matters: a comparison that mixes
    devices (engines.devices.mixed), and the timings marked noisy."""
    from engines.devices import mixed
    from engines.settings import noisy_share

    out = []
    mix = mixed(results)
    if mix is not None:
        out.append(f"warning: {mix.reason}")
    noisy = []
    for r in results:
        windows = ([("training", r.train)] if r.train else []) + [(f"batch {p.batch_size}", p) for p in r.inference]
        noisy += [f"{r.framework} {what} ({w.other_cpu_cores:.1f} cores)" for what, w in windows
                  if w.noisy and w.other_cpu_cores is not None]
    if noisy:
        out.append(f"{NOISY_MARK} noisy: other processes held more than {noisy_share():.0%} of this machine's cores "
                   "while these were measured (their CPU use in cores): " + ", ".join(noisy)
                   + "; such figures say as much about that work as about the frameworks")
    return out


def failure_lines(results: list[RunResult]) -> list[str]:
    """One line per distinct failure, naming every framework and seed that had it."""
    groups: dict[tuple[str, str], list[str]] = {}
    for r in results:
        if r.status != "ok":
            why = ((r.message or "").strip().splitlines() or ["no message"])[0]
            groups.setdefault((r.status, why), []).append(f"{r.framework} seed {r.spec.get('seed')}")
    return [f"{', '.join(who)}: {status}: {why}" for (status, why), who in groups.items()]


def check_lines(results: list[RunResult]) -> list[str]:
    """What to check before trusting the figures (engines.analysis.health)."""
    from engines.analysis import health

    return [f"check: {g['sentence']}" for g in health.accuracy_gaps([r.to_dict() for r in results])]


def describe(spec: RunSpec) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in spec.dataset_options)
    return (f"{spec.architecture} on {spec.dataset}{f' ({opts})' if opts else ''} at {spec.resolution} px, "
            f"{spec.epochs} epoch(s), precision {spec.precision}, "
            f"{compile_text(spec.compile, spec.compile_by_framework())}")


# -- commands ----------------------------------------------------------------------------
def make_queue():
    """The queue the CLI uses (tests replace this to inject a fake executor)."""
    from engines.runs.queue import JobQueue

    return JobQueue()


def make_ray_queue(address: str | None):
    """A queue whose jobs run on Ray (engines.runs.rayexec), connected before anything is
    queued, so that an unreachable cluster stops the command at once."""
    from engines.runs.queue import JobQueue
    from engines.runs.rayexec import RayExecutor

    executor = RayExecutor(address)
    executor.connect()
    for sig in INTERRUPTING:  # ray.init installs its own SIGTERM handler: ours again (see main)
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, _interrupt)
    res = executor.resources()
    what = f"{res['lanes']} GPU(s)" if res["num_gpus"] else f"{res['lanes']} CPU node(s)"
    where = f"the Ray cluster at {address}" if address else "a local Ray instance"
    dashboard = executor.dashboard_url()
    print(f"ray: {where}, {what}: {res['lanes']} task(s) at once"
          + (f"; dashboard {dashboard}" if dashboard else ""), file=sys.stderr)
    return JobQueue(executor=executor)


def executor_choice(args) -> tuple[str, str | None]:
    """(executor, Ray address) from --executor/--ray-address and LAB_EXECUTOR/LAB_RAY_ADDRESS."""
    if args.ray_address is not None and args.executor == "local":
        raise GridError("--ray-address is the address of a Ray cluster: it goes with --executor ray")
    executor = args.executor or ("ray" if args.ray_address is not None else settings.executor())
    address = settings.ray_address(args.ray_address) if executor == "ray" else None
    return executor, address


def print_spec_error(e: SpecError, where: str = "") -> None:
    print(f"error: invalid run spec{f' ({where})' if where else ''}:", file=sys.stderr)
    for field, message in e.problems.items():
        print(f"  {field}: {message}", file=sys.stderr)


def run_command(args) -> int:
    settings.check_all()
    if args.preset:
        return preset_command(args)
    if args.reduced:
        print("error: --reduced goes with --preset NAME", file=sys.stderr)
        return 2
    spec = spec_from_args(args)  # SpecError: exit 2 (main)
    return execute([spec], force=args.force, as_json=args.json, executor=executor_choice(args))


def demo_command(args) -> int:
    """`demo`: the home page's default comparison (spec.default_request, the same request,
    so the same cache entries): a teacher runs it before class, and the button then
    answers from the cache in seconds. Prints the time from request to results."""
    from engines.runs.spec import default_request

    settings.check_all()
    spec = default_request()
    print(f"the default comparison: {describe(spec)}; {', '.join(spec.frameworks)}", file=sys.stderr)
    t0 = time.monotonic()
    code = execute([spec], force=args.force, as_json=args.json)
    print(f"demo: {time.monotonic() - t0:.1f} s from request to results", file=sys.stderr)
    return code


def preset_command(args) -> int:
    """`run --preset NAME [--reduced]`: every spec of the preset, as it is (the Papers
    page's figures are matched against exactly these)."""
    from engines.analysis.presets import PresetError, get_preset

    spelled = {field: option for option, field in ALIASES.items()} | {"dataset_options": "dataset-option"}
    given = sorted(f"--{spelled.get(f, f).replace('_', '-')}" for f in RunSpec.__dataclass_fields__
                   if getattr(args, f, None) is not None)
    if given:
        print(f"error: --preset runs the preset's specs as they are; leave out {', '.join(given)} "
              "(or fill the Run page's form from the preset and change it there)", file=sys.stderr)
        return 2
    try:
        preset = get_preset(args.preset)
    except KeyError as e:  # an unknown name: the message lists the known ones
        print(f"error: --preset: {e.args[0]}", file=sys.stderr)
        return 2
    except PresetError as e:
        print(f"error: --preset {args.preset}: {e}", file=sys.stderr)
        return 2
    specs = preset.labelled_specs(args.reduced)
    print(f"preset {preset.name}{' (reduced)' if args.reduced else ''}: {len(specs)} spec(s): "
          + "; ".join(label for label, _ in specs), file=sys.stderr)
    return execute([spec for _, spec in specs], force=args.force, as_json=args.json)


def sweep_command(args) -> int:
    settings.check_all()
    if args.max_runs is not None and args.max_runs < 1:
        raise GridError(f"--max-runs must be at least 1, got {args.max_runs}")
    combos = load_grid(args.file, args.max_runs)
    specs, bad = [], 0
    for i, combo in enumerate(combos, 1):
        try:
            specs.append(RunSpec.from_dict(combo))
        except SpecError as e:
            bad += 1
            print_spec_error(e, f"combination {i} of {len(combos)}: "
                                + ", ".join(f"{k}={v}" for k, v in combo.items()))
        except TypeError as e:  # a field given a mapping where a value belongs, and the like
            bad += 1
            print(f"error: combination {i} of {len(combos)}: {e}", file=sys.stderr)
    if bad:
        print(f"{bad} of {len(combos)} combinations are invalid; nothing was run", file=sys.stderr)
        return 2
    print(f"sweep: {len(specs)} run(s) from {args.file}", file=sys.stderr)
    return execute(specs, force=args.force, as_json=args.json, executor=executor_choice(args))


def execute(specs: list[RunSpec], *, force: bool, as_json: bool,
            executor: tuple[str, str | None] = ("local", None)) -> int:
    """Queue the specs and wait for each in turn (they run side by side, one per lane: a
    GPU here, or a GPU of the Ray cluster). At most the submitter's share of the queue is
    taken at once (LAB_MAX_QUEUED_JOBS): the next specs are queued as earlier ones start,
    so that a long sweep takes turns with other users instead of filling the queue. Every
    spec is admitted (limits, data here) before the first is queued."""
    from engines.runs.queue import admit

    for spec in specs:
        admit(spec)  # SpecError: exit 2, nothing queued
    kind, address = executor
    queue = make_queue() if kind == "local" else make_ray_queue(address)
    try:
        return _execute_on(queue, specs, force=force, as_json=as_json)
    finally:
        close = getattr(queue.executor, "close", None)
        if close is not None:
            close()  # a local Ray instance started for this command stops with it


def _execute_on(queue, specs: list[RunSpec], *, force: bool, as_json: bool) -> int:
    from engines.runs.followers import Follower

    follower = Follower.this_process()
    job_ids: list[str | None] = [None] * len(specs)
    job_ids[0] = queue.submit(specs[0], force=force, follower=follower)  # QueueFull: exit 2, nothing queued
    table_out = sys.stderr if as_json else sys.stdout
    everything: list[RunResult] = []
    t0 = time.time()
    for n, spec in enumerate(specs):
        label = f"run {n + 1}/{len(specs)}" if len(specs) > 1 else ""
        printer = ProgressPrinter(sys.stderr, label)
        try:
            _submit_ahead(queue, specs, job_ids, n, force, follower)
            st = queue.wait(job_ids[n], on_update=printer, follower=follower)
        except KeyboardInterrupt:
            printer.close()
            return _interrupted(queue, [j for j in job_ids if j], job_ids[n], follower)
        printer.close()
        job_id = job_ids[n]
        results = queue.results(job_id)
        everything.extend(results)
        sources = ["cache" if t["state"] == "cached" else "not run" if not t.get("started_at")
                   else ("run, weights reused" if r.train_reused_from else "run")
                   for t, r in zip(st["tasks"], results)]
        print(f"\n{label + ': ' if label else ''}{describe(spec)} — job {job_id} {st['state']}", file=table_out)
        if st["state"] == "failed" and st.get("message") and not any(t.get("started_at") for t in st["tasks"]):
            print(f"  {st['message']}", file=table_out)  # the job failed before any task ran: once, here
        print(results_table(results, sources), file=table_out)
        for line in conditions_lines(results):
            print(line, file=table_out)
        for line in failure_lines(results) + check_lines(results):
            print(f"  {line}", file=table_out)
    print(f"\n{len(everything)} result(s) in {time.time() - t0:.1f} s", file=sys.stderr)
    if as_json:
        json.dump([clean(r.to_dict()) for r in everything], sys.stdout, indent=1, allow_nan=False, default=str)
        print()
    return 0 if everything and all(r.status == "ok" for r in everything) else 1


def _submit_ahead(queue, specs, job_ids, n: int, force: bool, follower) -> None:
    """Queue spec n (waiting for room if the submitter's share is taken) and as many of
    the following specs as the share allows now."""
    from engines.runs.queue import QueueFull

    told = False
    while job_ids[n] is None:
        try:
            job_ids[n] = queue.submit(specs[n], force=force, follower=follower)
        except QueueFull as e:
            if not told:
                print(f"waiting for room in the queue: {e}", file=sys.stderr)
                told = True
            time.sleep(1.0)
    for i in range(n + 1, len(specs)):
        if job_ids[i] is None:
            try:
                job_ids[i] = queue.submit(specs[i], force=force, follower=follower)
            except QueueFull:
                return


def _interrupted(queue, job_ids: list[str], current: str | None, follower) -> int:
    """Ctrl-C, SIGTERM or SIGHUP: withdraw this command's interest in its jobs. A job that
    nobody else follows is cancelled (and this command waits, briefly, for its worker to be
    stopped); one that others follow goes on for them."""
    print("\ninterrupted: withdrawing this command's jobs", file=sys.stderr)
    for job_id in job_ids:
        queue.cancel(job_id, follower)
    if current is None:
        return 130
    st = queue.status(current)
    if st["state"] == "running" and not st["cancel_requested"]:
        print(f"job {current} goes on for its {st['followers']} other follower(s)", file=sys.stderr)
        return 130
    deadline = time.monotonic() + 30
    while st["state"] == "running" and time.monotonic() < deadline:  # its runner stops the worker
        time.sleep(0.2)
        st = queue.status(current)
    return 130


# -- the parser ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("datasets", help="the dataset catalog and each dataset's state on this machine")
    p.add_argument("--resolution", type=int, default=None,
                   help="state at this resolution (default: each dataset's smallest native size)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=_cmd_datasets)
    p = sub.add_parser("models", help="architectures: trainable parameters and FLOPs per image (--check builds them)")
    p.add_argument("--resolution", type=int, default=224, help="input size in pixels (default 224)")
    p.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    p.add_argument("--channels", type=int, default=3, help="input channels (default 3)")
    p.add_argument("--check", action="store_true",
                   help="build every model in each installed framework and check its parameter count against the "
                        "definition's (a minute or more; the default reads the definitions only)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=_cmd_models)

    from engines import doctor

    p = sub.add_parser("doctor", help="this machine, each framework's build, and the device it will compute on",
                       description=doctor.__doc__.split("\n\n")[1].strip())
    doctor.add_arguments(p)
    p.set_defaults(func=doctor.command)
    p = sub.add_parser("run", help="train, evaluate and time one comparison (results cached; --force recomputes)",
                       description="Queue one comparison (waiting for the GPU behind other jobs), show progress on "
                                   "stderr and a table at the end; --json prints the RunResults on stdout.")
    add_run_arguments(p)
    p.set_defaults(func=run_command)
    p = sub.add_parser("demo", help="run the home page's default comparison (fills the cache before a class)",
                       description="The home page's one-click default comparison, the same request (so the page "
                                   "then answers from the cache); prints the results and the time it took.")
    p.add_argument("--json", action="store_true", help="print the RunResults as JSON on stdout")
    p.add_argument("--force", action="store_true", help="recompute even what is cached")
    p.set_defaults(func=demo_command)
    p = sub.add_parser("sweep", help="run every combination of a JSON or YAML grid of run fields",
                       description="FILE is a JSON or YAML mapping of run fields. A list value is an axis of the "
                                   "grid; frameworks and batch_sizes take lists as their value, so for them a "
                                   "list of lists is an axis. Example: {\"architecture\": [\"fan_arch1\", "
                                   "\"cifar_cnn\"], \"frameworks\": [\"pytorch\", \"jax\"], "
                                   "\"batch_sizes\": [1, 8, 32], \"dataset\": \"synthetic\"}.")
    add_sweep_arguments(p)
    p.set_defaults(func=sweep_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """One handler for every command: exit 2 for bad input, 1 for a failure of the lab
    itself, 130 when interrupted, each with a one-line reason and no traceback."""
    args = build_parser().parse_args(argv)  # a bad command line: argparse's usage and exit 2
    from engines.runs.queue import QueueFull
    from engines.runs.rayexec import RayUnavailable
    from engines.settings import SettingsError

    try:
        with _signals_interrupt():
            return args.func(args)
    except SpecError as e:
        print_spec_error(e)
        return 2
    except (GridError, SettingsError, QueueFull) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RayUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head` closed the pipe: not an error of ours
        with contextlib.suppress(OSError):
            sys.stderr.close()
        return 0
    except (OSError, sqlite3.Error) as e:
        _debug()
        print(f"error: the lab could not use its files: {_one_line(e)} (LAB_CACHE_DIR={_cache_dir()}: a writable "
              "folder with free space is needed)", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the last resort: one line, not a traceback
        _debug()
        print(f"error: {type(e).__name__}: {_one_line(e)} (LAB_DEBUG=1 shows where)", file=sys.stderr)
        return 1


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


INTERRUPTING = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _signals_interrupt():
    """SIGTERM and SIGHUP as Ctrl-C while a command runs (the main thread only)."""
    previous = {}
    for sig in INTERRUPTING:
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            previous[sig] = signal.signal(sig, _interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _one_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _cache_dir() -> str:
    from engines.paths import cache_dir

    return str(cache_dir())


def _debug() -> None:
    if os.environ.get("LAB_DEBUG"):
        traceback.print_exc()
