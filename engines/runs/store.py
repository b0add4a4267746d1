"""The result store: RunResults as plain JSON files, trained weights beside them, and an
SQLite index over both that the lists read.

Under its folder (default `cache_dir()/store`), nothing ever unpickled:

  results/<k[:2]>/<key>.json       one RunResult (schema 1) per file, written atomically
  comparisons/<c[:2]>/<c>.json     one comparison: the request (minus frameworks, seed and
                                   repeats), when it was first recorded, its results' keys
  weights/<train_key>-<framework>* the weights of one finished training, in the engine's
                                   own format (one file, or a TensorFlow checkpoint's few)
  weights/<train_key>-<framework>.json
                                   that training: its files' SHA-256, its "train" section
                                   and the result that trained it
  index.sqlite3                    (WAL) results, comparisons, members, trainings

The files are the truth and the index is derived from them: `reindex()` rebuilds it, and
runs by itself when the index is missing or of another version. The lists (comparisons,
the runs table) read the index only; a page reads whole results only for what it shows.

A result belongs to every comparison whose request produced it: PyTorch's result of a
request with XLA autotune level 2 is the same job, and the same file, as that of a request
with XLA's default level (the job keys are equal), and it is a member of both comparisons.
Deleting a comparison removes its memberships and the result files no other comparison
holds.

A damaged or vanished file is one dropped entry: a warning, the entry forgotten, the job
computed again. Weights are checked against their SHA-256 before they are used; a
mismatch drops the training and its files (the task trains again and says so).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import sqlite3
import time
import warnings
from pathlib import Path

from engines.frameworks import FRAMEWORKS
from engines.paths import cache_dir
from engines.runs.result import ResultError, RunResult, Train, clean
from engines.runs.spec import REQUEST_ONLY_FIELDS, RunSpec, comparison_key

log = logging.getLogger(__name__)

INDEX_VERSION = "1"  # a change of the tables below: the index is rebuilt from the files
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY, framework TEXT NOT NULL, seed INTEGER, status TEXT NOT NULL, message TEXT,
    created_at REAL NOT NULL, dataset TEXT, resolution INTEGER, architecture TEXT,
    spec TEXT NOT NULL,     -- the job, as JSON
    summary TEXT NOT NULL   -- RunResult.summary(), the runs table's row (a new figure needs no migration)
);
CREATE TABLE IF NOT EXISTS comparisons (
    comparison_key TEXT PRIMARY KEY, spec TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS members (
    comparison_key TEXT NOT NULL, result_key TEXT NOT NULL, PRIMARY KEY (comparison_key, result_key));
CREATE INDEX IF NOT EXISTS members_result ON members(result_key);
CREATE TABLE IF NOT EXISTS trainings (
    train_key TEXT PRIMARY KEY, framework TEXT NOT NULL, weights_file TEXT NOT NULL, sha256 TEXT NOT NULL,
    train TEXT, result_key TEXT, created_at REAL NOT NULL);
"""
_TABLES = ("results", "comparisons", "members", "trainings")


class CorruptEntry(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Training:
    """A finished training whose weights a job that differs only in inference settings
    loads instead of training again."""

    train_key: str
    framework: str
    weights_file: str  # what the engine's load() takes (a file, or a checkpoint's prefix)
    sha256: str
    train: Train | None
    result_key: str | None
    created_at: float


def comparison_spec(request: RunSpec | dict) -> dict:
    """What names a comparison: the request minus its frameworks, seed and repeats."""
    d = request.to_dict() if isinstance(request, RunSpec) else dict(request)
    return {k: v for k, v in d.items() if k not in REQUEST_ONLY_FIELDS}


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one


def damaged_database(e: sqlite3.DatabaseError) -> bool:
    """SQLite's words for a file that is not a (whole) database; "locked" and the like
    are not damage."""
    text = str(e)
    return "not a database" in text or "malformed" in text


def connect(db: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit: `transaction`), rows by
    name; a minute's patience with other processes' writes."""
    con = sqlite3.connect(db, timeout=60, isolation_level=None)
    con.row_factory = sqlite3.Row
    return con


@contextlib.contextmanager
def transaction(db: Path, write: bool = True):
    """One transaction on `db`, for the result index and the queue alike; IMMEDIATE for
    writes, so that a read-then-write is atomic and writers (of the comparison files too,
    rewritten inside it) are ordered."""
    con = connect(db)
    try:
        con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        yield con
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    finally:
        con.close()


def set_aside(db: Path, why: Exception) -> Path:
    """Move a damaged SQLite file (and its WAL) out of the way, with a warning naming it;
    the caller makes a fresh one."""
    aside = db.with_name(f"{db.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.replace(db, aside)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    msg = f"{db} was damaged ({why}); it was moved to {aside.name} and a new one made"
    log.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return aside


def _check_key(key: str, what: str = "key") -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(f"{what} {key!r} is not a store key (letters, digits, '_', '.', '-'; at most 128)")
    return key


class ResultStore:
    def __init__(self, path=None):
        self.path = Path(path) if path is not None else cache_dir() / "store"
        self.path.mkdir(parents=True, exist_ok=True)
        self.index_path = self.path / "index.sqlite3"
        self._open_index()

    # -- results ------------------------------------------------------------------------
    def result_path(self, key: str) -> Path:
        return self.path / "results" / key[:2] / f"{_check_key(key)}.json"

    def get(self, key: str) -> RunResult | None:
        """The result stored under `key`; None when there is none, or when its file is
        damaged or gone (then dropped, with a warning, and computed again)."""
        try:
            return self._read(key)
        except CorruptEntry as e:
            self._drop_result(key, e)
            return None

    def put(self, key: str, result: RunResult | dict, comparison: RunSpec | dict | None = None) -> RunResult:
        """Store `result` under `key` as a member of `comparison` (the request that
        produced it; by default the result's own job as the request). Returns the stored
        result (with its key and created_at)."""
        result = result if isinstance(result, RunResult) else RunResult.from_dict(result)
        problems = result.problems()
        if problems:
            raise ValueError(f"not a valid RunResult for {key}: {'; '.join(problems)}")
        result = dataclasses.replace(result, key=_check_key(key), created_at=result.created_at or time.time())
        _write_atomic(self.result_path(key), result.to_json())
        with self._tx() as con:
            self._index_result(con, result)
            self._add_member(con, comparison if comparison is not None else result.spec, key)
        return result

    def add_to_comparison(self, comparison: RunSpec | dict, key: str) -> str:
        """Record that the stored result `key` answers `comparison` too; its key."""
        with self._tx() as con:
            return self._add_member(con, comparison, key)

    def delete(self, key: str) -> bool:
        """Remove a result everywhere: its file, its row and its memberships."""
        with self._tx() as con:
            found = con.execute("SELECT 1 FROM results WHERE key=?", (key,)).fetchone() is not None
            self._forget(con, key)
        with contextlib.suppress(FileNotFoundError):
            self.result_path(key).unlink()
            found = True
        return found

    def results(self, keys) -> list[RunResult]:
        """The results of `keys` that are there, in that order."""
        return [r for r in (self.get(k) for k in keys) if r is not None]

    def list_results(self) -> list[RunResult]:
        """Every stored result (reads every file: the lists use runs() and comparisons())."""
        with self._tx(write=False) as con:
            keys = [row[0] for row in con.execute("SELECT key FROM results ORDER BY created_at, rowid")]
        return self.results(keys)

    def runs(self) -> list[dict]:
        """One row per stored result, newest first, from the index alone: its
        RunResult.summary(), its job's "spec" and the "comparison_keys" it belongs to."""
        with self._tx(write=False) as con:
            rows = con.execute("SELECT r.*, (SELECT group_concat(comparison_key) FROM members m "
                               "WHERE m.result_key=r.key) AS comparison_keys FROM results r "
                               "ORDER BY r.created_at DESC, r.rowid DESC").fetchall()
        return [{**json.loads(row["summary"]), "spec": json.loads(row["spec"]),
                 "comparison_keys": sorted(row["comparison_keys"].split(",")) if row["comparison_keys"] else []}
                for row in rows]

    # -- comparisons --------------------------------------------------------------------
    def comparison_results(self, comparison_key: str) -> list[RunResult]:
        """The comparison's results, repeat by repeat in the table's framework order."""
        with self._tx(write=False) as con:
            keys = [row[0] for row in con.execute("SELECT result_key FROM members WHERE comparison_key=?",
                                                  (comparison_key,))]
        order = {name: i for i, name in enumerate(FRAMEWORKS)}
        return sorted(self.results(keys), key=lambda r: (r.seed, order.get(r.framework, len(order))))

    def comparisons(self) -> list[dict]:
        """One summary per comparison, newest result first (then the latest stored):
        comparison_key, dataset, resolution, architecture, frameworks, seeds, created_at,
        n_results, statuses (count per status) and spec (the request, as compared)."""
        with self._tx(write=False) as con:
            heads = con.execute(
                "SELECT c.comparison_key, c.spec, MAX(r.created_at) AS created_at, MAX(r.rowid) AS latest "
                "FROM comparisons c JOIN members m ON m.comparison_key=c.comparison_key "
                "JOIN results r ON r.key=m.result_key GROUP BY c.comparison_key "
                "ORDER BY created_at DESC, latest DESC").fetchall()
            rows = con.execute("SELECT m.comparison_key, r.framework, r.seed, r.status FROM members m "
                               "JOIN results r ON r.key=m.result_key").fetchall()
        members: dict[str, list] = {}
        for row in rows:
            members.setdefault(row["comparison_key"], []).append(row)
        out = []
        for head in heads:
            spec, mine = json.loads(head["spec"]), members.get(head["comparison_key"], [])
            statuses: dict[str, int] = {}
            for row in mine:
                statuses[row["status"]] = statuses.get(row["status"], 0) + 1
            out.append({"comparison_key": head["comparison_key"], "dataset": spec.get("dataset"),
                        "resolution": spec.get("resolution"), "architecture": spec.get("architecture"),
                        "frameworks": [f for f in FRAMEWORKS if any(row["framework"] == f for row in mine)],
                        "seeds": sorted({row["seed"] for row in mine}), "created_at": head["created_at"],
                        "n_results": len(mine), "statuses": statuses, "spec": spec})
        return out

    def delete_comparison(self, comparison_key: str) -> int:
        """Remove a comparison: its memberships, and the result files no other comparison
        holds. Returns how many results were removed."""
        with self._tx() as con:
            keys = [row[0] for row in con.execute("SELECT result_key FROM members WHERE comparison_key=?",
                                                  (comparison_key,))]
            con.execute("DELETE FROM members WHERE comparison_key=?", (comparison_key,))
            self._drop_comparison_if_empty(con, comparison_key)
            orphans = [k for k in keys
                       if con.execute("SELECT 1 FROM members WHERE result_key=?", (k,)).fetchone() is None]
            for k in orphans:
                con.execute("DELETE FROM results WHERE key=?", (k,))
        for k in orphans:
            with contextlib.suppress(FileNotFoundError):
                self.result_path(k).unlink()
        return len(orphans)

    # -- trained weights ----------------------------------------------------------------
    def weights_path(self, train_key: str, framework: str) -> str:
        """Where a task saves its weights (the engine adds its format's suffix)."""
        folder = self.path / "weights"
        folder.mkdir(exist_ok=True)
        return str(folder / f"{_check_key(train_key, 'train key')}-{framework}")

    def put_training(self, train_key: str, *, framework: str, weights_file: str, train: Train | dict | None,
                     result_key: str | None) -> Training:
        """Record a finished training: the SHA-256 of its weight files, its "train"
        section and the result that trained it."""
        train = Train.from_dict(train) if isinstance(train, dict) else train
        training = Training(train_key=train_key, framework=framework, weights_file=str(weights_file),
                            sha256=self._weights_digest(train_key, framework), train=train,
                            result_key=result_key, created_at=time.time())
        _write_atomic(self._training_path(train_key, framework), json.dumps(self._training_record(training)))
        with self._tx() as con:
            self._index_training(con, training)
        return training

    def get_training(self, train_key: str) -> tuple[Training | None, str | None]:
        """(the training, None) when its weights are there and match their SHA-256, else
        (None, why it was dropped) for a training that was recorded, or (None, None)."""
        with self._tx(write=False) as con:
            row = con.execute("SELECT * FROM trainings WHERE train_key=?", (train_key,)).fetchone()
        if row is None:
            return None, None
        try:
            training = self._training_from_row(row)
            digest = self._weights_digest(train_key, training.framework)
        except (CorruptEntry, ValueError) as e:
            return None, self._drop_training(train_key, row["framework"], e)
        if digest != training.sha256:
            why = CorruptEntry(f"its weight files do not match their SHA-256 ({digest[:12]}… instead of "
                               f"{training.sha256[:12]}…)")
            return None, self._drop_training(train_key, training.framework, why)
        return training, None

    def drop_training(self, train_key: str, framework: str, why: Exception) -> str:
        """Forget a training and delete its weight files (weights that fail to load, say);
        returns the sentence for the result's message."""
        return self._drop_training(train_key, framework, why)

    # -- the index ----------------------------------------------------------------------
    def reindex(self) -> dict:
        """Rebuild the index from the files; returns how many of each it found. A result
        file that is not a usable RunResult is dropped (with a warning)."""
        with self._tx() as con:
            return self._rebuild(con)

    def _rebuild(self, con) -> dict:
        for table in _TABLES:
            con.execute(f"DELETE FROM {table}")
        counts = self._reindex(con)
        con.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('version', ?)", (INDEX_VERSION,))
        return counts

    def _reindex(self, con) -> dict:
        counts = {"results": 0, "comparisons": 0, "trainings": 0}
        for path in sorted((self.path / "results").glob("*/*.json")):
            try:
                result = self._parse(path.read_text(encoding="utf-8"), path.stem)
            except (OSError, CorruptEntry) as e:
                self._warn(f"results/{path.parent.name}/{path.name}", e)
                path.unlink(missing_ok=True)
                continue
            self._index_result(con, result)
            counts["results"] += 1
        for path in sorted((self.path / "comparisons").glob("*/*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                ck, spec, created = record["comparison_key"], record["spec"], float(record["created_at"])
                keys = [k for k in record["results"] if isinstance(k, str)]
            except (OSError, ValueError, KeyError, TypeError) as e:
                self._warn(f"comparisons/{path.name}", e)
                path.unlink(missing_ok=True)
                continue
            con.execute("INSERT OR REPLACE INTO comparisons VALUES (?,?,?)", (ck, json.dumps(spec), created))
            con.executemany("INSERT OR IGNORE INTO members SELECT ?, key FROM results WHERE key=?",
                            [(ck, k) for k in keys])
            self._drop_comparison_if_empty(con, ck, write_file=False)
            counts["comparisons"] += 1
        for path in sorted((self.path / "weights").glob("*.json")):
            try:
                training = self._training_from_record(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError) as e:
                self._warn(f"weights/{path.name}", e)
                path.unlink(missing_ok=True)
                continue
            self._index_training(con, training)
            counts["trainings"] += 1
        return counts

    def _open_index(self) -> None:
        # Several processes may open the store at once; the first to take the write lock
        # builds the index, the others find it built (the version row is written last).
        for attempt in range(50):
            try:
                con = self._connect()
                try:
                    con.execute("PRAGMA journal_mode=WAL")  # readers go on while a writer writes
                finally:
                    con.close()
                with self._tx() as con:
                    for statement in _SCHEMA_SQL.split(";"):
                        if statement.strip():
                            con.execute(statement)
                    row = con.execute("SELECT value FROM meta WHERE name='version'").fetchone()
                    if row is None or row[0] != INDEX_VERSION:
                        counts = self._rebuild(con)
                        if any(counts.values()):
                            log.warning("rebuilt the result index of %s from its files: %s", self.path, counts)
                return
            except sqlite3.DatabaseError as e:
                if damaged_database(e):  # the index is derived data: set it aside, rebuild from the files
                    set_aside(self.index_path, e)
                    continue
                if "locked" not in str(e) or attempt == 49:
                    raise
                time.sleep(0.1)

    def _connect(self) -> sqlite3.Connection:
        return connect(self.index_path)

    def _tx(self, write: bool = True):
        """One transaction on the index; IMMEDIATE for writes, which also orders the
        writers of the comparison files (they are rewritten inside it)."""
        return transaction(self.index_path, write)

    def _index_result(self, con, r: RunResult) -> None:
        spec = r.spec or {}
        con.execute("INSERT OR REPLACE INTO results (key, framework, seed, status, message, created_at, dataset, "
                    "resolution, architecture, spec, summary) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (r.key, r.framework, r.seed, r.status, r.message, r.created_at, spec.get("dataset"),
                     spec.get("resolution"), spec.get("architecture"), json.dumps(spec, default=str),
                     json.dumps(clean(r.summary()), default=str)))

    def _add_member(self, con, comparison: RunSpec | dict, key: str) -> str:
        spec = comparison_spec(comparison)
        ck = comparison_key(spec)
        con.execute("INSERT OR IGNORE INTO comparisons (comparison_key, spec, created_at) VALUES (?,?,?)",
                    (ck, json.dumps(spec, default=str), time.time()))
        con.execute("INSERT OR IGNORE INTO members (comparison_key, result_key) VALUES (?,?)", (ck, key))
        self._write_comparison(con, ck)
        return ck

    def _write_comparison(self, con, ck: str) -> None:
        row = con.execute("SELECT spec, created_at FROM comparisons WHERE comparison_key=?", (ck,)).fetchone()
        keys = [r[0] for r in con.execute("SELECT result_key FROM members WHERE comparison_key=? ORDER BY rowid",
                                          (ck,))]
        _write_atomic(self._comparison_path(ck), json.dumps(
            {"comparison_key": ck, "spec": json.loads(row["spec"]), "created_at": row["created_at"],
             "results": keys}))

    def _drop_comparison_if_empty(self, con, ck: str, write_file: bool = True) -> None:
        if con.execute("SELECT 1 FROM members WHERE comparison_key=?", (ck,)).fetchone() is None:
            con.execute("DELETE FROM comparisons WHERE comparison_key=?", (ck,))
            self._comparison_path(ck).unlink(missing_ok=True)
        elif write_file:
            self._write_comparison(con, ck)

    def _forget(self, con, key: str) -> None:
        """A result out of the index and out of every comparison that held it."""
        held = [row[0] for row in con.execute("SELECT comparison_key FROM members WHERE result_key=?", (key,))]
        con.execute("DELETE FROM members WHERE result_key=?", (key,))
        con.execute("DELETE FROM results WHERE key=?", (key,))
        for ck in held:
            self._drop_comparison_if_empty(con, ck)

    def _comparison_path(self, ck: str) -> Path:
        return self.path / "comparisons" / ck[:2] / f"{ck}.json"

    # -- reading and dropping -------------------------------------------------------------
    def _read(self, key: str) -> RunResult | None:
        path = self.result_path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            with self._tx(write=False) as con:
                indexed = con.execute("SELECT 1 FROM results WHERE key=?", (key,)).fetchone() is not None
            if indexed:
                raise CorruptEntry("its file is gone") from None
            return None
        except (OSError, UnicodeDecodeError) as e:
            raise CorruptEntry(f"unreadable: {type(e).__name__}: {e}") from None
        return self._parse(text, key)

    @staticmethod
    def _parse(text: str, key: str) -> RunResult:
        try:
            result = RunResult.parse(json.loads(text))
        except json.JSONDecodeError as e:
            raise CorruptEntry(f"not valid JSON ({e})") from None
        except ResultError as e:
            raise CorruptEntry(str(e)) from None
        if result.key != key:
            raise CorruptEntry(f"it is stored as {key} but says key {result.key!r}")
        return result

    def _drop_result(self, key: str, why: Exception) -> None:
        self._warn(f"results/{key[:2]}/{key}.json", why)
        with self._tx() as con:
            self._forget(con, key)
        with contextlib.suppress(OSError):
            self.result_path(key).unlink(missing_ok=True)

    def _warn(self, name: str, why: Exception) -> None:
        msg = f"dropped the cache entry {name} in {self.path}: {why}; it will be computed again"
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)

    # -- trainings ------------------------------------------------------------------------
    def _training_path(self, train_key: str, framework: str) -> Path:
        return Path(self.weights_path(train_key, framework) + ".json")

    def _weight_files(self, train_key: str, framework: str) -> list[Path]:
        stem = f"{train_key}-{framework}"
        return sorted(p for p in (self.path / "weights").glob(f"{stem}*")
                      if p.name != f"{stem}.json" and not p.name.startswith("."))

    def _weights_digest(self, train_key: str, framework: str) -> str:
        """SHA-256 over the training's weight files (names and bytes, in name order)."""
        files = self._weight_files(train_key, framework)
        if not files:
            raise CorruptEntry(f"the weight file of {train_key}-{framework} is gone")
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.name.encode() + b"\0")
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()

    @staticmethod
    def _training_record(t: Training) -> dict:
        return {"train_key": t.train_key, "framework": t.framework, "weights_file": Path(t.weights_file).name,
                "sha256": t.sha256, "train": t.train.to_dict() if t.train else None,
                "result_key": t.result_key, "created_at": t.created_at}

    def _training_from_record(self, d: dict) -> Training:
        # The file's name is kept, its folder is this store's: a cache folder can move.
        return Training(train_key=_check_key(d["train_key"], "train key"), framework=d["framework"],
                        weights_file=str(self.path / "weights" / Path(d["weights_file"]).name), sha256=d["sha256"],
                        train=Train.from_dict(d["train"]) if d.get("train") else None,
                        result_key=d.get("result_key"), created_at=float(d["created_at"]))

    def _training_from_row(self, row) -> Training:
        record = dict(row)
        record["train"] = json.loads(record["train"]) if record["train"] else None
        return self._training_from_record(record)

    def _index_training(self, con, t: Training) -> None:
        record = self._training_record(t)
        con.execute("INSERT OR REPLACE INTO trainings VALUES (?,?,?,?,?,?,?)",
                    (t.train_key, t.framework, record["weights_file"], t.sha256,
                     json.dumps(record["train"]) if record["train"] else None, t.result_key, t.created_at))

    def _drop_training(self, train_key: str, framework: str, why: Exception) -> str:
        self._warn(f"weights/{train_key}-{framework}", why)
        with self._tx() as con:
            con.execute("DELETE FROM trainings WHERE train_key=?", (train_key,))
        for path in self._weight_files(train_key, framework):
            path.unlink(missing_ok=True)
        self._training_path(train_key, framework).unlink(missing_ok=True)
        return f"the cached weights were dropped ({why}) and trained again"
