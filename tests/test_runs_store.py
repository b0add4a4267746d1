"""ResultStore: results by key, comparisons, weights, and damaged entries dropped with a warning."""
import importlib.util
import time
from pathlib import Path

import pytest

from engines.runs.spec import RunSpec, comparison_key, environment_fingerprint
from engines.runs.store import ResultStore, validate_result

_qs = importlib.util.spec_from_file_location("queue_stress", Path(__file__).parent.parent / "benchmarks" / "queue_stress.py")
qs = importlib.util.module_from_spec(_qs)
_qs.loader.exec_module(qs)


def fake_result(spec: RunSpec, framework: str, seed: int, status="ok") -> tuple[str, dict]:
    job = spec.job_spec(framework, seed)
    key = spec.job_key(framework, seed, environment_fingerprint())
    return key, qs.FakeExecutor(status=status, sleep_s=0)(job, key=key)


def test_put_get_and_comparisons(tmp_path):
    store = ResultStore(tmp_path / "results")
    spec = qs.demo_spec(1).replace(frameworks=("pytorch", "jax"), repeats=2)
    keys = []
    for fw, seed in spec.tasks():
        key, result = fake_result(spec, fw, seed)
        store.put(key, result)
        keys.append(key)
    time.sleep(0.01)
    other_key, other = fake_result(qs.demo_spec(2), "pytorch", 0, status="oom")
    store.put(other_key, other)

    got = store.get(keys[0])
    assert got["key"] == keys[0] and got["created_at"] > 0 and validate_result(got) == []
    assert got["comparison_key"] == comparison_key(spec.to_dict())
    assert len(store.list_results()) == 5
    newest, first = store.comparisons()
    assert newest["n_results"] == 1 and newest["statuses"] == {"oom": 1}
    assert first["frameworks"] == ["pytorch", "jax"] and first["seeds"] == [0, 1]
    assert (first["dataset"], first["resolution"], first["architecture"]) == ("synthetic", 32, "cifar_cnn")
    assert len(store.comparison_results(first["comparison_key"])) == 4
    assert store.delete_comparison(first["comparison_key"]) == 4
    assert store.get(keys[1]) is None and store.delete(other_key) and not store.delete(other_key)


def test_invalid_result_is_refused_on_put(tmp_path):
    store = ResultStore(tmp_path)
    with pytest.raises(ValueError, match="framework"):
        store.put("k", {"schema": 1, "framework": "caffe", "status": "ok", "spec": {}})


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_schema"])
def test_damaged_entry_is_dropped_with_a_warning(tmp_path, damage):
    store = ResultStore(tmp_path)
    key, result = fake_result(qs.demo_spec(1), "pytorch", 0)
    store.put(key, result)
    path = qs.value_file_of(store, key)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif damage == "garbage":
        path.write_bytes(b"\xff\xfe\x00garbage")
    else:
        path.write_text(path.read_text().replace('"schema": 1', '"schema": 99'))
    with pytest.warns(RuntimeWarning, match="dropped the cache entry"):
        assert store.get(key) is None
    assert store.get(key) is None  # dropped: no second warning, simply absent
    assert store.list_results() == []


def test_training_entry_needs_its_weight_file(tmp_path):
    store = ResultStore(tmp_path)
    path = Path(store.weights_path("tk", "jax") + ".msgpack")
    path.write_bytes(b"w")
    store.put_training("tk", weights_file=str(path), train={"epochs": []}, result_key="r1")
    assert store.get_training("tk")["result_key"] == "r1"
    path.unlink()
    with pytest.warns(RuntimeWarning, match="is gone"):
        assert store.get_training("tk") is None
