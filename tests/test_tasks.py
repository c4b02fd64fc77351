"""Tasks of SPEC §7: the synthetic task exactly, the loaders on tiny files of the real formats, the choice
of examples, the normalisations, the embedded MNIST default and the Hydra config group."""
import gzip
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from driftsim.app import task_arguments
from driftsim.config import ImagePairTaskConfig, SyntheticTaskConfig, register_configs
from driftsim.tasks import Task, load_cifar10, load_digits, load_mnist, make_task, synthetic_task

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
CONF_DIR = Path(__file__).resolve().parents[1] / "driftsim" / "conf"


# ---------- tiny files of the real formats ----------

def write_idx(path: Path, array: np.ndarray, magic: int, gz: bool) -> None:
    """An IDX file as the MNIST distribution writes it: big-endian magic, big-endian dimensions, ubyte data."""
    raw = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def fake_split(rng: np.random.Generator, n: int, side: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """n images (pixels 1..255, never blank) with labels cycling through 0..9."""
    return rng.integers(1, 256, size=(n, side, side)), np.arange(n) % 10


def write_mnist(folder: Path, gz: bool, n_train: int = 60, n_test: int = 40, seed: int = 0) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images, labels = fake_split(rng, n)
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images, 0x803, gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, 0x801, gz)
        arrays[split] = (images.reshape(n, -1), labels)
    return arrays


def write_cifar(folder: Path, n_per_batch: int = 20) -> dict:
    """Six batches as the 'CIFAR-10 python version' holds them: dicts with bytes keys, uint8 data [n, 3072]."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    arrays = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(1, 256, size=(n_per_batch, 3072)).astype(np.uint8)
        labels = rng.permutation(np.arange(n_per_batch) % 10).tolist()
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [b"x.png"] * n_per_batch}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        arrays[name] = (data, np.array(labels))
    return arrays


def pair(name="mnist", **kw) -> dict:
    """make_task's arguments of a small image pair."""
    return {"name": name, "n_per_class": 2, "n_test": 2, "normalize": "none", **kw}


def check_task(task: Task, n_per_class: int, n_test: int) -> None:
    """The Task contract: float64 CPU tensors, labels ±1 with the first class +1, int64 indices."""
    p = 2 * n_per_class
    assert task.x_train.dtype == task.x_test.dtype == torch.float64
    assert task.x_train.shape[0] == p and task.x_test.shape[0] == n_test
    assert task.x_train.shape[1] == task.x_test.shape[1]
    assert task.y_train.tolist() == [1.0] * n_per_class + [-1.0] * n_per_class
    assert task.y_test.tolist() == [1.0] * (n_test // 2) + [-1.0] * (n_test // 2)
    assert task.train_indices.dtype == task.test_indices.dtype == np.int64
    assert task.train_indices.shape == (p,) and task.test_indices.shape == (n_test,)


# ---------- synthetic ----------

@pytest.mark.parametrize("n_train, overlap, input_dim", [(4, 0.75, None), (6, -0.3, 20), (2, 1.0, None)])
def test_synthetic_gram_and_overlap(n_train, overlap, input_dim):
    task = synthetic_task(n_train, overlap, input_dim)
    n0 = input_dim or n_train + 1
    assert task.x_train.shape == (n_train, n0) and task.x_test.shape == (1, n0)
    gram = task.x_train @ task.x_train.T / n0
    np.testing.assert_allclose(gram.numpy(), np.eye(n_train), rtol=0, atol=1e-15)
    cross = (task.x_test @ task.x_train.T / n0)[0]
    np.testing.assert_allclose(cross.numpy(), [overlap] + [0.0] * (n_train - 1), rtol=0, atol=1e-15)
    assert abs(float(task.x_test.pow(2).sum()) / n0 - 1.0) < 1e-15
    assert task.y_train.tolist() == [1.0, -1.0] * (n_train // 2)
    assert task.y_test.tolist() == [1.0] and task.classes == ()
    assert task.train_indices.tolist() == list(range(n_train))
    assert make_task("synthetic", n_train=n_train, overlap=overlap, input_dim=input_dim, seed=5) \
        .x_test.equal(task.x_test)


@pytest.mark.parametrize("kw, key", [({"n_train": 3, "overlap": 0.5}, "task.n_train"),
                                     ({"n_train": 4, "overlap": 1.5}, "task.overlap"),
                                     ({"n_train": 4, "overlap": 0.5, "input_dim": 4}, "task.input_dim")])
def test_synthetic_rejects_bad_values(kw, key):
    with pytest.raises(ValueError, match=key):
        synthetic_task(**kw)


# ---------- MNIST IDX files ----------

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_mnist_idx_files_load(tmp_path, gz, layout):
    folder = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    arrays = write_mnist(folder, gz)
    train, test = load_mnist(tmp_path)
    np.testing.assert_array_equal(train.pixels, arrays["train"][0])
    np.testing.assert_array_equal(test.labels, arrays["t10k"][1])

    task = make_task(**pair(classes=[3, 7], n_per_class=4, n_test=6, root=str(tmp_path)), seed=0)
    check_task(task, 4, 6)
    train_pixels, train_labels = arrays["train"]
    test_pixels, test_labels = arrays["t10k"]
    # with normalize=none the inputs are the chosen images scaled to [0, 1], training from the train files
    np.testing.assert_array_equal(task.x_train.numpy(), train_pixels[task.train_indices] / 255.0)
    np.testing.assert_array_equal(task.x_test.numpy(), test_pixels[task.test_indices] / 255.0)
    assert train_labels[task.train_indices].tolist() == [3] * 4 + [7] * 4
    assert test_labels[task.test_indices].tolist() == [3] * 3 + [7] * 3
    assert task.classes == (3, 7) and "t10k-images-idx3-ubyte" in task.source


def test_mnist_missing_files_named(tmp_path):
    write_mnist(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as err:
        make_task(**pair(root=str(tmp_path)), seed=0)
    message = str(err.value)
    assert "t10k-labels-idx1-ubyte" in message and str(tmp_path / "MNIST" / "raw") in message
    assert "torchvision" in message and "train-images-idx3-ubyte" in message


@pytest.mark.parametrize("damage, match", [
    (lambda raw: raw[:len(raw) // 2], "corrupt or truncated gzip"),  # gzip stream cut short
    (lambda raw: raw[:12] + bytes(b ^ 0xFF for b in raw[12:40]) + raw[40:], "corrupt or truncated gzip"),
])
def test_mnist_corrupt_gzip(tmp_path, damage, match):
    write_mnist(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=match) as err:
        load_mnist(tmp_path)
    assert str(path) in str(err.value)


def test_mnist_wrong_magic(tmp_path):
    write_mnist(tmp_path, gz=False)
    images, _ = fake_split(np.random.default_rng(0), 60)
    write_idx(tmp_path / "train-labels-idx1-ubyte", images, 0x803, gz=False)  # images where labels belong
    with pytest.raises(ValueError, match="magic number 0x803, expected 0x801"):
        load_mnist(tmp_path)


@pytest.mark.parametrize("cut, match", [(-5, "is truncated"), (6, "is truncated"), (None, "longer than declared")])
def test_mnist_truncated_or_overlong(tmp_path, cut, match):
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    raw = path.read_bytes()
    path.write_bytes(raw + b"\0" if cut is None else raw[:cut])
    with pytest.raises(ValueError, match=match):
        load_mnist(tmp_path)


def test_mnist_inconsistent_files(tmp_path):
    write_mnist(tmp_path, gz=False, n_train=60)
    _, labels = fake_split(np.random.default_rng(0), 59)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels, 0x801, gz=False)
    with pytest.raises(ValueError, match="60 images but .* 59 labels"):
        load_mnist(tmp_path)
    write_mnist(tmp_path, gz=False)
    images, _ = fake_split(np.random.default_rng(0), 40, side=5)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images, 0x803, gz=False)
    with pytest.raises(ValueError, match="16 pixels but .* 25"):
        load_mnist(tmp_path)


# ---------- CIFAR-10 pickle batches ----------

@pytest.mark.parametrize("inside", [True, False])
def test_cifar_batches_load(tmp_path, inside):
    arrays = write_cifar(tmp_path / "cifar-10-batches-py" if inside else tmp_path)
    train, test = load_cifar10(tmp_path)
    assert train.pixels.shape == (100, 3072) and test.pixels.shape == (20, 3072)
    task = make_task(**pair("cifar10", classes=[3, 5], root=str(tmp_path)), seed=2)
    check_task(task, 2, 2)
    np.testing.assert_array_equal(task.x_train.numpy(), train.pixels[task.train_indices] / 255.0)
    np.testing.assert_array_equal(task.x_test.numpy(), arrays["test_batch"][0][task.test_indices] / 255.0)
    assert train.labels[task.train_indices].tolist() == [3, 3, 5, 5]
    assert arrays["test_batch"][1][task.test_indices].tolist() == [3, 5]


def test_cifar_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs task.root"):
        make_task(**pair("cifar10", classes=[3, 5]), seed=0)
    with pytest.raises(FileNotFoundError, match="test_batch.*cifar-10-batches-py.*cs.toronto.edu"):
        load_cifar10(tmp_path)
    write_cifar(tmp_path)
    (tmp_path / "data_batch_2").write_bytes(b"\x80\x02}q\x00(")  # cut-off pickle
    with pytest.raises(ValueError, match="data_batch_2 is not a CIFAR-10 python batch"):
        load_cifar10(tmp_path)
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps({b"data": np.zeros((3, 10), np.uint8), b"labels": [0] * 3}))
    with pytest.raises(ValueError, match=r"shape \(3, 10\)"):
        load_cifar10(tmp_path)


def test_cifar_pickle_runs_no_code(tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Payload()}))
    with pytest.raises(ValueError, match="refusing to load pathlib"):
        load_cifar10(tmp_path)
    assert not marker.exists()


# ---------- choice of examples ----------

def test_seed_fixes_the_examples(tmp_path):
    write_mnist(tmp_path, gz=False, n_train=200, n_test=100)
    cfg = pair(classes=[1, 2], n_per_class=5, n_test=6, root=str(tmp_path))
    a, b, c = make_task(**cfg, seed=3), make_task(**cfg, seed=3), make_task(**cfg, seed=4)
    assert np.array_equal(a.train_indices, b.train_indices) and np.array_equal(a.test_indices, b.test_indices)
    assert a.x_train.equal(b.x_train) and a.x_test.equal(b.x_test)
    assert not np.array_equal(a.train_indices, c.train_indices)
    assert not np.array_equal(a.test_indices, c.test_indices)


@pytest.mark.parametrize("name", ["mnist", "digits"])
def test_one_split_gives_disjoint_train_and_test(name):
    """Embedded MNIST and the digits serve training and test from one split: no example is in both."""
    for seed in range(3):
        task = make_task(**pair(name, n_per_class=20, n_test=40), seed=seed)
        check_task(task, 20, 40)
        assert not set(task.train_indices) & set(task.test_indices)
        assert len(set(task.test_indices)) == 40


@pytest.mark.parametrize("kw, match", [
    ({"classes": [0, 12]}, r"task.classes=\[0, 12\] is not allowed: task=digits has the classes \[0, 1, 2"),
    ({"n_per_class": 10_000}, r"task.n_per_class=10000 is not allowed: at most 17\d"),
    ({"n_per_class": 170, "n_test": 100}, r"task.n_test=100 is not allowed: at most \d+ \(half per class\)"),
])
def test_too_many_or_unknown(kw, match):
    with pytest.raises(ValueError, match=match):
        make_task(**pair("digits", **kw), seed=0)


def test_too_many_test_examples_in_separate_split(tmp_path):
    write_mnist(tmp_path, gz=False, n_train=100, n_test=40)  # 4 test images per class
    make_task(**pair(n_per_class=10, n_test=8, root=str(tmp_path)), seed=0)
    with pytest.raises(ValueError, match=r"task.n_test=10 is not allowed: at most 8 .*MNIST test split"):
        make_task(**pair(n_per_class=10, n_test=10, root=str(tmp_path)), seed=0)


def test_config_checks():
    with pytest.raises(ValueError, match="task.n_test"):
        make_task(**pair(n_test=3))
    with pytest.raises(ValueError, match="task.n_test"):
        ImagePairTaskConfig(n_test=3)  # the same rule, before any work
    with pytest.raises(ValueError, match="task.root"):
        make_task(**pair("digits", root="/somewhere"), seed=0)
    with pytest.raises(ValueError, match="task.n_train is not a key of task=digits"):
        make_task("digits", n_train=4, seed=0)
    with pytest.raises(ValueError, match="task='imagenet' is not allowed: one of"):
        make_task("imagenet")


# ---------- normalisation ----------

def test_normalisations():
    raw = make_task(**pair("digits", n_per_class=30, n_test=20, normalize="none"), seed=1)
    assert float(raw.x_train.min()) >= 0.0 and float(raw.x_train.max()) <= 1.0 and float(raw.x_train.max()) > 0.9
    glob = make_task(**pair("digits", n_per_class=30, n_test=20, normalize="global"), seed=1)
    n0 = glob.x_train.shape[1]
    assert abs(float((glob.x_train ** 2).sum(1).mean()) / n0 - 1.0) < 1e-12
    # one scalar for training and test alike: the ratios between the examples' norms survive
    c = float(glob.x_train.norm() / raw.x_train.norm())
    assert torch.allclose(glob.x_train, c * raw.x_train, rtol=1e-12, atol=0)
    assert torch.allclose(glob.x_test, c * raw.x_test, rtol=1e-12, atol=0)
    per = make_task(**pair("digits", n_per_class=30, n_test=20, normalize="per_example"), seed=1)
    for x in (per.x_train, per.x_test):
        np.testing.assert_allclose(((x ** 2).sum(1) / n0).numpy(), 1.0, rtol=1e-12)
    assert torch.allclose(per.x_train * raw.x_train.norm(dim=1, keepdim=True) / n0 ** 0.5, raw.x_train, rtol=1e-12)


@pytest.mark.parametrize("normalize", ["global", "per_example"])
def test_blank_images_refused(tmp_path, normalize):
    write_mnist(tmp_path, gz=False)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((60, 4, 4)), 0x803, gz=False)
    with pytest.raises(ValueError, match=f"task.normalize='{normalize}' is not allowed: .*blank"):
        make_task(**pair(root=str(tmp_path), normalize=normalize), seed=0)


# ---------- the embedded default and the full set ----------

def test_embedded_mnist_default():
    train, test = load_mnist()
    assert train is test and train.pixels.shape == (10_000, 784) and train.pixels.dtype == np.uint8
    assert np.bincount(train.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    task = make_task("mnist", seed=0)  # task=mnist with its defaults: 0/1, 50 per class
    check_task(task, 50, 100)
    assert train.labels[task.train_indices].tolist() == [0] * 50 + [1] * 50
    assert "embedded" in task.source and task.x_train.shape[1] == 784


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"no full MNIST set at {SHARED_MNIST}")
def test_full_mnist_through_root():
    start = time.perf_counter()
    task = make_task("mnist", classes=[4, 9], root=str(SHARED_MNIST), seed=0)
    elapsed = time.perf_counter() - start
    check_task(task, 50, 100)
    train, test = load_mnist(SHARED_MNIST)
    assert train.pixels.shape == (60_000, 784) and test.pixels.shape == (10_000, 784)
    assert train.labels[task.train_indices].tolist() == [4] * 50 + [9] * 50
    assert test.labels[task.test_indices].tolist() == [4] * 50 + [9] * 50
    assert "train-images-idx3-ubyte" in task.source and elapsed < 5.0


def test_digits_set():
    train, test = load_digits()
    assert train is test and train.pixels.shape == (1797, 64) and train.pixel_max == 16.0


# ---------- Hydra config group ----------

@pytest.mark.parametrize("name, schema", [("synthetic", SyntheticTaskConfig), ("mnist", ImagePairTaskConfig),
                                          ("digits", ImagePairTaskConfig), ("cifar10", ImagePairTaskConfig)])
def test_task_config_group(name, schema):
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=None, overrides=[f"+task={name}"])
    task_cfg = OmegaConf.to_object(cfg.task)
    assert type(task_cfg) is schema and task_cfg.name == name
    # the same as the file merged onto its schema by OmegaConf alone
    values = OmegaConf.load(CONF_DIR / "task" / f"{name}.yaml")
    values.pop("defaults")
    assert OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values)) == task_cfg
    if name in ("synthetic", "digits"):  # no data files needed: the config makes the task as app.py maps it
        assert make_task(**task_arguments(task_cfg), seed=0).name == name
    if name == "cifar10":
        assert task_cfg.classes == [3, 5]


# ---------- damaged, unreadable or degenerate data files: the path and what is wrong ----------

def _emptied(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage,match", [
    (_emptied, r"train-images-idx3-ubyte is empty \(0 bytes\)"),
    (lambda p: write_idx(p, np.zeros((60, 0, 0)), 0x803, gz=False), r"train-images-idx3-ubyte holds 60 images of 0 × 0 "
                                                                    r"pixels: no data"),
])
def test_damaged_mnist_files_name_the_path(tmp_path, damage, match):
    write_mnist(tmp_path, gz=False)
    target = tmp_path / "train-images-idx3-ubyte"
    damage(target)
    with pytest.raises(ValueError, match=match):
        make_task(**pair(root=str(tmp_path)), seed=0)


def test_unreadable_data_file_names_the_path(tmp_path, monkeypatch):
    write_mnist(tmp_path, gz=False)
    target, read = tmp_path / "train-images-idx3-ubyte", Path.read_bytes

    def denied(path):  # chmod 0 does not stop root, who may run the tests
        if path == target:
            raise PermissionError(13, "Permission denied", str(path))
        return read(path)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte cannot be read: Permission denied"):
        make_task(**pair(root=str(tmp_path)), seed=0)


def test_a_set_of_one_class_is_refused_naming_it(tmp_path):
    write_mnist(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(60), 0x801, gz=False)
    with pytest.raises(ValueError, match=r"MNIST training split .*train-images.* holds examples of 1 class\(es\) only"):
        make_task(**pair(root=str(tmp_path)), seed=0)


def test_unreadable_or_empty_cifar_batch_names_it(tmp_path):
    write_cifar(tmp_path)
    _emptied(tmp_path / "data_batch_3")
    with pytest.raises(ValueError, match=r"data_batch_3 is empty \(0 bytes\)"):
        load_cifar10(tmp_path)


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_cifar_batches_of_any_pickle_protocol_load(tmp_path, protocol):
    arrays = write_cifar(tmp_path)
    for name, (data, labels) in arrays.items():
        batch = {b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": data}
        (tmp_path / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    train, test = load_cifar10(tmp_path)
    np.testing.assert_array_equal(test.pixels, arrays["test_batch"][0])
    assert train.pixels.shape == (100, 3072)
