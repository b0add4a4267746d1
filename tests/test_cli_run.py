"""`python -m engines run` / `sweep`: exit codes, per-field messages, the table, --json."""
import io
import json

import pytest
import queue_fakes as qs

from engines import cli
from engines.cli import main
from engines.runs.queue import JobQueue

SMALL = ["--dataset", "synthetic", "--size", "32", "--arch", "cifar_cnn", "--batch-sizes", "1,8", "--epochs", "1",
         "--dataset-option", "train=32", "--dataset-option", "classes=3"]


@pytest.fixture
def fake(monkeypatch):
    ex = qs.FakeExecutor(sleep_s=0.05)
    monkeypatch.setattr(cli, "make_queue", lambda: JobQueue(executor=ex))
    return ex


def test_bad_spec_exits_2_with_a_message_per_field(capsys, fake):
    rc = main(["run", "--dataset", "nope", "--frameworks", "torch", "--batch-sizes", "0", "--epochs", "0",
               "--precision", "fp8"])
    err = capsys.readouterr().err
    assert rc == 2 and not fake.calls
    for line in ("  dataset: unknown dataset 'nope'", "  frameworks: unknown torch", "  batch_sizes: each must be",
                 "  epochs: must be", "  precision: must be one of"):
        assert line in err


def test_bad_command_line_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--batch-sizes", "1,x"])
    assert exc.value.code == 2 and "whole numbers" in capsys.readouterr().err


def test_run_prints_progress_table_and_json(capsys, fake):
    assert main(["run", *SMALL, "--frameworks", "pytorch,jax"]) == 0
    out, err = capsys.readouterr()
    assert "100% 2/2 tasks" in err
    lines = out.strip().splitlines()
    header = next(line for line in lines if line.startswith("framework"))
    for col in ("status", "epochs", "train img/s", "test acc", "AUC", "b1 p50 ms", "b8 img/s"):
        assert col in header
    assert any(line.startswith("pytorch") and " ok " in line and " run " in line for line in lines)
    assert main(["run", *SMALL, "--frameworks", "pytorch,jax", "--json"]) == 0
    out, err = capsys.readouterr()
    results = json.loads(out)
    assert [r["framework"] for r in results] == ["pytorch", "jax"] and all(r["schema"] == 1 for r in results)
    assert "cache" in err and len(fake.calls) == 2  # the second run came from the cache (table on stderr)
    assert main(["run", *SMALL, "--frameworks", "pytorch", "--force", "--json"]) == 0 and len(fake.calls) == 3


def test_run_exits_1_when_a_result_is_not_ok(capsys, fake):
    fake.status = "error"
    assert main(["run", *SMALL, "--frameworks", "jax"]) == 1
    assert "jax seed 0: error" in capsys.readouterr().out


def test_grid_expansion():
    combos = cli.expand_grid({"arch": ["fan_arch1", "cifar_cnn"], "frameworks": ["pytorch", "jax"],
                                 "batch_sizes": [[1, 8], [32]], "epochs": 1, "size": 32})
    assert len(combos) == 4
    assert combos[0] == {"architecture": "fan_arch1", "frameworks": ["pytorch", "jax"], "batch_sizes": [1, 8],
                         "epochs": 1, "resolution": 32}


def test_sweep_from_yaml(tmp_path, capsys, fake):
    grid = tmp_path / "grid.yaml"
    grid.write_text("dataset: synthetic\nsize: 32\narchitecture: [fan_arch1, cifar_cnn]\n"
                    "frameworks: [pytorch, jax]\nbatch_sizes: [1, 8, 32]\nepochs: 1\n"
                    "dataset_options: {train: 32, val: 8, test: 8, classes: 3}\n")
    assert main(["sweep", str(grid), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 4 and {r["spec"]["architecture"] for r in results} == {"fan_arch1", "cifar_cnn"}
    assert all(len(r["inference"]) == 3 for r in results)


def test_sweep_with_a_bad_combination_runs_nothing(tmp_path, capsys, fake):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"dataset": "synthetic", "resolution": [32, 2]}))
    assert main(["sweep", str(grid)]) == 2
    err = capsys.readouterr().err
    assert "combination 2 of 2: dataset=synthetic, resolution=2" in err and "resolution:" in err
    assert not fake.calls
    grid.write_text("{not json")
    assert main(["sweep", str(grid)]) == 2 and "not valid JSON" in capsys.readouterr().err


def test_progress_without_a_terminal_writes_a_line_per_change():
    stream = io.StringIO()
    printer = cli.ProgressPrinter(stream)
    task = {"framework": "jax", "seed": 0, "state": "running",
            "progress": {"stage": "train", "epoch": 1, "epochs": 2, "step": 1, "steps": 10, "loss": 0.5}}
    st = {"state": "running", "position": 0, "tasks": [task]}
    printer(st)
    task["progress"] = dict(task["progress"], step=2, loss=0.4)
    printer(st)  # only the step moved: no new line in a log
    task["progress"] = dict(task["progress"], epoch=2, step=1)
    printer(st)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "jax seed 0: train epoch 1/2 step 1/10 loss 0.5000" in lines[0]
    assert "\r" not in stream.getvalue()


def test_end_to_end_with_the_real_launcher(capsys):
    """One tiny CPU job through the real worker process (minutes on a busy CPU)."""
    rc = main(["run", *SMALL, "--frameworks", "pytorch", "--no-compile", "--json", "--warmup-iters", "1",
               "--measure-iters", "3"])
    results = json.loads(capsys.readouterr().out)
    assert rc == 0, results[0]["message"]
    r = results[0]
    assert r["status"] == "ok" and r["train"]["epochs"] and r["evaluation"]["accuracy"] is not None
    assert [i["batch_size"] for i in r["inference"]] == [1, 8]
    assert main(["run", *SMALL, "--frameworks", "pytorch", "--no-compile", "--json", "--warmup-iters", "1",
                 "--measure-iters", "3"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["key"] == r["key"]  # from the cache


def test_run_preset_queues_every_spec_of_the_preset(capsys, fake):
    from engines.analysis.presets import get_preset

    # its reduced specs use generated data: nothing to download
    specs = get_preset("jax_pytorch_h100").labelled_specs(True)
    rc = main(["run", "--preset", "jax_pytorch_h100", "--reduced", "--json"])
    out, err = capsys.readouterr()
    assert f"{len(specs)} spec(s)" in err
    results = json.loads(out)
    # the preset's own specs, as they are: one result per framework, seed and spec
    assert len(results) == sum(len(s.frameworks) * s.repeats for _, s in specs)
    assert {r["spec"]["architecture"] for r in results} == {s.architecture for _, s in specs}
    assert rc == 0 and all(r["status"] == "ok" for r in results)


@pytest.mark.parametrize("argv, why", [
    (["run", "--preset", "nope"], "unknown preset 'nope'"),
    (["run", "--preset", "pathmnist_cnn", "--epochs", "3"], "leave out --epochs"),
    (["run", "--preset", "pathmnist_cnn", "--size", "64"], "leave out --size"),
    (["run", "--reduced"], "--reduced goes with --preset"),
])
def test_run_preset_bad_use_exits_2_in_one_line(capsys, fake, argv, why):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert why in err and len(err.strip().splitlines()) == 1 and not fake.calls


def test_a_dataset_that_cannot_be_downloaded_is_said_once(capsys, fake, monkeypatch):
    from helpers import unreachable_medmnist

    name = unreachable_medmnist(monkeypatch)
    assert main(["run", "--dataset", name, "--size", "28", "--frameworks", "pytorch,jax"]) == 1
    out = capsys.readouterr().out
    assert out.count("http://127.0.0.1:9/lostmnist.npz") == 1 and out.count("LAB_DATA_PATH") == 1
    assert "pytorch seed 0, jax seed 0: error: not run" in out and " not run " in out and not fake.calls


def test_demo_runs_the_home_pages_default_comparison(capsys, fake):
    """`demo` queues spec.default_request() (the home page's request, so the same cache
    entries) and says how long it took; a second demo answers from the cache."""
    from engines.runs.spec import default_request

    assert main(["demo", "--json"]) == 0
    out, err = capsys.readouterr()
    results = json.loads(out)
    default = default_request()
    assert [r["framework"] for r in results] == list(default.frameworks)
    assert all(r["spec"]["dataset"] == default.dataset and r["spec"]["epochs"] == default.epochs
               and r["spec"]["compile"] is default.compiles(r["framework"]) for r in results)
    assert "demo: " in err and " s from request to results" in err
    assert len(fake.calls) == len(default.frameworks)
    assert main(["demo"]) == 0 and len(fake.calls) == len(default.frameworks)  # from the cache
    assert "cache" in capsys.readouterr().out
