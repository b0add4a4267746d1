"""RunSpec: a message per bad field, stable keys, and the keys that group results."""
import pytest

from engines.runs.spec import RunSpec, SpecError, comparison_key, environment_fingerprint, job_key, spec_key, train_key

SYN = {"train": 32, "val": 8, "test": 8, "classes": 3}


def small(**changes):
    base = dict(dataset="synthetic", resolution=32, architecture="cifar_cnn", frameworks=("pytorch", "jax"),
                batch_sizes=(1, 8), dataset_options=SYN)
    base.update(changes)
    return RunSpec(**base)


def problems(**changes) -> dict:
    with pytest.raises(SpecError) as exc:
        small(**changes)
    return exc.value.problems


def test_every_bad_field_gets_its_own_message():
    p = problems(dataset="nope", frameworks=("torch",), batch_sizes=(0, 5), epochs=0, repeats=0, seed=-1,
                 precision="fp8", pipeline="magic", optimizer="lbfgs", xla_autotune=9, learning_rate=-1.0,
                 warmup_iters=-1, measure_iters=0, train_batch_size=0, compile="yes")
    assert set(p) == {"dataset", "frameworks", "batch_sizes", "epochs", "repeats", "seed", "precision", "pipeline",
                      "optimizer", "xla_autotune", "learning_rate", "warmup_iters", "measure_iters",
                      "train_batch_size", "compile"}
    assert "unknown dataset 'nope'" in p["dataset"]
    assert "choose from keras, tensorflow, pytorch, jax" in p["frameworks"]
    assert "1..65536" in p["batch_sizes"] and "[0, 5]" in p["batch_sizes"]
    assert "fp8" in p["precision"]


def test_absurd_batch_size_unknown_architecture_and_bad_resolution():
    assert "65536" in problems(batch_sizes=(1, 10**7))["batch_sizes"]
    assert "architecture" in problems(architecture="alexnet")
    assert "3 px" in problems(resolution=3)["resolution"]
    # vit_b_16 takes 224 px patches of 16: 32 px is a resolution the architecture cannot take
    assert "resolution" in problems(architecture="vit_b_16", resolution=20)


def test_toggles_that_do_not_apply_to_the_chosen_frameworks():
    p = problems(frameworks=("jax",), cudnn_benchmark=True, channels_last=True)
    assert p["cudnn_benchmark"] == "applies to pytorch only, which is not chosen"
    assert "channels_last" in p
    assert "none of which is chosen" in problems(frameworks=("pytorch",), xla_autotune=2)["xla_autotune"]
    assert "adamw" in problems(weight_decay=0.01)["weight_decay"]
    assert "dataset_options" in problems(dataset_options={"colour": 1})


def test_unknown_field_in_a_dict_is_named():
    with pytest.raises(SpecError) as exc:
        RunSpec.from_dict({"dataset": "synthetic", "epochz": 3})
    assert "epochz" in exc.value.problems


def test_equal_requests_hash_equal_and_defaults_are_resolved():
    a = small(batch_sizes=(8, 1, 8), frameworks="pytorch,jax", learning_rate=None)
    b = small(batch_sizes=[1, 8], frameworks=["pytorch", "jax"], learning_rate=a.learning_rate,
              train_batch_size=a.train_batch_size)
    assert a == b and hash(a) == hash(b)
    assert a.batch_sizes == (1, 8) and a.learning_rate > 0 and a.train_batch_size > 0
    assert small(learning_rate=1).learning_rate == 1.0 and isinstance(small(learning_rate=1).learning_rate, float)
    assert RunSpec.from_dict(a.to_dict()) == a


def test_keys_are_stable_and_separate_what_they_should():
    fp = environment_fingerprint()
    assert fp == environment_fingerprint() and len(fp) == 16
    s = small(repeats=2)
    assert s.tasks() == [("pytorch", 0), ("jax", 0), ("pytorch", 1), ("jax", 1)]
    keys = {s.job_key(fw, seed, fp) for fw, seed in s.tasks()}
    assert len(keys) == 4
    assert s.job_key("pytorch", 0, fp) == job_key(s.job_spec("pytorch", 0), fp)
    assert s.job_key("pytorch", 0, fp) != s.job_key("pytorch", 0, "other-machine")
    # one comparison: every framework and seed of a spec; a different epoch count is another
    cks = {comparison_key(s.job_spec(fw, seed)) for fw, seed in s.tasks()}
    assert cks == {comparison_key(s.to_dict())}
    assert comparison_key(small(epochs=2).job_spec("jax", 0)) not in cks
    # the training part ignores inference settings, not training ones
    tk = train_key(s.job_spec("jax", 0), fp)
    assert train_key(small(batch_sizes=(4,), measure_iters=7).job_spec("jax", 0), fp) == tk
    assert train_key(small(epochs=3).job_spec("jax", 0), fp) != tk
    assert train_key(s.job_spec("pytorch", 0), fp) != tk
    # the whole request: repeats and frameworks matter
    assert spec_key(s, fp) != spec_key(small(), fp) and spec_key(s, fp) == spec_key(small(repeats=2), fp)


def test_job_specs_of_a_request_with_framework_toggles_are_valid_jobs():
    spec = RunSpec(dataset="synthetic", resolution=32, architecture="cifar_cnn",
                   frameworks=("pytorch", "jax"), cudnn_benchmark=True, channels_last=True,
                   xla_autotune=0)
    jax_job, torch_job = spec.job_spec("jax", 0), spec.job_spec("pytorch", 0)
    # the stored job spec keeps the request's toggles: both belong to one comparison
    assert comparison_key(jax_job) == comparison_key(torch_job)
    with pytest.raises(SpecError, match="cudnn_benchmark"):
        RunSpec.from_dict(jax_job)
    jax_spec, torch_spec = RunSpec.from_job_spec(jax_job), RunSpec.from_job_spec(torch_job)
    assert (jax_spec.cudnn_benchmark, jax_spec.channels_last, jax_spec.xla_autotune) == (False, False, 0)
    assert (torch_spec.cudnn_benchmark, torch_spec.channels_last, torch_spec.xla_autotune) == (True, True, None)
