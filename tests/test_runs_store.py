"""ResultStore: results by key as JSON files, comparisons beside them, an index that can be
rebuilt, weights checked against their SHA-256, damaged entries dropped with a warning."""
import json
from pathlib import Path

import pytest
import queue_fakes as qs

from engines.runs.result import RunResult
from engines.runs.spec import environment_fingerprint
from engines.runs.store import ResultStore


def fake_result(request, framework: str, seed: int, status="ok") -> tuple[str, RunResult]:
    job = request.job(framework, seed)
    key = job.job_key(environment_fingerprint(framework))
    return key, qs.FakeExecutor(status=status, sleep_s=0)(job, key=key)


def test_put_get_and_comparisons(tmp_path):
    store = ResultStore(tmp_path / "results")
    spec = qs.demo_spec(1).replace(frameworks=("pytorch", "jax"), repeats=2)
    keys = []
    for fw, seed in spec.tasks():
        key, result = fake_result(spec, fw, seed)
        store.put(key, result, comparison=spec)
        keys.append(key)
    other_key, other = fake_result(qs.demo_spec(2), "pytorch", 0, status="oom")
    store.put(other_key, other)  # stored later: the newest comparison (no sleep needed)

    got = store.get(keys[0])
    assert got.key == keys[0] and got.created_at > 0 and got.problems() == []
    assert store.result_path(keys[0]).is_file()
    assert json.loads(store.result_path(keys[0]).read_text())["key"] == keys[0]  # plain JSON, readable by anything
    assert len(store.list_results()) == 5
    newest, first = store.comparisons()
    assert newest["n_results"] == 1 and newest["statuses"] == {"oom": 1}
    assert first["comparison_key"] == spec.comparison_key()
    assert first["frameworks"] == ["pytorch", "jax"] and first["seeds"] == [0, 1]
    assert (first["dataset"], first["resolution"], first["architecture"]) == ("synthetic", 32, "cifar_cnn")
    results = store.comparison_results(first["comparison_key"])
    assert [(r.seed, r.framework) for r in results] == [(0, "pytorch"), (0, "jax"), (1, "pytorch"), (1, "jax")]
    runs = store.runs()
    assert len(runs) == 5 and runs[0]["key"] == other_key and runs[-1]["comparison_keys"] == [spec.comparison_key()]
    assert store.delete_comparison(first["comparison_key"]) == 4
    assert store.get(keys[1]) is None and store.delete(other_key) and not store.delete(other_key)
    assert store.comparisons() == [] and store.runs() == []


def test_a_shared_result_belongs_to_both_comparisons_and_outlives_one(tmp_path):
    store = ResultStore(tmp_path)
    plain = qs.demo_spec(1).replace(frameworks=("pytorch", "jax"))
    tuned = plain.replace(xla_autotune=2)
    key, result = fake_result(plain, "pytorch", 0)
    assert fake_result(tuned, "pytorch", 0)[0] == key  # the PyTorch job is the same
    store.put(key, result, comparison=plain)
    store.add_to_comparison(tuned, key)
    assert {c["comparison_key"] for c in store.comparisons()} == {plain.comparison_key(), tuned.comparison_key()}
    assert store.runs()[0]["comparison_keys"] == sorted([plain.comparison_key(), tuned.comparison_key()])
    assert store.delete_comparison(tuned.comparison_key()) == 0  # the other comparison still holds it
    assert store.get(key) is not None
    assert store.delete_comparison(plain.comparison_key()) == 1 and store.get(key) is None


def test_invalid_result_is_refused_on_put(tmp_path):
    store = ResultStore(tmp_path)
    with pytest.raises(ValueError, match="framework"):
        store.put("k", {"schema": 1, "framework": "caffe", "status": "ok", "spec": {}})
    with pytest.raises(ValueError, match="store key"):
        store.put("../escape", fake_result(qs.demo_spec(1), "pytorch", 0)[1])


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_schema", "vanished"])
def test_damaged_entry_is_dropped_with_a_warning(tmp_path, damage):
    store = ResultStore(tmp_path)
    key, result = fake_result(qs.demo_spec(1), "pytorch", 0)
    store.put(key, result)
    path = store.result_path(key)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif damage == "garbage":
        path.write_bytes(b"\xff\xfe\x00garbage")
    elif damage == "wrong_schema":
        path.write_text(path.read_text().replace('"schema": 1', '"schema": 99'))
    else:
        path.unlink()
    with pytest.warns(RuntimeWarning, match="dropped the cache entry"):
        assert store.get(key) is None
    assert store.get(key) is None  # dropped: no second warning, simply absent
    assert store.list_results() == [] and store.comparisons() == [] and store.runs() == []


def test_the_index_is_rebuilt_from_the_files(tmp_path):
    store = ResultStore(tmp_path)
    request = qs.demo_spec(1).replace(frameworks=("pytorch", "jax"), xla_autotune=3)
    for fw, seed in request.tasks():
        store.put(*fake_result(request, fw, seed), comparison=request)
    weights = Path(store.weights_path("tk", "jax") + ".msgpack")
    weights.write_bytes(b"w")
    store.put_training("tk", framework="jax", weights_file=str(weights), train={"epochs": []}, result_key="r1")
    comparisons, runs = store.comparisons(), store.runs()

    store.index_path.unlink()  # gone: the next store rebuilds it by itself
    again = ResultStore(tmp_path)
    assert again.comparisons() == comparisons and again.runs() == runs
    assert again.get_training("tk")[0].result_key == "r1"
    assert again.reindex() == {"results": 2, "comparisons": 1, "trainings": 1}
    assert again.comparisons()[0]["spec"]["xla_autotune"] == 3  # the request, not the PyTorch job


def test_training_entry_needs_its_weight_file(tmp_path):
    store = ResultStore(tmp_path)
    path = Path(store.weights_path("tk", "jax") + ".msgpack")
    path.write_bytes(b"w")
    store.put_training("tk", framework="jax", weights_file=str(path), train={"epochs": []}, result_key="r1")
    training, dropped = store.get_training("tk")
    assert training.result_key == "r1" and training.weights_file == str(path) and dropped is None
    path.unlink()
    with pytest.warns(RuntimeWarning, match="is gone"):
        training, dropped = store.get_training("tk")
    assert training is None and "is gone" in dropped
    assert store.get_training("tk") == (None, None)


def test_weights_that_changed_since_training_are_dropped(tmp_path):
    store = ResultStore(tmp_path)
    prefix = store.weights_path("tk", "tensorflow") + ".ckpt"  # a TensorFlow checkpoint: two files
    Path(prefix + ".index").write_bytes(b"index")
    Path(prefix + ".data-00000-of-00001").write_bytes(b"data")
    store.put_training("tk", framework="tensorflow", weights_file=prefix, train=None, result_key="r1")
    assert store.get_training("tk")[0].weights_file == prefix
    Path(prefix + ".data-00000-of-00001").write_bytes(b"tampered")
    with pytest.warns(RuntimeWarning, match="SHA-256"):
        training, dropped = store.get_training("tk")
    assert training is None and "SHA-256" in dropped and "trained again" in dropped
    assert not list(Path(prefix).parent.glob("tk-tensorflow*"))  # the files went with the entry
