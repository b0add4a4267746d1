"""The dataset catalog: real files, downloads against a local server, resizing, folders,
and every bad input giving a message that names the problem."""
import hashlib
import importlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, need_debian_fashion, need_shared
from helpers import LocalServer
from PIL import Image

from engines.datasets import DatasetError, catalog, dataset_state, get_info, load_dataset
from engines.datasets.download import RemoteFile, download
from engines.datasets.formats import read_cifar10_archive, read_idx, read_npz
from engines.datasets.imaging import resize_images

catalog_module = importlib.import_module("engines.datasets.catalog")


def _check_against_catalog(ds, name):
    info = get_info(name)
    assert ds.class_names == info.class_names
    for split, part in ds.splits().items():
        assert part.x.dtype == np.uint8 and part.x.shape[1:] == (ds.resolution, ds.resolution, info.channels)
        assert part.y.dtype == np.int64 and len(part.y) == info.splits[split]
        assert part.y.min() >= 0 and part.y.max() < len(info.class_names)


# -- real files ----------------------------------------------------------------------------------

def test_pneumoniamnist_real_file():
    need_shared("pneumoniamnist.npz")
    ds = load_dataset("pneumoniamnist", 28)
    _check_against_catalog(ds, "pneumoniamnist")
    assert np.bincount(ds.train.y).tolist() == [1214, 3494]  # PROVENANCE.md
    assert np.bincount(ds.test.y).tolist() == [234, 390]


def test_breastmnist_real_file():
    need_shared("breastmnist.npz")
    ds = load_dataset("breastmnist")
    _check_against_catalog(ds, "breastmnist")
    assert np.bincount(ds.val.y).tolist() == [21, 57]
    assert dataset_state(get_info("breastmnist"), 28).state == "ready"


def test_mnist_keras_style_file():
    need_shared("mnist.npz")
    ds = load_dataset("mnist")
    _check_against_catalog(ds, "mnist")
    assert ds.test.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    # Validation is the tail of the official training set: its class counts plus train's are the official ones.
    counts = np.bincount(np.concatenate([ds.train.y, ds.val.y]))
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_fashion_mnist_from_debian():
    need_debian_fashion()
    ds = load_dataset("fashion_mnist", 28)
    _check_against_catalog(ds, "fashion_mnist")
    assert np.bincount(ds.test.y).tolist() == [1000] * 10
    assert "/usr/share/datasets/fashion-mnist" in ds.source


def test_read_idx_rejects_truncated(tmp_path):
    src = need_debian_fashion() / "t10k-labels-idx1-ubyte.gz"
    assert read_idx(src).shape == (10000,)
    import gzip
    raw = gzip.decompress(src.read_bytes())
    bad = tmp_path / "labels.idx"
    bad.write_bytes(raw[:-10])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        read_idx(bad)


def test_digits_offline_default():
    ds = load_dataset("digits")
    _check_against_catalog(ds, "digits")
    assert ds.resolution == 8 and ds.train.x.max() == 255


def test_synthetic_is_deterministic_and_sized():
    a = load_dataset("synthetic", 40, seed=3, channels=1, classes=4, train=20, val=5, test=6)
    b = load_dataset("synthetic", 40, seed=3, channels=1, classes=4, train=20, val=5, test=6)
    c = load_dataset("synthetic", 40, seed=4, channels=1, classes=4, train=20, val=5, test=6)
    assert a.train.x.shape == (20, 40, 40, 1) and len(a.test) == 6 and a.num_classes == 4
    assert np.array_equal(a.train.x, b.train.x) and not np.array_equal(a.train.x, c.train.x)


# -- downloads against a server on 127.0.0.1 ----------------------------------------------------

def _tiny_medmnist_npz(n=(12, 4, 6), size=28, classes=3) -> bytes:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % classes).reshape(-1, 1).astype(np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_success_with_progress(tmp_path):
    payload = np.random.default_rng(0).bytes(3 << 20)
    seen = []
    with LocalServer(payload) as server:
        remote = RemoteFile("blob.bin", server.url, hashlib.md5(payload).hexdigest())
        path = download(remote, tmp_path, progress=lambda d, t: seen.append((d, t)))
    assert path.read_bytes() == payload
    assert seen[-1] == (len(payload), len(payload))
    assert _leftovers(tmp_path) == ["blob.bin"]


def test_download_md5_mismatch_leaves_nothing(tmp_path):
    with LocalServer(b"not what was promised") as server:
        remote = RemoteFile("blob.bin", server.url, "0" * 32)
        with pytest.raises(DatasetError, match="checksum mismatch"):
            download(remote, tmp_path)
    assert _leftovers(tmp_path) == []


def test_download_interrupted_leaves_nothing(tmp_path):
    payload = np.random.default_rng(1).bytes(1 << 20)
    with LocalServer(payload, truncate_to=100_000) as server:
        remote = RemoteFile("blob.bin", server.url, hashlib.md5(payload).hexdigest())
        with pytest.raises(DatasetError, match="interrupted"):
            download(remote, tmp_path)
    assert _leftovers(tmp_path) == []


def test_unreachable_server_message(tmp_path):
    remote = RemoteFile("blob.bin", "http://127.0.0.1:9/none", "0" * 32)
    with pytest.raises(DatasetError, match="could not download blob.bin"):
        download(remote, tmp_path, timeout=5)


@pytest.fixture
def tiny_medmnist(monkeypatch):
    """A MedMNIST-shaped catalog entry whose files are served from 127.0.0.1."""
    payload = _tiny_medmnist_npz()
    with LocalServer(payload) as server:
        meta = {"python_class": "TinyMNIST", "description": "test", "task": "multi-class",
                "label": {"0": "a", "1": "b", "2": "c"}, "n_channels": 1,
                "n_samples": {"train": 12, "val": 4, "test": 6}, "license": "test"}
        for size in (28, 64, 128, 224):
            suffix = "" if size == 28 else f"_{size}"
            meta[f"url{suffix}"] = server.url
            meta[f"MD5{suffix}"] = hashlib.md5(payload).hexdigest() if size == 28 else "0" * 32
        monkeypatch.setattr(catalog_module, "medmnist_info", lambda: {"tinymnist": meta})
        yield server


def test_load_dataset_downloads_verifies_and_reuses(tiny_medmnist):
    info = get_info("tinymnist")
    assert dataset_state(info, 28).state == "downloadable"
    stages = []
    ds = load_dataset("tinymnist", 28, progress=lambda stage, d, t: stages.append(stage))
    assert ds.train.x.shape == (12, 28, 28, 1) and ds.class_names == ("a", "b", "c")
    assert stages and stages[0] == "download tinymnist.npz"
    assert dataset_state(info, 28).state == "ready"
    load_dataset("tinymnist", 28)
    assert tiny_medmnist.requests == 1  # the second load used the verified file


def test_native_size_is_downloaded_never_resized_from_28(tiny_medmnist):
    load_dataset("tinymnist", 28)
    # 64 px has its own file (here with a wrong checksum): it must be fetched, not made from 28 px.
    with pytest.raises(DatasetError, match="checksum mismatch for tinymnist_64.npz"):
        load_dataset("tinymnist", 64)


def test_offline_missing_file_message(tiny_medmnist):
    with pytest.raises(DatasetError, match="not on this machine and downloading is off"):
        load_dataset("tinymnist", 28, download_missing=False)


def test_failed_download_is_one_sentence_naming_dataset_url_and_lab_data_path(monkeypatch):
    from helpers import unreachable_medmnist

    from engines.datasets import DownloadFailed, fetch

    name = unreachable_medmnist(monkeypatch)
    for attempt in (lambda: fetch(name, 28), lambda: load_dataset(name, 28)):
        with pytest.raises(DownloadFailed) as e:
            attempt()
        text = str(e.value)
        assert "\n" not in text and text.count(". ") == 0 and text.endswith("run again.")
        assert name in text and "http://127.0.0.1:9/lostmnist.npz" in text and "LAB_DATA_PATH" in text
    fetch("digits")  # nothing to fetch: nothing happens


def test_local_file_with_wrong_md5_is_reported(tiny_medmnist):
    from engines.paths import data_root
    folder = data_root() / "tinymnist"
    folder.mkdir(parents=True)
    (folder / "tinymnist.npz").write_bytes(_tiny_medmnist_npz(n=(12, 4, 7)))
    with pytest.raises(DatasetError, match="has MD5 .* expected"):
        load_dataset("tinymnist", 28)


# -- file formats and safety ---------------------------------------------------------------------

def test_truncated_and_non_npz_files(tmp_path):
    good = tmp_path / "good.npz"
    good.write_bytes(_tiny_medmnist_npz())
    assert read_npz(good, ["train_images"])["train_images"].shape == (12, 28, 28)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(DatasetError, match="not a readable .npz"):
        read_npz(truncated, ["train_images"])
    text = tmp_path / "text.npz"
    text.write_text("<html>rate limited</html>")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        read_npz(text, ["train_images"])
    with pytest.raises(DatasetError, match="lacks the arrays"):
        read_npz(good, ["x_train"])


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, train_images=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DatasetError, match="not a readable .npz"):
        read_npz(path, ["train_images"])


def _cifar_archive(path: Path, batches: dict[str, object]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in batches.items():
            data = pickle.dumps(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_cifar_batches_read_without_running_code(tmp_path):
    rng = np.random.default_rng(0)
    batch = lambda n: {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n))}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    good = tmp_path / "good.tar.gz"
    _cifar_archive(good, {n: batch(4) for n in names})
    arrays = read_cifar10_archive(good)
    assert arrays["train"][0].shape == (20, 32, 32, 3) and arrays["test"][1].tolist() == [0, 1, 2, 3]

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.tar.gz"
    _cifar_archive(evil, {**{n: batch(4) for n in names}, "test_batch": Evil()})
    with pytest.raises(DatasetError, match="refusing to load"):
        read_cifar10_archive(evil)
    assert not (tmp_path / "pwned").exists()


# -- resolution and resizing ---------------------------------------------------------------------

def test_resize_path_is_cached_and_antialiased():
    from engines.paths import data_root
    ds = load_dataset("digits", 28)
    cache = data_root() / "resized" / "digits_8px_to_28px.npz"
    assert cache.is_file() and ds.train.x.shape == (1259, 28, 28, 1)
    native = load_dataset("digits")
    expected = np.asarray(Image.fromarray(native.train.x[0, ..., 0], "L").resize((28, 28), Image.Resampling.LANCZOS))
    assert np.array_equal(ds.train.x[0, ..., 0], expected)
    # A damaged cache is rebuilt, not trusted.
    cache.write_bytes(b"garbage")
    again = load_dataset("digits", 28)
    assert np.array_equal(again.train.x, ds.train.x)


def test_digits_are_kept_as_arrays_and_read_back_without_scikit_learn(tmp_path):
    """The first read writes the splits to the data root; the next process reads them
    without importing scikit-learn (1.5 s per worker); a damaged or wrong file is rebuilt."""
    import subprocess
    import sys

    from engines.paths import data_root

    first = load_dataset("digits")
    cache = data_root() / "digits" / "digits_8px.npz"
    assert cache.is_file()
    code = ("import sys; from engines.datasets import load_dataset; d = load_dataset('digits'); "
            "import numpy as np; np.save(sys.argv[1], d.train.x); print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.npy")], capture_output=True, text=True,
                         timeout=120, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.stdout.strip() == "False", out.stderr
    assert np.array_equal(np.load(tmp_path / "x.npy"), first.train.x)
    for damage in (b"garbage", None):
        if damage:
            cache.write_bytes(damage)
        else:  # a valid file of the wrong content: a split cut short
            np.savez(cache, **{f"{s}_{name}": getattr(getattr(first, s), k)[:10] for s in ("train", "val", "test")
                               for k, name in (("x", "images"), ("y", "labels"))})
        with pytest.warns(RuntimeWarning, match="was damaged"):
            again = load_dataset("digits")
        assert np.array_equal(again.train.x, first.train.x) and np.array_equal(again.test.y, first.test.y)


def test_digits_are_read_from_scikit_learns_file_as_load_digits_gives_them():
    """The first read takes scikit-learn's own digits file without importing scikit-learn
    (1.5 s), and gets exactly load_digits()'s images and targets."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from engines.datasets import loaders

    images, target = loaders._read_digits()
    want = load_digits()
    assert images.dtype == want.images.dtype and np.array_equal(images, want.images)
    assert np.array_equal(target, want.target)
    code = "import sys; from engines.datasets import loaders; loaders._read_digits(); print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.stdout.strip() == "False", out.stdout + out.stderr

def test_resize_shrinks_with_antialiasing():
    stripes = np.zeros((1, 64, 64, 1), dtype=np.uint8)
    stripes[:, :, ::2] = 255  # one-pixel stripes: a nearest resize keeps 0/255, antialiasing averages
    small = resize_images(stripes, 16)
    assert 100 < small.mean() < 155 and small.std() < 30


@pytest.mark.parametrize("resolution,match", [(3, "out of range"), (5000, "out of range"), ("28", "whole number")])
def test_bad_resolution(resolution, match):
    with pytest.raises(DatasetError, match=match):
        load_dataset("digits", resolution)


def test_unknown_dataset_lists_known():
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet-1k'.*pathmnist"):
        load_dataset("imagenet-1k")


def test_unsupported_chestmnist_says_why():
    info = get_info("chestmnist")
    state = dataset_state(info)
    assert state.state == "unsupported" and "multi-label" in state.reason
    with pytest.raises(DatasetError, match="not supported: multi-label"):
        load_dataset("chestmnist")


def test_catalog_covers_all_2d_medmnist_and_the_rest():
    names = list(catalog())
    assert names[:2] == ["pathmnist", "bloodmnist"]
    for expected in ["dermamnist", "octmnist", "pneumoniamnist", "retinamnist", "breastmnist", "tissuemnist",
                     "organamnist", "organcmnist", "organsmnist", "chestmnist", "mnist", "fashion_mnist",
                     "cifar10", "breast_histology_idc", "imagenet100", "folder", "synthetic", "digits"]:
        assert expected in names
    assert not any(n.endswith("3d") for n in names)
    assert get_info("pathmnist").files[224][0].md5 == "2c51a510bcdc9cf8ddb2af93af1eadec"


# -- local folders -------------------------------------------------------------------------------

def _image_folder(root: Path, classes=("cat", "dog", "fox"), per_class=10, size=20, nested=False):
    rng = np.random.default_rng(1)
    for c_i, cls in enumerate(classes):
        for i in range(per_class):
            folder = root / f"patient{i % 2}" / cls if nested else root / cls
            folder.mkdir(parents=True, exist_ok=True)
            noise = rng.integers(0, 20, (size, size, 3), dtype=np.uint8)
            arr = np.full((size, size, 3), c_i * 80, dtype=np.uint8) + noise
            Image.fromarray(arr).save(folder / f"{i}.png")


@pytest.fixture
def data_dir(tmp_path, monkeypatch, _isolated_cache):
    """A temporary folder that is a data folder: a folder dataset reads only inside the
    data root and the LAB_DATA_PATH folders (engines.datasets.folders)."""
    monkeypatch.setenv("LAB_DATA_PATH", os.pathsep.join(filter(None, [os.environ.get("LAB_DATA_PATH"),
                                                                      str(tmp_path)])))
    return tmp_path


def test_folder_split_by_seed(data_dir):
    _image_folder(data_dir / "imgs")
    a = load_dataset("folder", path=str(data_dir / "imgs"), seed=0)
    assert a.class_names == ("cat", "dog", "fox") and a.resolution == 20  # the images' own size
    assert (len(a.train), len(a.val), len(a.test)) == (18, 6, 6)  # 70/15/15 of 10 per class, rounded
    for part in a.splits().values():
        assert np.bincount(part.y, minlength=3).min() >= 1  # stratified: every class in every split
    b = load_dataset("folder", 16, path=str(data_dir / "imgs"), seed=0)
    assert b.train.x.shape[1:] == (16, 16, 3) and np.array_equal(a.train.y, b.train.y)
    c = load_dataset("folder", path=str(data_dir / "imgs"), seed=1)
    assert not np.array_equal(np.sort(a.test.x.reshape(len(a.test), -1), axis=0),
                              np.sort(c.test.x.reshape(len(c.test), -1), axis=0))


def test_idc_layout_takes_class_from_parent_folder(data_dir, monkeypatch):
    _image_folder(data_dir / "idc", classes=("0", "1"), per_class=10, size=50, nested=True)
    ds = load_dataset("breast_histology_idc", path=str(data_dir / "idc"))
    assert ds.class_names == ("0", "1") and ds.resolution == 50 and ds.channels == 3
    assert len(ds.train) + len(ds.val) + len(ds.test) == 20


def test_folder_with_one_class(data_dir):
    _image_folder(data_dir / "one", classes=("only",))
    with pytest.raises(DatasetError, match="only the class 'only'.*at least two classes"):
        load_dataset("folder", path=str(data_dir / "one"))


def test_folder_with_unreadable_image_names_it(data_dir):
    from engines.paths import data_root
    _image_folder(data_dir / "imgs")
    (data_dir / "imgs" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match="cannot read image .*broken.png"):
        load_dataset("folder", 20, path=str(data_dir / "imgs"))
    assert not [p for p in data_root().rglob("*") if ".part" in p.name]


def test_missing_folder(data_dir):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("folder", path=str(data_dir / "nope"))
    assert dataset_state(get_info("imagenet100")).state == "needs_folder"


# -- the command line ----------------------------------------------------------------------------

def test_cli_datasets_json():
    out = subprocess.run([sys.executable, "-m", "engines", "datasets", "--json"], cwd=REPO,
                         capture_output=True, text=True, check=True, env=os.environ.copy()).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    for row in rows.values():
        assert {"name", "task", "classes", "channels", "resolutions", "splits", "state", "reason"} <= set(row)
    assert rows["pathmnist"]["resolutions"] == [28, 64, 128, 224] and rows["pathmnist"]["classes"] == 9
    assert rows["chestmnist"]["state"] == "unsupported"
    assert rows["digits"]["state"] == "offline"
    assert rows["cifar10"]["download_bytes"] == 170498071


def test_cli_datasets_table_and_bad_args():
    table = subprocess.run([sys.executable, "-m", "engines", "datasets"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout
    assert "pathmnist" in table and "state" in table
    bad = subprocess.run([sys.executable, "-m", "engines", "datasets", "--resolution", "big"], cwd=REPO,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid int value" in bad.stderr


def test_a_native_file_upsamples_when_asked_with_the_source_option():
    """BreastMNIST's 28 px file read and resized to 64 px (where the 64 px file is not
    here): an option, so it is part of the run's key, never a silent fallback."""
    need_shared("breastmnist.npz")
    ds = load_dataset("breastmnist", 64, source=28)
    assert ds.train.x.shape[1:] == (64, 64, 1) and "28px_to_64px" in ds.source
    from engines.datasets import fetch

    fetch("breastmnist", 64, source=28)  # what the queue does first: the 28 px file is here, nothing to fetch
    with pytest.raises(DatasetError, match="source must be one of breastmnist's native sizes"):
        load_dataset("breastmnist", 64, source=30)
    from engines.runs.spec import RunSpec, SpecError

    RunSpec(dataset="breastmnist", resolution=64, dataset_options={"source": 28})
    with pytest.raises(SpecError, match="native sizes"):
        RunSpec(dataset="breastmnist", resolution=64, dataset_options={"source": 30})
    with pytest.raises(SpecError, match="digits takes no options"):
        RunSpec(dataset="digits", dataset_options={"source": 8})
