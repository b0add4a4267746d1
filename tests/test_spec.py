"""RunSpec: a message per bad field, stable keys, and the keys that group results."""
import pytest

from engines.runs.spec import RunSpec, SpecError, comparison_key, environment_fingerprint

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
    # cuDNN benchmark is PyTorch's switch, so Keras on PyTorch takes it too
    assert p["cudnn_benchmark"] == "applies to pytorch, keras-torch, none of which is chosen"
    assert p["channels_last"] == "applies to pytorch only, which is not chosen"
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
    fp = environment_fingerprint("jax")
    assert fp == environment_fingerprint("jax") and len(fp) == 16
    s = small(repeats=2)
    assert s.tasks() == [("pytorch", 0), ("jax", 0), ("pytorch", 1), ("jax", 1)]
    keys = {s.job(fw, seed).job_key(fp) for fw, seed in s.tasks()}
    assert len(keys) == 4
    assert s.job("pytorch", 0).job_key(fp) != s.job("pytorch", 0).job_key("other-machine")
    with pytest.raises(SpecError, match="exactly one framework"):
        s.job_key(fp)  # a request has no key of its own: its jobs do
    # one comparison: every framework and seed of a request (whose jobs resolve nothing per
    # framework, as compile unset would); a different epoch count is another
    explicit = small(repeats=2, compile=True)
    assert ({comparison_key(explicit.job(fw, seed).to_dict()) for fw, seed in explicit.tasks()}
            == {explicit.comparison_key()})
    assert small(epochs=2).comparison_key() != s.comparison_key()
    assert small(frameworks=("jax",), repeats=3, seed=4).comparison_key() == s.comparison_key()
    # the training part ignores inference settings, not training ones
    tk = s.job("jax", 0).train_key(fp)
    assert small(batch_sizes=(4,), measure_iters=7).job("jax", 0).train_key(fp) == tk
    assert small(epochs=s.epochs + 1).job("jax", 0).train_key(fp) != tk
    assert s.job("pytorch", 0).train_key(fp) != tk


def test_a_job_holds_only_what_applies_to_its_framework():
    request = small(cudnn_benchmark=True, channels_last=True, xla_autotune=0, repeats=3, seed=5)
    jax_job, torch_job = request.job("jax", 6), request.job("pytorch", 6)
    assert (jax_job.frameworks, jax_job.seed, jax_job.repeats) == (("jax",), 6, 1)
    assert (jax_job.cudnn_benchmark, jax_job.channels_last, jax_job.xla_autotune) == (False, False, 0)
    assert (torch_job.cudnn_benchmark, torch_job.channels_last, torch_job.xla_autotune) == (True, True, None)
    assert RunSpec.from_dict(jax_job.to_dict()) == jax_job and jax_job.as_job() is jax_job
    with pytest.raises(SpecError, match="not among"):
        request.job("keras", 0)
    # A toggle of one framework changes neither the other framework's job nor its keys.
    fp = environment_fingerprint("pytorch")
    for level in (None, 0, 2, 4):
        job = small(xla_autotune=level).job("pytorch", 0)
        assert job == small().job("pytorch", 0)
        assert job.job_key(fp) == small().job("pytorch", 0).job_key(fp)
        assert job.train_key(fp) == small().job("pytorch", 0).train_key(fp)
    assert small(channels_last=True).job("jax", 0).job_key(fp) == small().job("jax", 0).job_key(fp)
    # ... but it names another comparison, which the shared result then belongs to as well
    assert small(xla_autotune=2).comparison_key() != small().comparison_key()


def test_compile_unset_is_each_frameworks_own_setting_and_a_job_says_which():
    from engines.frameworks import FRAMEWORKS
    from engines.runs.spec import compile_text, default_request

    request = small(frameworks=("pytorch", "jax", "keras"))
    assert request.compile is None and default_request().compile is None
    assert request.compile_by_framework() == {fw: FRAMEWORKS[fw].compile_default for fw in request.frameworks}
    # the measured defaults (engines/frameworks): only JAX compiles a short run sooner
    assert request.compile_by_framework() == {"pytorch": False, "jax": True, "keras": False}
    for fw in request.frameworks:
        job = request.job(fw, 0)
        assert job.compile is request.compiles(fw) and job.train_config().compile is job.compile
        assert RunSpec.from_dict(job.to_dict()) == job and job.as_job() is job  # a result records the bool
        # the same job as asking for that setting outright: one cache entry, one training
        explicit = small(frameworks=("pytorch", "jax", "keras"), compile=job.compile).job(fw, 0)
        assert explicit == job
        fp = environment_fingerprint(fw)
        assert explicit.job_key(fp) == job.job_key(fp) and explicit.train_key(fp) == job.train_key(fp)
    # set, it holds in every framework
    assert set(small(compile=True).compile_by_framework().values()) == {True}
    assert small(compile=False).job("jax", 0).compile is False
    # three settings, three comparisons
    assert len({small(compile=c).comparison_key() for c in (None, True, False)}) == 3
    assert "true, false or unset" in problems(compile=1)["compile"]
    assert compile_text(None, request.compile_by_framework()) == \
        "compile per framework (on in JAX/Flax; off in PyTorch, Keras)"
    assert (compile_text(True, {"jax": True}), compile_text(False, {})) == ("compile on", "compile off")


def test_train_config_is_the_jobs_training_fields():
    job = small(epochs=3, optimizer="sgd", precision="bf16", channels_last=True).job("pytorch", 2)
    c = job.train_config()
    assert (c.architecture, c.epochs, c.seed, c.optimizer, c.precision, c.channels_last) == \
           ("cifar_cnn", 3, 2, "sgd", "bf16", True)
    assert c.batch_size == job.train_batch_size and c.learning_rate == job.learning_rate
    assert small(inference_only=True, epochs=0).job("jax", 0).train_config().epochs == 1


def test_each_frameworks_fingerprint_holds_its_own_versions(monkeypatch):
    from engines import machine

    before = {fw: machine.fingerprint_key(framework=fw) for fw in ("pytorch", "jax", "keras")}
    real = machine.package_version
    monkeypatch.setattr(machine, "package_version", lambda d: "99.0" if d == "jax" else real(d))
    assert machine.fingerprint_key(framework="pytorch") == before["pytorch"]  # a JAX upgrade
    assert machine.fingerprint_key(framework="keras") == before["keras"]
    assert machine.fingerprint_key(framework="jax") != before["jax"]
    assert machine.fingerprint(framework="pytorch")["versions"].keys() <= {"torch", "numpy"}
