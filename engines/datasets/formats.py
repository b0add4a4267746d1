"""Readers for the file formats the catalog uses. None of them can run code from a data file:
npz files are opened with allow_pickle=False, and CIFAR-10's pickled batches go through an
unpickler that accepts only plain containers and NumPy arrays."""
from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from engines.datasets.base import DatasetError

_FIX = "delete it so that it is downloaded again, or replace it with a good copy"


def read_npz(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    """Load the named arrays from an .npz, refusing pickled objects and naming bad files."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise DatasetError(
                    f"{path} lacks the arrays {missing} (it has {sorted(npz.files)}): it is not the "
                    f"expected dataset file; {_FIX}.")
            return {k: npz[k] for k in keys}
    except DatasetError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DatasetError(f"{path} is not a readable .npz file (truncated or corrupt: {exc}); {_FIX}.") from exc


def _open_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path} cannot be read (truncated or corrupt: {exc}); {_FIX}.") from exc


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), plain or gzipped, as uint8."""
    data = _open_maybe_gzip(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file; {_FIX}.")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path} is truncated (header); {_FIX}.")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise DatasetError(f"{path} holds {len(data) - header:,} bytes of data for shape {shape} "
                           f"({expected:,} expected): truncated or corrupt; {_FIX}.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """CIFAR-10's batches are pickles of dicts holding NumPy arrays, lists, str and bytes.
    Only the globals needed to rebuild an ndarray are allowed; anything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def load_restricted_pickle(data: bytes, origin: str) -> object:
    try:
        return _ArrayOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{origin} is not a valid CIFAR-10 batch ({exc}); {_FIX}.") from exc


def read_cifar10_archive(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read cifar-10-python.tar.gz straight from the archive (nothing is extracted to disk)."""
    batches: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar.getmembers():
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and (base.startswith("data_batch_") or base == "test_batch"):
                    batches[base] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{path} is not a readable CIFAR-10 archive ({exc}); {_FIX}.") from exc
    needed = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in needed if n not in batches]
    if missing:
        raise DatasetError(f"{path} lacks {missing}: not the CIFAR-10 python archive; {_FIX}.")

    def decode(name: str) -> tuple[np.ndarray, np.ndarray]:
        d = load_restricted_pickle(batches[name], f"{path}:{name}")
        if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
            raise DatasetError(f"{path}:{name} has no data/labels; {_FIX}.")
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x), np.asarray(d[b"labels"], dtype=np.int64)

    train = [decode(f"data_batch_{i}") for i in range(1, 6)]
    return {"train": (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])),
            "test": decode("test_batch")}
