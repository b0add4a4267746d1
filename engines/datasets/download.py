"""Streamed, checksummed downloads that never leave a file that looks valid but is not.

The bytes go to a temporary name beside the target; only when the size and the checksum
match is the file renamed into place (an atomic rename on one filesystem). An interrupted
or corrupt transfer leaves nothing under the target name. The checksum is the MD5 the
dataset catalogs publish, or the SHA-256 prefix torchvision's weight files carry in their
names (torch.hub's check).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engines.datasets.base import DatasetError

CHUNK = 1 << 20
# progress(done_bytes, total_bytes_or_None)
Progress = Callable[[int, "int | None"], None]


class DownloadFailed(DatasetError):
    """A file could not be fetched at all (no network, a refused or timed-out connection);
    nothing was kept. `url` and `reason` let the caller say it once, in its own words."""

    def __init__(self, message: str, *, url: str, filename: str, reason: str):
        super().__init__(message)
        self.url, self.filename, self.reason = url, filename, reason


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    url: str
    md5: str = ""
    size: int | None = None  # bytes, when known: shown as "download N MB" before fetching
    sha256_prefix: str = ""  # the first hex digits of the file's SHA-256 (torch.hub's convention)

    def __post_init__(self):
        if not (self.md5 or self.sha256_prefix):
            raise ValueError(f"{self.filename}: a download needs a checksum (md5 or sha256_prefix)")

    def mismatch(self, md5: str, sha256: str) -> str | None:
        """What differs from the published checksum, or None."""
        if self.md5 and md5 != self.md5:
            return f"MD5 {md5}, expected {self.md5}"
        if self.sha256_prefix and not sha256.startswith(self.sha256_prefix):
            return f"SHA-256 {sha256[:16]}..., expected it to begin {self.sha256_prefix}"
        return None


def _digest_of(path: Path, digest) -> str:
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def md5_of(path: Path) -> str:
    return _digest_of(path, hashlib.md5(usedforsecurity=False))


def sha256_of(path: Path) -> str:
    return _digest_of(path, hashlib.sha256())


def download(remote: RemoteFile, dest_dir: Path, *, progress: Progress | None = None,
             timeout: float = 60.0) -> Path:
    """Fetch `remote` into `dest_dir` and return the verified file's path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / remote.filename
    tmp = dest_dir / f".{remote.filename}.part-{os.getpid()}"
    digest, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    done = 0
    try:
        request = urllib.request.Request(remote.url, headers={"User-Agent": "framework-lab"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
            header = response.headers.get("Content-Length")
            total = int(header) if header and header.isdigit() else remote.size
            last_report = 0.0
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                out.write(block)
                digest.update(block)
                sha256.update(block)
                done += len(block)
                now = time.monotonic()
                if progress and now - last_report > 0.2:
                    progress(done, total)
                    last_report = now
        if progress:
            progress(done, total)
        if total is not None and done != total:
            raise DatasetError(
                f"download of {remote.filename} was interrupted: got {done:,} of {total:,} bytes. "
                "Nothing was kept; run again to retry.")
        wrong = remote.mismatch(digest.hexdigest(), sha256.hexdigest())
        if wrong:
            raise DatasetError(
                f"checksum mismatch for {remote.filename} from {remote.url}: {wrong}. The corrupt "
                "download was deleted; run again, or check the URL.")
        os.replace(tmp, target)
        return target
    except http.client.HTTPException as exc:  # IncompleteRead: the server closed early
        raise DatasetError(
            f"download of {remote.filename} was interrupted after {done:,} bytes ({exc!r}). "
            "Nothing was kept; run again to retry.") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", None) or exc)
        raise DownloadFailed(
            f"could not download {remote.filename} from {remote.url}: {reason}. Nothing was kept; check "
            "the network connection (or place the file in the data folder by hand) and run again.",
            url=remote.url, filename=remote.filename, reason=reason) from exc
    finally:
        tmp.unlink(missing_ok=True)
