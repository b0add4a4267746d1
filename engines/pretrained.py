"""Pretrained weights for a run: torchvision's published files, or a local file, read safely.

A run's `pretrained` setting is "torchvision" (the file torchvision publishes for the
architecture: downloaded on first use, verified against the SHA-256 prefix its name
carries, kept in the data root's pretrained/ folder; a copy placed in any data folder by
hand is used first) or the path of a local file inside the data folders (LAB_DATA_ROOT and
LAB_DATA_PATH; relative paths are looked up in each). Nothing is ever unpickled by the lab:

* a .pth/.pt file (torch.save of a state dict) is read once by `torch.load(..., weights_only=
  True)` in a PyTorch process of its own (`python -m engines.pretrained convert`), which
  writes its arrays to an .npz keyed by the file's SHA-256; every worker then reads that
  with numpy (allow_pickle=False), so no TensorFlow or JAX worker loads PyTorch;
* a .safetensors file is read directly (a JSON header and raw arrays).

models.pretrained maps the torchvision state dict into canonical weights and makes them
fit the run (channels, resolution, a new classifier drawn from the seed): the same arrays
load into every framework.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from engines.datasets import DatasetError
from engines.datasets.download import DownloadFailed, RemoteFile, download, sha256_of
from engines.paths import cache_dir, data_root, data_search_path
from engines.training.engine import WeightsError

TORCHVISION = "torchvision"  # the `pretrained` value for torchvision's published file
SUFFIXES = (".pth", ".pt", ".safetensors")
FOLDER = "pretrained"  # under the data root: downloads; under any data folder: looked up by name
CONVERT_TIMEOUT_S = 600


class PretrainedError(WeightsError):
    """Pretrained weights that cannot be had or read; the message says which and why."""


# -- which file -----------------------------------------------------------------------------------
def _inside(path: Path, folders) -> bool:
    return any(path.is_relative_to(f) for f in folders)


def local_file(name: str) -> Path:
    """The weights file `name` names: a path inside one of the data folders (relative
    ones are looked up in each, in order), resolved, with a weights suffix. Symlinks that
    lead out of the data folders are refused like any other path outside them."""
    if not isinstance(name, str) or not name.strip():
        raise PretrainedError("the pretrained weights file must be a path inside the data folders")
    folders = [f.resolve() for f in data_search_path()]
    given = Path(name).expanduser()
    candidates = [given] if given.is_absolute() else [f / given for f in folders]
    for candidate in candidates:
        if candidate.is_file():
            path = candidate.resolve()
            if not _inside(path, folders):
                raise PretrainedError(f"{name}: the weights file must be inside the data folders "
                                      f"({', '.join(map(str, folders))}); it resolves to {path}")
            if path.suffix.lower() not in SUFFIXES:
                raise PretrainedError(f"{name}: a weights file is one of {', '.join(SUFFIXES)}, got {path.suffix!r}")
            return path
    raise PretrainedError(f"no weights file {name} in the data folders ({', '.join(map(str, folders))})")


def local_files() -> list[str]:
    """The weights files in the data folders (at their top and in their FOLDER/), as the
    names `local_file` takes; torchvision's own downloads are offered as "torchvision"."""
    from models.pretrained import TORCHVISION as published

    downloads = {w.filename for w in published.values()}
    names = []
    for folder in data_search_path():
        for sub in (folder, folder / FOLDER):
            if sub.is_dir():
                names += [str(p.relative_to(folder)) for p in sorted(sub.iterdir())
                          if p.is_file() and p.suffix.lower() in SUFFIXES and p.name not in downloads]
    return list(dict.fromkeys(names))


def _sha256(path: Path) -> str:
    """The file's SHA-256, remembered by (path, size, mtime) so a large file is hashed once."""
    memo_path = cache_dir() / FOLDER / "sha256.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    stat = path.stat()
    key, stamp = str(path), [stat.st_size, stat.st_mtime_ns]
    if memo.get(key, {}).get("stamp") == stamp:
        return memo[key]["sha256"]
    sha256 = sha256_of(path)
    memo[key] = {"stamp": stamp, "sha256": sha256}
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo_path.with_name(f".{memo_path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(memo))
    os.replace(tmp, memo_path)
    return sha256


def published_file(architecture: str, *, download_missing: bool = True) -> Path:
    """torchvision's file for `architecture`: a verified copy in a data folder (FOLDER/ or
    the folder itself), else downloaded into the data root's FOLDER/."""
    from models.pretrained import published

    w = published(architecture)
    for folder in data_search_path():
        for path in (folder / FOLDER / w.filename, folder / w.filename):
            if path.is_file():
                if not _sha256(path.resolve()).startswith(w.sha256_prefix):
                    raise PretrainedError(f"{path} does not match torchvision's {w.filename} (its SHA-256 does "
                                          f"not begin {w.sha256_prefix}): delete it so that it is downloaded again")
                return path.resolve()
    if not download_missing:
        raise PretrainedError(f"torchvision's {w.filename} is not on this machine and downloading is off: "
                              f"place it in {data_root() / FOLDER}")
    try:
        return download(RemoteFile(w.filename, w.url, sha256_prefix=w.sha256_prefix), data_root() / FOLDER)
    except DownloadFailed as e:  # offline, or the server went away: one sentence, and what to do
        raise PretrainedError(f"could not download torchvision's {w.filename} from {w.url} ({e.reason}): "
                              f"connect this machine to the internet, or place the file in "
                              f"{data_root() / FOLDER}, and run again") from None
    except DatasetError as e:  # an interrupted or corrupt transfer: nothing was kept
        raise PretrainedError(str(e)) from None


def resolve(pretrained: str, architecture: str, *, download_missing: bool = True) -> Path:
    """The file a `pretrained` setting names."""
    if pretrained == TORCHVISION:
        return published_file(architecture, download_missing=download_missing)
    return local_file(pretrained)


def identity(pretrained: str, architecture: str) -> dict:
    """What makes the weights of a `pretrained` setting these weights, for a job's keys:
    torchvision's file name (its hash is in it), or a local file's SHA-256 (a file changed
    in place gives new keys)."""
    from models.pretrained import published

    if pretrained == TORCHVISION:
        return {"pretrained_file": published(architecture).filename}
    return {"pretrained_sha256": _sha256(local_file(pretrained))}


# -- reading it -----------------------------------------------------------------------------------
_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
                       "I8": "i1", "U8": "u1", "BOOL": "?"}
_MAX_HEADER = 100 << 20


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A .safetensors file's arrays: an 8-byte little-endian header length, a JSON header
    (name -> dtype, shape, byte offsets), the raw bytes. bf16 is widened to float32."""
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        if not 0 < size <= _MAX_HEADER:
            raise PretrainedError(f"{path} is not a safetensors file (header of {size} bytes)")
        try:
            header = json.loads(fh.read(size))
        except ValueError:
            raise PretrainedError(f"{path} is not a safetensors file (its header is not JSON)") from None
        data = fh.read()
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = data[begin:end]
        if entry["dtype"] == "BF16":
            array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        elif entry["dtype"] in _SAFETENSORS_DTYPES:
            array = np.frombuffer(raw, _SAFETENSORS_DTYPES[entry["dtype"]])
        else:
            raise PretrainedError(f"{path}: {name} has dtype {entry['dtype']}, which the lab does not read")
        out[name] = array.reshape(tuple(entry["shape"])).copy()
    return out


def write_safetensors(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """The inverse of read_safetensors (float32/float16/integer arrays)."""
    names = {np.dtype(v): k for k, v in _SAFETENSORS_DTYPES.items()}
    header, blobs, offset = {}, [], 0
    for name, array in arrays.items():
        array = np.asarray(array)  # (ascontiguousarray would make a scalar 1-d)
        blob = array.astype(array.dtype.newbyteorder("<")).tobytes(order="C")
        header[name] = {"dtype": names[array.dtype.newbyteorder("=")], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as fh:
        fh.write(len(head).to_bytes(8, "little") + head + b"".join(blobs))


def _converted(path: Path, sha256: str) -> Path:
    """The .npz of a torch.save'd state dict, made once by a PyTorch process."""
    target = cache_dir() / FOLDER / f"{sha256}.npz"
    if target.is_file():
        return target
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise PretrainedError(f"{path.name} is a PyTorch file, read only with torch.load(weights_only=True), and "
                              "PyTorch is not installed here: install it, or give the weights as .safetensors")
    target.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "engines.pretrained", "convert", str(path), str(target)],
                          capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S,
                          cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0 or not target.is_file():
        why = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise PretrainedError(f"{path.name} could not be read as a PyTorch state dict: {why}")
    return target


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """name -> array of a weights file (see the module doc for how each kind is read)."""
    if path.suffix.lower() == ".safetensors":
        return read_safetensors(path)
    with np.load(_converted(path, _sha256(path)), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def weights_for(pretrained: str, architecture: str, *, resolution: int, channels: int, num_classes: int,
                seed: int) -> tuple[dict[str, np.ndarray], str]:
    """The canonical weights a run starts from, and a sentence saying where they came
    from and what was changed (the result records it)."""
    from models import pretrained as mapping

    path = resolve(pretrained, architecture)
    try:
        state = read_state_dict(path)
        weights = mapping.from_torchvision(architecture, state)
        weights, notes = mapping.for_dataset(architecture, weights, resolution=resolution, channels=channels,
                                             num_classes=num_classes, seed=seed)
    except ValueError as e:
        raise PretrainedError(f"{path.name}: {e}") from None
    return weights, f"{path.name} (SHA-256 {_sha256(path)[:12]}): " + "; ".join(notes)


# -- the PyTorch process ---------------------------------------------------------------------------
def convert(source: str, target: str) -> None:
    """torch.load(weights_only=True) of a state dict -> an .npz of its arrays (atomically)."""
    import torch

    state = torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SystemExit("not a state dict (a mapping of names to tensors)")
    arrays = {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()}
    tmp = f"{target}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, target)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engines.pretrained", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="a torch.save'd state dict -> .npz (run in a PyTorch process)")
    c.add_argument("source")
    c.add_argument("target")
    f = sub.add_parser("fetch", help="download and verify torchvision's file for an architecture")
    f.add_argument("architecture")
    args = ap.parse_args(argv)
    if args.command == "convert":
        convert(args.source, args.target)
    else:
        try:
            print(published_file(args.architecture))
        except (PretrainedError, ValueError) as e:
            print(e, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
