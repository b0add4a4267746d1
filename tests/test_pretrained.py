"""Pretrained weights: torchvision's state dicts mapped into canonical weights, proven.

The state dicts here are written from torchvision's published architecture
(torchvision/models/resnet.py, mobilenetv3.py, efficientnet.py, vision_transformer.py:
their modules, in the order they register them, with torchvision's key names and
shapes), without importing torchvision, and checked against torchvision's published
parameter counts. A random one of each loads into canonical weights, round-trips back to
the same state dict, and loads into the lab's models. benchmarks/torchvision_parity.py
compares outputs with torchvision's own models where torchvision is installed.
"""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest
from helpers import LocalServer, cheapest_compile

import models
from engines import pretrained as files
from engines.frameworks import runnable_here
from engines.runs.spec import RunSpec, SpecError
from models import pretrained as mapping

pytestmark = pytest.mark.heavy(seconds=100)  # its wall time in the parallel suite: see conftest.py

# torchvision's "num_params" of each weights entry
PUBLISHED_PARAMETERS = {"resnet50": 25_557_032, "mobilenet_v3_small": 2_542_856,
                        "efficientnet_b0": 5_288_548, "vit_b_16": 86_567_656}
HAS_TORCH = "pytorch" in runnable_here()


# -- torchvision's state dicts, written from its model definitions ---------------------------------
def _bn(name, c):
    return [(f"{name}.weight", (c,)), (f"{name}.bias", (c,)), (f"{name}.running_mean", (c,)),
            (f"{name}.running_var", (c,)), (f"{name}.num_batches_tracked", ())]


def _conv(name, cout, cin, k, bias=False):
    return [(f"{name}.weight", (cout, cin, k, k))] + ([(f"{name}.bias", (cout,))] if bias else [])


def _linear(name, cin, cout):
    return [(f"{name}.weight", (cout, cin)), (f"{name}.bias", (cout,))]


def _conv_bn(name, cout, cin, k, groups=1):
    """torchvision.ops.Conv2dNormActivation: .0 conv (no bias), .1 BatchNorm2d."""
    return _conv(f"{name}.0", cout, cin // groups, k) + _bn(f"{name}.1", cout)


def tv_resnet50():
    sd = _conv("conv1", 64, 3, 7) + _bn("bn1", 64)
    inplanes = 64
    for layer, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], 1):
        for i in range(blocks):  # Bottleneck: conv1 bn1 conv2 bn2 conv3 bn3 (relu) downsample
            b = f"layer{layer}.{i}"
            sd += _conv(f"{b}.conv1", planes, inplanes, 1) + _bn(f"{b}.bn1", planes)
            sd += _conv(f"{b}.conv2", planes, planes, 3) + _bn(f"{b}.bn2", planes)
            sd += _conv(f"{b}.conv3", planes * 4, planes, 1) + _bn(f"{b}.bn3", planes * 4)
            if i == 0:
                sd += _conv(f"{b}.downsample.0", planes * 4, inplanes, 1) + _bn(f"{b}.downsample.1", planes * 4)
            inplanes = planes * 4
    return sd + _linear("fc", 2048, 1000)


def _divisible(v, d=8):  # torchvision.models._utils._make_divisible
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


def _se(name, c, squeeze):  # torchvision.ops.SqueezeExcitation: fc1, fc2 (1x1 convs with bias)
    return _conv(f"{name}.fc1", squeeze, c, 1, bias=True) + _conv(f"{name}.fc2", c, squeeze, 1, bias=True)


def tv_mobilenet_v3_small():
    # InvertedResidualConfig(input, kernel, expanded, out, use_se, activation, stride) of
    # _mobilenet_v3_conf("mobilenet_v3_small")
    conf = [(16, 3, 16, 16, True, 2), (16, 3, 72, 24, False, 2), (24, 3, 88, 24, False, 1),
            (24, 5, 96, 40, True, 2), (40, 5, 240, 40, True, 1), (40, 5, 240, 40, True, 1),
            (40, 5, 120, 48, True, 1), (48, 5, 144, 48, True, 1), (48, 5, 288, 96, True, 2),
            (96, 5, 576, 96, True, 1), (96, 5, 576, 96, True, 1)]
    sd = _conv_bn("features.0", 16, 3, 3)
    for n, (cin, k, exp, cout, se, _) in enumerate(conf, 1):
        j, b = 0, f"features.{n}.block"
        if exp != cin:
            sd += _conv_bn(f"{b}.{j}", exp, cin, 1)
            j += 1
        sd += _conv_bn(f"{b}.{j}", exp, exp, k, groups=exp)
        j += 1
        if se:
            sd += _se(f"{b}.{j}", exp, _divisible(exp // 4))
            j += 1
        sd += _conv_bn(f"{b}.{j}", cout, exp, 1)
    sd += _conv_bn("features.12", 576, 96, 1)
    return sd + _linear("classifier.0", 576, 1024) + _linear("classifier.3", 1024, 1000)


def tv_efficientnet_b0():
    # MBConvConfig(expand_ratio, kernel, stride, input, out, layers) of _efficientnet_conf("efficientnet_b0")
    conf = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
            (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
    sd = _conv_bn("features.0", 32, 3, 3)
    for s, (ratio, k, _, cin, cout, layers) in enumerate(conf, 1):
        for i in range(layers):
            b_in = cin if i == 0 else cout
            exp, j, b = _divisible(b_in * ratio), 0, f"features.{s}.{i}.block"
            if exp != b_in:
                sd += _conv_bn(f"{b}.{j}", exp, b_in, 1)
                j += 1
            sd += _conv_bn(f"{b}.{j}", exp, exp, k, groups=exp)
            sd += _se(f"{b}.{j + 1}", exp, max(1, b_in // 4))
            sd += _conv_bn(f"{b}.{j + 2}", cout, exp, 1)
    sd += _conv_bn("features.8", 1280, 320, 1)
    return sd + _linear("classifier.1", 1280, 1000)


def tv_vit_b_16(mlp=("mlp.0", "mlp.3")):
    d, m = 768, 3072
    sd = [("class_token", (1, 1, d))] + _conv("conv_proj", d, 3, 16, bias=True)
    sd += [("encoder.pos_embedding", (1, 197, d))]
    for i in range(12):
        e = f"encoder.layers.encoder_layer_{i}"
        sd += [(f"{e}.ln_1.weight", (d,)), (f"{e}.ln_1.bias", (d,)),
               (f"{e}.self_attention.in_proj_weight", (3 * d, d)), (f"{e}.self_attention.in_proj_bias", (3 * d,))]
        sd += _linear(f"{e}.self_attention.out_proj", d, d)
        sd += [(f"{e}.ln_2.weight", (d,)), (f"{e}.ln_2.bias", (d,))]
        sd += _linear(f"{e}.{mlp[0]}", d, m) + _linear(f"{e}.{mlp[1]}", m, d)
    sd += [("encoder.ln.weight", (d,)), ("encoder.ln.bias", (d,))]
    return sd + _linear("heads.head", d, 1000)


TORCHVISION_STATE = {"resnet50": tv_resnet50, "mobilenet_v3_small": tv_mobilenet_v3_small,
                     "efficientnet_b0": tv_efficientnet_b0, "vit_b_16": tv_vit_b_16}


def random_state(arch, seed=0, entries=None):
    """A random state dict of torchvision's names and shapes (what torch.save writes:
    float32 arrays, BatchNorm's int64 step counters, positive running variances)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in entries or TORCHVISION_STATE[arch]():
        if key.endswith("num_batches_tracked"):
            out[key] = np.array(1000 + seed, dtype=np.int64)
        elif key.endswith("running_var"):
            out[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            out[key] = rng.normal(0, 0.05, shape).astype(np.float32)
    return out


ARCHS = sorted(TORCHVISION_STATE)


# -- the mapping --------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_written_state_dicts_have_torchvisions_published_parameter_counts(arch):
    entries = TORCHVISION_STATE[arch]()
    assert len({k for k, _ in entries}) == len(entries)
    trainable = sum(int(np.prod(s)) for k, s in entries
                    if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert trainable == PUBLISHED_PARAMETERS[arch]


@pytest.mark.parametrize("arch", ARCHS)
def test_the_mapping_names_every_torchvision_entry_with_its_shape(arch):
    want = {k: s for k, s in TORCHVISION_STATE[arch]() if not k.endswith("num_batches_tracked")}
    got = {link.key: link.shape for link in mapping.links(arch)}
    assert got == want


@pytest.mark.parametrize("arch", ARCHS)
def test_a_torchvision_state_dict_loads_and_round_trips(arch):
    state = random_state(arch)
    weights = mapping.from_torchvision(arch, state)
    specs = models.parameter_specs(arch, resolution=224, channels=3, num_classes=1000)
    models.canonical.check(specs, weights)  # every canonical array, each of its shape
    back = mapping.to_torchvision(arch, weights)
    assert set(back) == {k for k in state if not k.endswith("num_batches_tracked")}
    for key, value in back.items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)


def test_layouts_are_torchvisions():
    state = random_state("vit_b_16")
    w = mapping.from_torchvision("vit_b_16", state)
    e = "encoder.layers.encoder_layer_3"
    packed = state[f"{e}.self_attention.in_proj_weight"]
    np.testing.assert_array_equal(w[f"{e}/attention/key/kernel"], packed[768:1536].T)  # x @ W_k.T
    np.testing.assert_array_equal(w[f"{e}/attention/value/bias"], state[f"{e}.self_attention.in_proj_bias"][1536:])
    np.testing.assert_array_equal(w[f"{e}/mlp_2/kernel"], state[f"{e}.mlp.3.weight"].T)
    np.testing.assert_array_equal(w["conv_proj/kernel"], state["conv_proj.weight"].transpose(2, 3, 1, 0))
    r = mapping.from_torchvision("resnet50", random_state("resnet50"))
    m = mapping.from_torchvision("mobilenet_v3_small", random_state("mobilenet_v3_small"))
    assert r["layer2.0.downsample.1/var"].min() >= 0.5
    assert m["features.1.block.0.0/kernel"].shape == (3, 3, 1, 16)  # depthwise: (kh, kw, 1, C)


def test_the_published_vit_files_legacy_mlp_names_are_read():
    legacy = random_state("vit_b_16", entries=tv_vit_b_16(mlp=("mlp.linear_1", "mlp.linear_2")))
    today = {k.replace("mlp.linear_1", "mlp.0").replace("mlp.linear_2", "mlp.3"): v for k, v in legacy.items()}
    a, b = mapping.from_torchvision("vit_b_16", legacy), mapping.from_torchvision("vit_b_16", today)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_state_dict_of_another_model_is_refused_by_name():
    state = random_state("resnet50")
    with pytest.raises(ValueError, match="not a torchvision mobilenet_v3_small state dict"):
        mapping.from_torchvision("mobilenet_v3_small", state)
    del state["layer3.2.bn2.running_var"]
    with pytest.raises(ValueError, match=r"missing \['layer3.2.bn2.running_var'\]"):
        mapping.from_torchvision("resnet50", state)
    state = random_state("resnet50")
    state["fc.weight"] = state["fc.weight"][:, :100]
    with pytest.raises(ValueError, match=r"fc.weight has shape \(1000, 100\).*\(1000, 2048\)"):
        mapping.from_torchvision("resnet50", state)
    with pytest.raises(ValueError, match="pretrained weights exist for resnet50"):
        mapping.published("fan_arch1")


def test_published_files_carry_their_hash_prefix():
    for arch, w in mapping.TORCHVISION.items():
        assert w.url.startswith("https://download.pytorch.org/models/") and arch in w.filename
        assert len(w.sha256_prefix) == 8 and w.sha256_prefix in w.filename
        assert mapping.links(arch)  # every published architecture is mapped


# -- fitting the weights to a run -------------------------------------------------------------------
def test_the_stem_adapts_to_the_channels():
    k = np.random.default_rng(0).normal(size=(3, 3, 3, 8)).astype(np.float32)
    np.testing.assert_array_equal(mapping.adapt_stem(k, 3), k)
    np.testing.assert_allclose(mapping.adapt_stem(k, 1)[:, :, 0], k.sum(axis=2), rtol=1e-6)
    four = mapping.adapt_stem(k, 4)
    np.testing.assert_allclose(four[:, :, 3], k[:, :, 0] * 0.75, rtol=1e-6)  # tiled, scaled by 3/4
    # a grey image seen as R = G = B: the same response through the summed kernel
    x = np.random.default_rng(1).random((3, 3)).astype(np.float32)
    rgb = np.einsum("hw,hwco->o", x, k)
    np.testing.assert_allclose(np.einsum("hw,hwo->o", x, mapping.adapt_stem(k, 1)[:, :, 0]), rgb, rtol=1e-5)


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch's interpolate is the reference")
@pytest.mark.parametrize("new", [4, 2, 20, 1])
def test_position_embeddings_resample_as_torchvisions_interpolate(new):
    import torch

    emb = np.random.default_rng(new).normal(size=(1, 1 + 14 * 14, 8)).astype(np.float32)
    got = mapping.resize_position_embedding(emb, new * new)
    grid = torch.from_numpy(emb[:, 1:]).permute(0, 2, 1).reshape(1, 8, 14, 14)
    want = torch.nn.functional.interpolate(grid, size=new, mode="bicubic", align_corners=True)
    want = want.reshape(1, 8, new * new).permute(0, 2, 1).numpy()
    np.testing.assert_array_equal(got[:, :1], emb[:, :1])
    # PyTorch computes the sample positions in float32: ~1e-6 apart on values of order 1
    np.testing.assert_allclose(got[:, 1:], want, rtol=1e-5, atol=1e-5)


def test_the_head_is_drawn_from_the_seed_and_the_rest_is_the_files():
    base = mapping.from_torchvision("mobilenet_v3_small", random_state("mobilenet_v3_small"))
    fit = dict(resolution=32, channels=1, num_classes=3)
    a, notes = mapping.for_dataset("mobilenet_v3_small", base, seed=5, **fit)
    b, _ = mapping.for_dataset("mobilenet_v3_small", base, seed=5, **fit)
    c, _ = mapping.for_dataset("mobilenet_v3_small", base, seed=6, **fit)
    specs = models.parameter_specs("mobilenet_v3_small", **fit)
    models.canonical.check(specs, a)
    head = [k for k in a if k.startswith("classifier.3/")]
    assert head == ["classifier.3/kernel", "classifier.3/bias"] and a["classifier.3/kernel"].shape == (1024, 3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["classifier.3/kernel"], c["classifier.3/kernel"])
    assert abs(a["classifier.3/kernel"].std() - 0.01) < 0.002  # torchvision's N(0, 0.01) for the classifier
    for k in a:
        if not k.startswith(("classifier.3/", "features.0.0/")):
            np.testing.assert_array_equal(a[k], base[k], err_msg=k)
    assert any("summed" in n for n in notes) and any("seed 5" in n for n in notes)


def test_vit_weights_fit_another_resolution():
    base = mapping.from_torchvision("vit_b_16", random_state("vit_b_16"))
    w, notes = mapping.for_dataset("vit_b_16", base, resolution=64, channels=3, num_classes=2, seed=0)
    pos = "encoder.pos_embedding/embedding"
    assert w[pos].shape == (1, 17, 768)
    np.testing.assert_array_equal(w[pos][:, 0], base[pos][:, 0])
    assert not w["heads.head/kernel"].any()  # torchvision starts ViT's head at zero
    assert any("16 patch positions" in n for n in notes)


# -- files: which, and how they are read -------------------------------------------------------------
@pytest.fixture
def data_folder(tmp_path, monkeypatch):
    root, extra = tmp_path / "data", tmp_path / "shared"
    root.mkdir()
    extra.mkdir()
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LAB_DATA_ROOT", str(root))
    monkeypatch.setenv("LAB_DATA_PATH", str(extra))
    return extra


def _torch_save(state, path):
    code = ("import sys, numpy as np, torch; d = np.load(sys.argv[1]); "
            "torch.save({k: torch.from_numpy(d[k]) for k in d.files}, sys.argv[2])")
    npz = str(path) + ".src.npz"
    np.savez(npz, **state)
    subprocess.run([sys.executable, "-c", code, npz, str(path)], check=True, capture_output=True)
    os.remove(npz)


@pytest.mark.skipif(not HAS_TORCH, reason="torch.save makes the file")
def test_a_torch_file_is_read_by_a_pytorch_process_with_weights_only(data_folder):
    state = random_state("mobilenet_v3_small")
    _torch_save(state, data_folder / "mine.pth")
    path = files.local_file("mine.pth")
    got = files.read_state_dict(path)
    assert set(got) == set(state)
    assert all(np.array_equal(got[k], state[k]) for k in state)
    assert "torch" not in sys.modules or HAS_TORCH  # the reading happened in another process
    # a pickle that would build an arbitrary object is refused by weights_only, not run
    evil = data_folder / "evil.pth"
    code = ("import sys, torch, collections; "
            "torch.save({'w': torch.zeros(1), 'x': collections.Counter(a=1)}, sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(evil)], check=True, capture_output=True)
    with pytest.raises(files.PretrainedError, match="could not be read as a PyTorch state dict"):
        files.read_state_dict(files.local_file("evil.pth"))


def test_safetensors_are_read_without_a_framework(data_folder):
    state = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(7, dtype=np.int64),
             "h": np.ones(3, dtype=np.float16)}
    files.write_safetensors(data_folder / "w.safetensors", state)
    got = files.read_safetensors(files.local_file("w.safetensors"))
    assert set(got) == set(state) and all(np.array_equal(got[k], state[k]) for k in state)
    (data_folder / "bad.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(files.PretrainedError, match="not a safetensors file"):
        files.read_safetensors(files.local_file("bad.safetensors"))


def test_a_local_file_must_be_inside_the_data_folders(data_folder, tmp_path):
    outside = tmp_path / "elsewhere.pth"
    outside.write_bytes(b"x")
    with pytest.raises(files.PretrainedError, match="inside the data folders"):
        files.local_file(str(outside))
    (data_folder / "link.pth").symlink_to(outside)
    with pytest.raises(files.PretrainedError, match="resolves to"):
        files.local_file("link.pth")
    (data_folder / "notes.txt").write_text("x")
    with pytest.raises(files.PretrainedError, match="suffix|one of"):
        files.local_file("notes.txt")
    with pytest.raises(files.PretrainedError, match="no weights file missing.pth"):
        files.local_file("missing.pth")
    (data_folder / "sub").mkdir()
    (data_folder / "sub" / "ok.safetensors").write_bytes(b"x")
    assert files.local_file("sub/ok.safetensors") == (data_folder / "sub" / "ok.safetensors").resolve()


def _publish(monkeypatch, url):
    w = mapping.PublishedWeights("mobilenet_v3_small", "test", url, head="classifier.3", stem="features.0.0")
    monkeypatch.setitem(mapping.TORCHVISION, "mobilenet_v3_small", w)
    return w


def test_torchvisions_file_is_downloaded_verified_and_kept(data_folder, monkeypatch):
    payload = os.urandom(1 << 16)
    with LocalServer(payload) as server:
        prefix = hashlib.sha256(payload).hexdigest()[:8]
        w = _publish(monkeypatch, f"{server.base}/mobilenet_v3_small-{prefix}.pth")
        path = files.published_file("mobilenet_v3_small")
        assert path.read_bytes() == payload and path.parent.name == "pretrained"
        assert files.published_file("mobilenet_v3_small") == path and server.requests == 1
        assert files.identity("torchvision", "mobilenet_v3_small") == {"pretrained_file": w.filename}
        # bytes that do not match the hash in the name: nothing is kept
        _publish(monkeypatch, f"{server.base}/mobilenet_v3_small-00000000.pth")
        with pytest.raises(files.PretrainedError, match="checksum mismatch.*begin 00000000"):
            files.published_file("mobilenet_v3_small")
        assert not (Path(os.environ["LAB_DATA_ROOT"]) / "pretrained" / "mobilenet_v3_small-00000000.pth").exists()


def test_no_network_is_one_clear_sentence(data_folder, monkeypatch):
    _publish(monkeypatch, "http://127.0.0.1:9/mobilenet_v3_small-047dcff4.pth")
    with pytest.raises(files.PretrainedError) as e:
        files.published_file("mobilenet_v3_small")
    text = str(e.value)
    assert text.startswith("could not download torchvision's mobilenet_v3_small-047dcff4.pth from http://127.0.0.1:9/")
    assert "place the file in" in text and "pretrained" in text
    assert text.count(". ") == 0 and "\n" not in text  # one sentence
    with pytest.raises(files.PretrainedError, match="downloading is off"):
        files.published_file("mobilenet_v3_small", download_missing=False)


# -- the run: spec, keys, every framework from one file --------------------------------------------
def test_the_spec_names_bad_pretrained_settings(data_folder):
    files.write_safetensors(data_folder / "w.safetensors", {"a": np.zeros(1, np.float32)})
    base = dict(dataset="synthetic", resolution=32, architecture="mobilenet_v3_small", frameworks=("pytorch",))
    RunSpec(**base, pretrained="torchvision")
    RunSpec(**base, pretrained="w.safetensors")
    cases = [(dict(pretrained="nothere.pth"), "pretrained", "no weights file"),
             (dict(pretrained="w.safetensors", architecture="fan_arch1", resolution=28), "pretrained",
              "pretrained weights for resnet50"),
             (dict(pretrained="torchvision", same_init=False), "same_init", "same in every framework"),
             (dict(pretrained=""), "pretrained", "torchvision")]
    for change, field, text in cases:
        with pytest.raises(SpecError) as e:
            RunSpec(**{**base, **change})
        assert text in e.value.problems[field], (change, e.value.problems)


def test_a_changed_file_changes_the_keys_and_no_file_changes_nothing(data_folder):
    path = data_folder / "w.safetensors"
    files.write_safetensors(path, {"a": np.zeros(1, np.float32)})
    spec = RunSpec(dataset="synthetic", resolution=32, architecture="mobilenet_v3_small", frameworks=("pytorch",),
                   pretrained="w.safetensors")
    job = spec.job("pytorch")
    k1, t1 = job.job_key("fp"), job.train_key("fp")
    files.write_safetensors(path, {"a": np.ones(1, np.float32)})
    os.utime(path, ns=(1, 1))  # another stamp even on a coarse clock
    assert job.job_key("fp") != k1 and job.train_key("fp") != t1
    plain = spec.replace(pretrained=None).job("pytorch")
    assert "pretrained" not in plain.to_dict() or plain.to_dict()["pretrained"] is None
    # a run without pretrained weights keeps the key it had before the field existed
    from engines.runs.spec import POLICY_FIELDS, SCHEMA, _hash
    before = {k: v for k, v in plain.as_job().to_dict().items() if k != "pretrained" and k not in POLICY_FIELDS}
    assert plain.job_key("fp") == _hash({"spec": before, "env": "fp", "schema": SCHEMA})


def test_every_framework_starts_from_the_same_pretrained_weights(data_folder):
    """The scenario's build, from one torch-format-free file (safetensors), in every
    framework that runs here: the same logits before training, then a short fine-tune."""
    from engines.datasets.synthetic import make_synthetic
    from engines.frameworks import get_engine
    from engines.runs.scenario import build, run_framework
    from engines.training.config import TrainConfig

    files.write_safetensors(data_folder / "mnv3.safetensors", random_state("mobilenet_v3_small", seed=3))
    ds = make_synthetic(32, channels=1, classes=3, seed=0, train=48, val=16, test=24)
    cfg = TrainConfig("mobilenet_v3_small", epochs=1, batch_size=16, seed=2, precision="fp32", compile=False,
                      dropout=False, pretrained="mnv3.safetensors")
    logits = {}
    for fw in runnable_here():
        # helpers.cheapest_compile, measured here too: Flax's predict 9.7 s eager, 3.0 s
        # compiled; without XLA for Keras and TensorFlow this test took 22.3 s, not 24.0 s
        engine = get_engine(fw, cfg.replace(compile=cheapest_compile(fw)))
        origin = build(engine, cfg, ds, canonical=True)
        assert "mnv3.safetensors" in origin and "seed 2" in origin
        logits[fw] = engine.predict_logits(ds.test.x, 8)
    ref = next(iter(logits.values()))
    for fw, y in logits.items():
        assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max(), fw
    fw = "pytorch" if HAS_TORCH else next(iter(logits))
    r = run_framework(fw, ds, cfg)
    assert r.status == "ok", r.message
    assert "mnv3.safetensors" in r.model.initial_weights


def test_the_torchvision_parity_check_says_why_it_skips_without_torchvision():
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is here: run benchmarks/torchvision_parity.py itself")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "benchmarks/torchvision_parity.py"], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("skipped: torchvision is not importable here")


@pytest.mark.slow  # three 224 px MobileNets and their compilation: about a minute on two cores
@pytest.mark.skipif(not HAS_TORCH, reason="the stand-in for torchvision's model is a PyTorch module")
def test_the_torchvision_parity_check_runs_its_comparison(monkeypatch):
    """The check's own code, run here with a stand-in for torchvision: a module whose
    state dict has torchvision's names (the lab's PyTorch model behind the mapping). On a
    machine with torchvision the same code compares with torchvision's own models."""
    import types

    import torch

    class StandIn(torch.nn.Module):
        def __init__(self, arch):
            super().__init__()
            self.arch = arch
            self.inner = models.build_model(arch, "pytorch", resolution=224, channels=3, num_classes=1000)

        def state_dict(self):
            w = models.extract_weights("pytorch", self.inner)
            out = {k: torch.from_numpy(v) for k, v in mapping.to_torchvision(self.arch, w).items()}
            out.update({k: torch.tensor(0) for k, _ in TORCHVISION_STATE[self.arch]()
                        if k.endswith("num_batches_tracked")})
            return out

        def load_state_dict(self, state, strict=True):
            arrays = {k: v.numpy() for k, v in state.items()}
            models.load_weights("pytorch", self.inner, mapping.from_torchvision(self.arch, arrays))
            want = {k for k, _ in TORCHVISION_STATE[self.arch]()}
            return sorted(want - set(state)), sorted(set(state) - want)

        def forward(self, x):
            return self.inner(x)

    fake = types.ModuleType("torchvision")
    fake.__version__ = "stand-in"
    fake.models = types.SimpleNamespace(mobilenet_v3_small=lambda weights=None: StandIn("mobilenet_v3_small"))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    for name in ("NVIDIA_TF32_OVERRIDE", "JAX_DEFAULT_MATMUL_PRECISION"):  # the script sets these
        monkeypatch.setenv(name, os.environ.get(name, ""))
    from benchmarks import torchvision_parity as bench
    row = bench.compare("mobilenet_v3_small", batch=1, device="cpu")
    assert row["ok"], row
    assert set(row["max_rel_diff"]) >= {"pytorch"} and row["reverse_mapping_missing"] == []


def test_the_command_line_names_a_missing_weights_file(data_folder, capsys):
    from engines.cli import main

    rc = main(["run", "--dataset", "synthetic", "--size", "32", "--arch", "mobilenet_v3_small",
               "--frameworks", "pytorch", "--pretrained", "nothere.pth"])
    err = capsys.readouterr().err
    assert rc == 2 and "pretrained" in err and "no weights file nothere.pth" in err
