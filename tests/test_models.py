"""The model zoo: one definition, three frameworks, the same function.

The parity test below is what proves the architectures are the same: the canonical
weights drawn once from a seed, loaded into Keras, PyTorch and Flax, give the same
logits on the same batch in inference mode (fp32, CPU).  Big models run at small
resolutions so the default test run stays fast.
"""
import json
import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import typing

import numpy as np
import pytest
import run_memo

import models
from models import api, graph, ir
from models.parity import PARITY_INPUTS, relative_differences

pytestmark = pytest.mark.heavy(seconds=130)  # its wall time in the parallel suite: see conftest.py

INSTALLED = [f for f in api.BUILDERS if models.is_installed(f)]
needs_two = pytest.mark.skipif(len(INSTALLED) < 2, reason="fewer than two frameworks installed")

# Published figures: the papers' and torchvision's parameter counts.
KNOWN_PARAMETERS = [
    ("fan_arch1", 28, 1, 10, 28_938),
    ("fan_arch1", 50, 3, 2, 24_866),
    ("fan_arch2", 50, 3, 2, 284_210),
    ("fan_arch2", 28, 1, 10, 280_250),  # the paper prints 280,174: see the description
    ("cifar_cnn", 32, 3, 10, 122_570),
    ("resnet50", 224, 3, 1000, 25_557_032),
    ("mobilenet_v3_small", 224, 3, 1000, 2_542_856),
    ("efficientnet_b0", 224, 3, 1000, 5_288_548),
    ("vit_b_16", 224, 3, 1000, 86_567_656),
]
# torchvision's published multiply-accumulates at 224 px ("GFLOPS" in its tables).
KNOWN_GMACS = {"resnet50": 4.09, "mobilenet_v3_small": 0.06, "efficientnet_b0": 0.39,
               "vit_b_16": 17.56}

def test_every_registered_architecture_has_a_parity_case():
    assert sorted(PARITY_INPUTS) == sorted(models.list_architectures())


@pytest.mark.parametrize("arch,res,ch,classes,expected", KNOWN_PARAMETERS)
def test_parameter_counts_match_the_published_figures(arch, res, ch, classes, expected):
    assert models.describe(arch, res, ch, classes)["parameters"] == expected


@pytest.mark.parametrize("arch", sorted(KNOWN_GMACS))
def test_flops_match_torchvision_at_224(arch):
    flops = models.describe(arch, 224, 3, 1000)["flops_per_image"]
    assert flops / 2 / 1e9 == pytest.approx(KNOWN_GMACS[arch], abs=0.006)


@needs_two
def test_built_models_have_equal_parameter_counts():
    """At 28x28x1/10, where ViT-B/16 does not fit (None in every framework); at 64x3x100
    the `models --check` test below checks the same with every architecture fitting."""
    res, ch, classes = 28, 1, 10
    rows, missing = models.parameter_table(res, ch, classes, frameworks=INSTALLED)
    assert not missing
    by_arch = {}
    for r in rows:
        by_arch.setdefault(r["architecture"], set()).add(r["parameters"])
    for arch, counts in by_arch.items():
        assert len(counts) == 1, f"{arch} at {res}x{res}x{ch}/{classes}: {counts}"
        fits = None not in counts
        if fits:
            assert counts == {models.describe(arch, res, ch, classes)["parameters"]}


@needs_two
@pytest.mark.parametrize("arch", sorted(PARITY_INPUTS))
def test_same_weights_give_the_same_outputs_in_every_framework(arch):
    # models.parity.parity_logits, once per run: the Keras backends' tests compare the same builds
    logits = {fw: run_memo.parity_logits(arch, fw) for fw in INSTALLED}
    shapes = {fw: y.shape for fw, y in logits.items()}
    assert set(shapes.values()) == {(3, PARITY_INPUTS[arch][2])}, shapes
    diffs = relative_differences(logits)
    assert max(diffs.values()) <= 1e-4, f"{arch}: max relative differences {diffs}"


@needs_two
def test_weights_round_trip_between_frameworks():
    arch, (res, ch, classes) = "blood_resnet", PARITY_INPUTS["blood_resnet"]
    w = models.init_weights(arch, resolution=res, channels=ch, num_classes=classes, seed=3)
    for fw in INSTALLED:
        m = models.build_model(arch, fw, resolution=res, channels=ch, num_classes=classes, weights=w)
        back = models.extract_weights(fw, m)
        assert sorted(back) == sorted(w)
        for k in w:
            np.testing.assert_array_equal(back[k], w[k], err_msg=f"{fw}: {k}")


def test_same_seed_same_canonical_weights_and_different_seed_differs():
    a = models.init_weights("fan_arch1", resolution=28, channels=1, num_classes=10, seed=1)
    b = models.init_weights("fan_arch1", resolution=28, channels=1, num_classes=10, seed=1)
    c = models.init_weights("fan_arch1", resolution=28, channels=1, num_classes=10, seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a if a[k].std() > 0)


@pytest.mark.parametrize("arch,res,ch,message", [
    ("vit_b_16", 40, 3, "multiple of 16"),
    ("resnet50", 16, 3, "at least 32"),
    ("cifar_cnn", 8, 3, "at least 18"),
    ("no_such_net", 28, 3, "unknown architecture"),
])
def test_inputs_an_architecture_cannot_take_are_refused_by_name(arch, res, ch, message):
    with pytest.raises(ValueError, match=message):
        models.check_input(arch, resolution=res, channels=ch)


def test_vit_position_embedding_is_sized_to_the_resolution():
    specs = {s.key: s for s in models.parameter_specs("vit_b_16", resolution=64, channels=3,
                                                       num_classes=10)}
    pos = [s for k, s in specs.items() if "pos" in k]
    assert pos and pos[0].shape[-2] == (64 // 16) ** 2 + 1


def test_fan_arch2_description_says_which_figure_it_keeps():
    text = models.get_architecture("fan_arch2").description
    assert "284,210" in text and "280,174" in text


def test_importing_models_imports_no_framework():
    code = ("import sys, models; models.describe('resnet50', 224, 3, 1000); "
            "print([m for m in ('torch', 'tensorflow', 'jax', 'keras', 'flax') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]"


@needs_two
def test_models_check_builds_every_model_in_each_framework_and_checks_its_count(capsys):
    """`models --check` at 64x64x3/100, where every architecture fits: the counts of the
    models built in each installed framework, each the same as its definition's (so the
    same in every framework). The CLI's own entry point, called here: this process has
    every framework imported already, a fresh interpreter would spend 10-20 s importing
    them again before the same code."""
    from engines.cli import main

    code = main(["models", "--resolution", "64", "--classes", "100", "--channels", "3", "--json", "--check"])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    rows = json.loads(out.out)
    assert all(set(r) == {"architecture", "framework", "parameters", "flops_per_image", "matches_definition"}
               for r in rows)
    built = {(r["architecture"], r["framework"]) for r in rows}
    assert built == {(arch, fw) for arch in models.list_architectures() for fw in INSTALLED}
    assert all(r["parameters"] is not None and r["matches_definition"] for r in rows), \
        [r for r in rows if not r["matches_definition"]]
    for r in rows:
        assert r["parameters"] == models.describe(r["architecture"], 64, 3, 100)["parameters"], r
    vit = [r for r in rows if r["architecture"] == "vit_b_16"]
    assert vit and all(r["parameters"] > 80_000_000 for r in vit)


@pytest.mark.skipif(not models.is_installed("jax"), reason="Flax is not installed")
def test_the_abstract_flax_build_counts_the_definitions_parameters_and_leaves_jax_as_it_was():
    """models.build_flax.abstract_build (nnx.eval_shape, JAX's tracer error messages left
    empty while it traces): shapes only, with the definition's count (a concrete model's
    too: canonical weights, every array of the definition, fill it exactly; building one
    here would compile each parameter's draw, 10 s with a cold XLA cache), and JAX's
    method is back afterwards, after a failing build too."""
    import jax
    from flax import nnx
    from jax._src.interpreters import partial_eval

    from models import build_flax

    original = vars(partial_eval.DynamicJaxprTracer)["_origin_msg"]
    nodes = models.get_architecture("blood_resnet").ir(28, 3, 4)
    abstract = build_flax.abstract_build(nodes, (28, 28, 3))
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert build_flax.count_parameters(abstract) == models.describe("blood_resnet", 28, 3, 4)["parameters"]
    assert vars(partial_eval.DynamicJaxprTracer)["_origin_msg"] is original
    with pytest.raises(TypeError):  # a negative dimension, refused by JAX while it traces
        build_flax.abstract_build(nodes, (28, 28, -1))
    assert vars(partial_eval.DynamicJaxprTracer)["_origin_msg"] is original


@pytest.mark.skipif(not models.is_installed("jax"), reason="Flax is not installed")
def test_a_flax_build_for_given_weights_compiles_no_program_per_parameter_shape():
    """Where canonical weights will overwrite every parameter, the placeholders are NumPy
    zeros copied to the device. Flax's zeros (jnp.zeros) compile a broadcast for each
    shape, jnp.asarray a `stage` program: EfficientNet-B0 took 5.0 s to build, 2.3 s
    without them. What is left is one program per BatchNorm width, for the running
    statistics Flax makes itself, and the random streams' keys. Counted as JAX lowers
    programs, after clearing its in-memory caches, so a persistent-cache hit counts too."""
    import jax

    from models import build_flax

    nodes = models.get_architecture("efficientnet_b0").ir(32, 3, 5)
    specs = graph.param_specs(nodes, (32, 32, 3))
    shapes = {s.shape for s in specs}
    widths = {s.shape for s in specs if s.key.endswith("/mean")}
    assert len(shapes) > 3 * len(widths) > 0  # what the count below tells apart
    lowered = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            lowered.append(kwargs.get("fun_name"))

    jax.clear_caches()
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        build_flax.build(nodes, (32, 32, 3), placeholder_init=True)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert len(lowered) <= len(widths) + 10, (len(lowered), len(widths), sorted(set(map(str, lowered))))


def test_models_command_reads_the_definitions_and_imports_no_framework():
    """`models` without --check: one row per architecture from its definition, the same
    figures as models.describe, without importing a framework (so it answers in a second)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import io, json, sys, contextlib\n"
            "from engines.cli import main\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            "    rc = main(['models', '--resolution', '32', '--classes', '10', '--channels', '3', '--json'])\n"
            "print(json.dumps({'rc': rc, 'rows': json.loads(buf.getvalue()), 'imported': "
            "[m for m in ('torch', 'tensorflow', 'jax', 'keras', 'flax') if m in sys.modules]}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert got["rc"] == 0 and got["imported"] == []
    rows = {r["architecture"]: r for r in got["rows"]}
    assert sorted(rows) == sorted(models.list_architectures())
    assert rows["cifar_cnn"]["parameters"] == 122_570
    assert all(set(r) == {"architecture", "parameters", "flops_per_image"} for r in rows.values())
    for name, r in rows.items():
        d = models.describe(name, 32, 3, 10)
        assert (r["parameters"], r["flops_per_image"]) == (d["parameters"], d["flops_per_image"])


# -- every IR node type, in every builder ------------------------------------------------------
# Small graphs, each built around one node type (and its variants), with an input shape
# that exercises it; they end in a vector so that the frameworks' outputs compare directly.
_TOKENS = (ir.Conv("patch", 4, (2, 2), (2, 2)), ir.Tokens())  # (6, 6, 2) -> (9, 4)
NODE_CASES = {
    ir.Conv: [((7, 7, 2), (ir.Conv("conv", 4, (3, 3), (2, 2), "same"), ir.Flatten())),
              ((6, 6, 3), (ir.Conv("depthwise", 3, (3, 3), padding="same", groups=3, bias=False),
                           ir.Flatten()))],
    ir.BatchNorm: [((5, 5, 3), (ir.BatchNorm("bn", momentum=0.01, eps=1e-3), ir.Flatten()))],
    ir.Activation: [((3, 3, 2), (ir.Conv("conv", 3, (1, 1)), ir.Activation(fn), ir.Flatten()))
                    for fn in ir.ACTIVATIONS],
    ir.MaxPool: [((7, 7, 2), (ir.MaxPool((3, 3), (2, 2), "same"), ir.Flatten())),
                 ((6, 6, 2), (ir.MaxPool((3, 3), (2, 2), ((1, 1), (1, 1))), ir.Flatten()))],
    ir.GlobalPool: [((5, 5, 3), (ir.GlobalPool("avg"),)), ((5, 5, 3), (ir.GlobalPool("max"),))],
    ir.SqueezeExcite: [((5, 5, 4), (ir.SqueezeExcite("se", ir.Conv("se_reduce", 2, (1, 1)),
                                                     ir.Conv("se_expand", 4, (1, 1)), "relu",
                                                     "hardsigmoid"), ir.Flatten()))],
    ir.Residual: [((6, 6, 2), (ir.Residual((ir.Conv("body", 3, (3, 3), (2, 2), "same"),),
                                           (ir.Conv("down", 3, (1, 1), (2, 2)),), drop_path=0.2),
                               ir.Flatten())),
                  ((4, 4, 2), (ir.Residual((ir.Conv("body", 2, (3, 3), padding="same"),)), ir.Flatten()))],
    ir.Dropout: [((4, 4, 2), (ir.Flatten(), ir.Dropout(0.5), ir.Dense("dense", 3)))],
    ir.Flatten: [((3, 4, 2), (ir.Flatten(), ir.Dense("dense", 3)))],  # NHWC order into a Dense
    ir.Dense: [((2, 2, 3), (ir.Flatten(), ir.Dense("dense", 5), ir.Dense("nobias", 3, bias=False))),
               ((6, 6, 2), _TOKENS + (ir.Dense("per_token", 3), ir.Flatten()))],
    ir.LayerNorm: [((6, 6, 2), _TOKENS + (ir.LayerNorm("ln", eps=1e-5), ir.Flatten()))],
    ir.Tokens: [((6, 6, 2), _TOKENS + (ir.Flatten(),))],
    ir.ClassToken: [((6, 6, 2), _TOKENS + (ir.ClassToken("cls"), ir.Flatten()))],
    ir.PositionEmbedding: [((6, 6, 2), _TOKENS + (ir.PositionEmbedding("pos"), ir.Flatten()))],
    ir.EncoderBlock: [((6, 6, 2), _TOKENS + (ir.EncoderBlock("enc", heads=2, mlp_dim=8), ir.Flatten()))],
    ir.TakeToken: [((6, 6, 2), _TOKENS + (ir.ClassToken("cls"), ir.TakeToken(0)))],
}
NODE_TYPES = typing.get_args(ir.Node)


def test_every_ir_node_type_has_a_builder_case():
    assert set(NODE_CASES) == set(NODE_TYPES)


@pytest.mark.parametrize("framework", api.BUILDERS)
def test_every_builder_maps_every_ir_node_type(framework):
    if not models.is_installed(framework):
        pytest.skip(f"{framework} is not installed")
    builder = api._builder(framework)
    assert set(NODE_TYPES) <= set(builder.LAYERS), set(NODE_TYPES) - set(builder.LAYERS)


def _random_weights(specs, seed):
    """Every array non-zero and distinct, running variances positive: a misplaced or
    forgotten array shows in the round trip and in the outputs."""
    rng = np.random.default_rng(seed)
    return {s.key: (rng.uniform(0.5, 1.5, s.shape) if s.key.endswith("/var")
                    else rng.normal(0, 0.3, s.shape)).astype(np.float32) for s in specs}


@pytest.mark.parametrize("node_type", NODE_TYPES, ids=lambda t: t.__name__)
def test_each_ir_node_type_builds_loads_and_extracts_in_every_builder(node_type):
    """Build, load and extract for every node type in every installed builder; with two
    builders or more, the same weights give the same outputs."""
    if not INSTALLED:
        pytest.skip("no framework installed")
    for case, (shape, nodes) in enumerate(NODE_CASES[node_type]):
        nodes, _ = graph.resolve(nodes, shape)
        specs = graph.param_specs(nodes, shape)
        built, second = _random_weights(specs, case), _random_weights(specs, case + 100)
        x = np.random.default_rng(case).random((2,) + shape, dtype=np.float32)
        outputs = {}
        for fw in INSTALLED:
            model = api.build_ir(fw, nodes, shape, weights=built)
            back = models.extract_weights(fw, model)
            assert sorted(back) == sorted(s.key for s in specs), (fw, nodes)
            for key, value in built.items():
                np.testing.assert_array_equal(back[key], value, err_msg=f"{fw}: {key} of {nodes}")
            outputs[fw] = api.infer(fw, model, x)
            models.load_weights(fw, model, second)
            again = models.extract_weights(fw, model)
            for key, value in second.items():
                np.testing.assert_array_equal(again[key], value, err_msg=f"{fw} load: {key}")
        ref = outputs[INSTALLED[0]]
        assert ref.ndim == 2 and np.abs(ref).max() > 0
        for fw, out in outputs.items():
            np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(),
                                       err_msg=f"{fw} vs {INSTALLED[0]} on {nodes}")
