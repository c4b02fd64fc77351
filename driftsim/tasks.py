"""Tasks of SPEC §7: the synthetic orthogonal task and two-class image tasks (MNIST, CIFAR-10, scikit-learn digits).

A task is a frozen `Task` of float64 CPU tensors with labels ±1. Nothing is ever downloaded: images come
from the standard files a user already has (``task.root``), from the MNIST test split embedded in
``driftsim/data`` (the default of ``task=mnist``), or from scikit-learn's bundled 8×8 digits.
"""
from __future__ import annotations

import gzip
import io
import math
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np
import torch

from .validation import check_image_pair_task, check_synthetic_task, choice

__all__ = ["Task", "ImageSet", "make_task", "synthetic_task", "image_pair_task", "load_mnist", "load_cifar10",
           "load_digits", "TASKS", "IMAGE_SETS", "NORMALIZATIONS"]

IMAGE_SETS = ("mnist", "digits", "cifar10")
TASKS = ("synthetic", *IMAGE_SETS)  # task=... of the command line
NORMALIZATIONS = ("global", "per_example", "none")  # task.normalize, SPEC §7
# the keys of each kind of task (task.*), beyond its name
_SYNTHETIC_KEYS = ("n_train", "overlap", "input_dim")
_IMAGE_PAIR_KEYS = ("classes", "n_per_class", "n_test", "root", "normalize")

EMBEDDED_DIR = Path(__file__).with_name("data")

_MNIST_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_MNIST_HOWTO = ("Get them from the official MNIST distribution (http://yann.lecun.com/exdb/mnist/, or the mirror "
                "torchvision uses), or run torchvision.datasets.MNIST(root, download=True), which writes "
                "root/MNIST/raw; leave task.root unset to use the MNIST test split embedded in driftsim.")
_IDX_LABELS, _IDX_IMAGES = 0x801, 0x803  # IDX magic: unsigned bytes (0x08), 1 or 3 dimensions

_CIFAR_NAMES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_CIFAR_HOWTO = ("Get the 'CIFAR-10 python version' (cifar-10-python.tar.gz) from "
                "https://www.cs.toronto.edu/~kriz/cifar.html and unpack it into task.root, or run "
                "torchvision.datasets.CIFAR10(root, download=True).")


@dataclass(frozen=True)
class Task:
    """A task of SPEC §7, ready for the theory and the simulations.

    x_train [P, N0] and x_test [Q, N0] are float64 CPU tensors, normalised as ``task.normalize`` says;
    y_train [P] and y_test [Q] are float64 with entries ±1 (+1 = the first class). ``train_indices`` [P]
    and ``test_indices`` [Q] (int64) locate every example in its source split, so that a run can be traced
    back to the original images; ``source`` says which files (or generator) the examples came from.
    """
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[int, ...]
    train_indices: np.ndarray
    test_indices: np.ndarray
    source: str


class ImageSet(NamedTuple):
    """One split of a labelled image set as stored: pixels [n, D] (flattened, channels included), labels [n]."""
    pixels: np.ndarray  # [n, D], values in [0, pixel_max]; kept in the stored dtype (uint8) until chosen
    labels: np.ndarray  # [n] int64
    pixel_max: float
    source: str


def synthetic_task(n_train: int = 4, overlap: float = 0.75, input_dim: Optional[int] = None) -> Task:
    """The synthetic task of SPEC §7 (paper SI E.1).

    Training inputs x_μ = sqrt(N0) e_μ, μ = 1..P, so x_μ.x_ν/N0 = δ_μν; labels +1, −1, +1, ...; one test point
    x = ρ x_1 + sqrt(1 − ρ²) sqrt(N0) e_{P+1} with ρ = overlap, so x.x_1/N0 = ρ, |x|²/N0 = 1, x orthogonal to
    the other inputs; its label is y_1 = +1.

    Parameters
    ----------
    n_train : int
        P (task.n_train), even and >= 2.
    overlap : float
        ρ (task.overlap) in [-1, 1].
    input_dim : int, optional
        N0 (task.input_dim) >= P + 1; None: P + 1.

    Returns
    -------
    Task
        x_train [P, N0], y_train [P], x_test [1, N0], y_test [1], float64.

    Raises
    ------
    ValueError
        Naming task.n_train, task.overlap or task.input_dim.
    """
    check_synthetic_task(n_train, overlap, input_dim)
    n0 = n_train + 1 if input_dim is None else input_dim
    scale = math.sqrt(n0)
    x_train = torch.eye(n_train, n0, dtype=torch.float64) * scale
    x_test = torch.zeros(1, n0, dtype=torch.float64)
    x_test[0, 0] = overlap * scale
    x_test[0, n_train] = math.sqrt(1.0 - overlap ** 2) * scale
    y_train = torch.tensor([1.0, -1.0] * (n_train // 2), dtype=torch.float64)
    return Task(name="synthetic", x_train=x_train, y_train=y_train, x_test=x_test,
                y_test=torch.ones(1, dtype=torch.float64), classes=(),
                train_indices=np.arange(n_train, dtype=np.int64), test_indices=np.arange(1, dtype=np.int64),
                source="synthetic orthonormal inputs (SPEC §7)")


def image_pair_task(name: str = "mnist", *, classes: Sequence[int] = (0, 1), n_per_class: int = 50,
                    n_test: int = 100, root: Optional[str | Path] = None, normalize: str = "global",
                    seed: int = 0) -> Task:
    """A two-class image task of SPEC §7 (paper SI E.2, E.3) from MNIST, CIFAR-10 or scikit-learn's digits.

    ``n_per_class`` training examples of each class (labels +1 for ``classes[0]``, −1 for ``classes[1]``,
    first class first) and ``n_test`` held-out examples (half per class), drawn by a numpy Generator seeded
    by ``seed``; images flattened (channels included), pixels scaled to [0, 1], then normalised.

    Parameters
    ----------
    name : str
        ``"mnist"``, ``"cifar10"`` or ``"digits"`` (task=...).
    classes : sequence of two ints
        The two class labels (task.classes).
    n_per_class, n_test : int
        Training examples per class (>= 1) and test examples in all (even, >= 0).
    root : str or Path, optional
        Folder of the data files (task.root; ``~`` expanded, a relative path is taken from the working
        directory). None: the embedded MNIST test split for mnist; needed for cifar10; must be None for
        digits (scikit-learn ships them).
    normalize : str
        ``"global"``, ``"per_example"`` or ``"none"`` (SPEC §7).
    seed : int
        Seeds the choice of examples.

    Returns
    -------
    Task
        x_train [2·n_per_class, N0], x_test [n_test, N0] with N0 the pixels per image, float64.

    Raises
    ------
    ValueError
        Naming the task key that is out of range or asks for more examples than the set holds, or a
        damaged data file.
    FileNotFoundError
        When the data files are not in ``root``, saying what is missing where and how to get it.
    """
    choice("task.name", name, IMAGE_SETS)
    check_image_pair_task(classes, n_per_class, n_test)
    choice("task.normalize", normalize, NORMALIZATIONS)
    if name == "mnist":
        train, test = load_mnist(root)
    elif name == "cifar10":
        train, test = load_cifar10(root)
    else:
        if root is not None:
            raise ValueError(f"task.root={root!r} is not allowed for task=digits: scikit-learn ships these "
                             "images; leave task.root unset")
        train, test = load_digits()
    classes = tuple(int(c) for c in classes)
    present = np.unique(train.labels).tolist()
    if len(present) < 2:
        raise ValueError(f"{train.source} holds examples of {len(present)} class(es) only ({present}): a two-class "
                         "task needs two; the file is damaged or not the full set")
    if any(c not in present for c in classes):
        raise ValueError(f"task.classes={list(classes)} is not allowed: task={name} has the classes {present}")
    same_split = test is train  # one split serves both
    per_class_test = n_test // 2
    _check_available(classes, n_per_class, n_test, train, test, same_split)
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in classes:
        pool = rng.permutation(np.flatnonzero(train.labels == c))
        # Sorted within a class so that the indices read in file order; the choice itself is the permutation's.
        train_idx.append(np.sort(pool[:n_per_class]))
        if same_split:
            # Test examples come from the same permutation past the training ones: never a training example.
            test_idx.append(np.sort(pool[n_per_class:n_per_class + per_class_test]))
        else:
            test_idx.append(np.sort(rng.permutation(np.flatnonzero(test.labels == c))[:per_class_test]))
    train_indices = np.concatenate(train_idx).astype(np.int64)
    test_indices = np.concatenate(test_idx).astype(np.int64)
    x_train = train.pixels[train_indices].astype(np.float64) / train.pixel_max
    x_test = test.pixels[test_indices].astype(np.float64) / test.pixel_max
    x_train, x_test = _normalise(x_train, x_test, normalize)
    labels = np.array([1.0, -1.0])
    source = train.source if same_split else f"{train.source}; test: {test.source}"
    return Task(name=name, x_train=torch.from_numpy(x_train),
                y_train=torch.from_numpy(labels.repeat(n_per_class)), x_test=torch.from_numpy(x_test),
                y_test=torch.from_numpy(labels.repeat(per_class_test)),
                classes=classes, train_indices=train_indices, test_indices=test_indices, source=source)


def make_task(name: str, *, seed: int = 0, n_train: Optional[int] = None, overlap: Optional[float] = None,
              input_dim: Optional[int] = None, classes: Optional[Sequence[int]] = None,
              n_per_class: Optional[int] = None, n_test: Optional[int] = None, root: Optional[str | Path] = None,
              normalize: Optional[str] = None) -> Task:
    """The task called ``name`` (SPEC §7) with the keys of the ``task`` config group (DESIGN.md).

    ``synthetic`` takes n_train, overlap, input_dim (:func:`synthetic_task`); ``mnist``, ``cifar10`` and
    ``digits`` take classes, n_per_class, n_test, root, normalize (:func:`image_pair_task`). A key left
    None takes the builder's default.

    Parameters
    ----------
    name : str
        One of ``TASKS``.
    seed : int
        Seeds the choice of examples of an image task (the synthetic task does not depend on it).
    n_train, overlap, input_dim, classes, n_per_class, n_test, root, normalize
        The task's keys (task.*), see the builders.

    Returns
    -------
    Task

    Raises
    ------
    ValueError
        For an unknown name, a key the task does not have, or a value out of range (naming the key).
    FileNotFoundError
        When an image task's data files are missing.
    """
    choice("task", name, TASKS)
    given = dict(n_train=n_train, overlap=overlap, input_dim=input_dim, classes=classes, n_per_class=n_per_class,
                 n_test=n_test, root=root, normalize=normalize)
    keys = _SYNTHETIC_KEYS if name == "synthetic" else _IMAGE_PAIR_KEYS
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(given) - set(keys))
    if unknown:
        raise ValueError(f"task.{unknown[0]} is not a key of task={name}: the keys are {['name', *keys]}")
    if name == "synthetic":
        return synthetic_task(**given)
    return image_pair_task(name, seed=seed, **given)


def _check_available(classes: tuple[int, ...], n_per_class: int, n_test: int, train: ImageSet, test: ImageSet,
                     same_split: bool) -> None:
    """Raise a ValueError naming the key when the set holds too few examples of a class."""
    n_train = min(int(np.count_nonzero(train.labels == c)) for c in classes)
    if n_per_class > n_train:
        raise ValueError(f"task.n_per_class={n_per_class} is not allowed: at most {n_train}, the number of "
                         f"examples of the smaller class of {list(classes)} in {train.source}")
    if same_split:
        n_avail = n_train - n_per_class
        where = f"left in {train.source} after task.n_per_class={n_per_class} training examples"
    else:
        n_avail = min(int(np.count_nonzero(test.labels == c)) for c in classes)
        where = f"in {test.source}"
    if n_test // 2 > n_avail:
        raise ValueError(f"task.n_test={n_test} is not allowed: at most {2 * n_avail} (half per class); the "
                         f"smaller class of {list(classes)} has {n_avail} examples {where}")


def _normalise(x_train: np.ndarray, x_test: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """SPEC §7 normalisation of pixels in [0, 1]: ``global`` one scalar making the training mean of |x|²/N0
    equal to 1 (applied to the test examples too: norm differences survive), ``per_example`` every
    |x|²/N0 = 1, ``none`` unchanged. Shapes [P, N0], [Q, N0]."""
    if how == "none":
        return x_train, x_test
    if how == "global":
        mean_sq = float(np.mean(x_train ** 2))
        if mean_sq == 0.0:
            raise ValueError("task.normalize='global' is not allowed: every training image is blank; "
                             "use 'none'")
        scale = 1.0 / math.sqrt(mean_sq)
        return x_train * scale, x_test * scale
    normalised = []
    for name, x in (("training", x_train), ("test", x_test)):
        sq = np.mean(x ** 2, axis=1, keepdims=True)
        if np.any(sq == 0.0):
            raise ValueError(f"task.normalize='per_example' is not allowed: {name} example "
                             f"{int(np.flatnonzero(sq[:, 0] == 0.0)[0])} of the task is blank; use 'global' or 'none'")
        normalised.append(x / np.sqrt(sq))
    return normalised[0], normalised[1]


def _absolute(root: str | Path) -> Path:
    # The caller (app.py) resolves a command line's relative path against its launch directory first.
    return Path(root).expanduser().absolute()


def load_mnist(root: str | Path | None = None) -> tuple[ImageSet, ImageSet]:
    """MNIST from its four standard IDX files, gzipped or not, in ``root`` or ``root/MNIST/raw``.

    Parameters
    ----------
    root : str or Path, optional
        The folder (``~`` expanded); None: the test split embedded in driftsim/data.

    Returns
    -------
    (ImageSet, ImageSet)
        The training split [60000, 784] and the test split [10000, 784] of the standard files. With no root,
        the embedded test split is returned as both, and the caller draws disjoint examples from it.

    Raises
    ------
    FileNotFoundError
        Naming the missing files, the folders searched and where to get them.
    ValueError
        For a damaged, truncated or inconsistent file, naming it.
    """
    if root is None:
        paths = _mnist_paths([EMBEDDED_DIR], ("t10k",))
        split = _read_mnist(paths, "t10k", "embedded MNIST test split")
        return split, split
    root = _absolute(root)
    paths = _mnist_paths([root, root / "MNIST" / "raw"], ("train", "t10k"))
    train = _read_mnist(paths, "train", "MNIST training split")
    test = _read_mnist(paths, "t10k", "MNIST test split")
    if train.pixels.shape[1] != test.pixels.shape[1]:
        raise ValueError(f"{train.source} has images of {train.pixels.shape[1]} pixels but {test.source} of "
                         f"{test.pixels.shape[1]}: not one MNIST distribution")
    return train, test


def _mnist_paths(folders: list[Path], splits: tuple[str, ...]) -> dict[str, Path]:
    """The file of every standard name of the splits, or a FileNotFoundError saying what is missing where."""
    wanted = [name for split in splits for name in _MNIST_NAMES[split]]
    paths = {name: _find(name, folders) for name in wanted}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        raise FileNotFoundError(
            f"MNIST files not found: {missing} (each as NAME or NAME.gz) in {[str(f) for f in folders]}. "
            f"task.root must hold the four standard MNIST files {[n for p in _MNIST_NAMES.values() for n in p]}, "
            f"directly or in MNIST/raw. {_MNIST_HOWTO}")
    return paths


def _find(name: str, folders: list[Path]) -> Path | None:
    # Uncompressed first: torchvision's raw folder holds both and reading it skips the decompression.
    for folder in folders:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _read_mnist(paths: dict[str, Path], split: str, description: str) -> ImageSet:
    image_path, label_path = (paths[name] for name in _MNIST_NAMES[split])
    images = _read_idx(image_path, _IDX_IMAGES)
    labels = _read_idx(label_path, _IDX_LABELS)
    if len(images) != len(labels):
        raise ValueError(f"{image_path} holds {len(images)} images but {label_path} {len(labels)} labels; "
                         f"they must come from one MNIST split. {_MNIST_HOWTO}")
    if images.size == 0:
        raise ValueError(f"{image_path} holds {len(images)} images of {' × '.join(map(str, images.shape[1:]))} "
                         f"pixels: no data. {_MNIST_HOWTO}")
    return ImageSet(pixels=images.reshape(len(images), -1), labels=labels.astype(np.int64), pixel_max=255.0,
                    source=f"{description} ({image_path}, {label_path})")


def _read_bytes(path: Path) -> bytes:
    """The bytes of a data file, or a ValueError naming it when it cannot be read or is empty."""
    try:
        raw = path.read_bytes()
    except OSError as err:  # permission denied, a folder, an I/O error
        raise ValueError(f"{path} cannot be read: {err.strerror or err}") from err
    if not raw:
        raise ValueError(f"{path} is empty (0 bytes): a download or copy that did not finish?")
    return raw


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file of unsigned bytes with the given magic number, as an array of its declared dimensions."""
    raw = _read_bytes(path)
    # Recognised by content, not name: the gzip magic 1f 8b cannot start an IDX file (whose magic starts 00 00).
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path} is a corrupt or truncated gzip file ({err}). {_MNIST_HOWTO}") from err
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        kind = "labels" if magic == _IDX_LABELS else "images"
        shown = "none (file shorter than 4 bytes)" if found is None else f"{found:#x}"
        raise ValueError(f"{path}: magic number {shown}, expected {magic:#x} for MNIST {kind} (IDX, unsigned "
                         f"bytes, {ndim} dimension(s)). {_MNIST_HOWTO}")
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, shorter than its {header}-byte IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = math.prod(dims)
    if len(raw) - header != size:
        state = "truncated" if len(raw) - header < size else "longer than declared"
        raise ValueError(f"{path} is {state}: its header declares dimensions {dims} ({size} bytes of data) but "
                         f"{len(raw) - header} bytes follow. {_MNIST_HOWTO}")
    return np.frombuffer(raw, dtype=np.uint8, count=size, offset=header).reshape(dims)


def load_cifar10(root: str | Path | None) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10 from the python pickle batches (data_batch_1..5, test_batch) in root/cifar-10-batches-py or root.

    Parameters
    ----------
    root : str or Path
        The folder (``~`` expanded); None raises, saying what is needed.

    Returns
    -------
    (ImageSet, ImageSet)
        The training split [50000, 3072] and the test split [10000, 3072]; each row holds the red, green and
        blue 32×32 planes in turn, as stored.

    Raises
    ------
    FileNotFoundError
        When root is None or the six batches are not together in one of the two folders.
    ValueError
        For a file that is not a CIFAR-10 batch (no code in it is run), naming it.
    """
    if root is None:
        raise FileNotFoundError(f"task=cifar10 needs task.root: a folder holding cifar-10-batches-py/ "
                                f"({', '.join(_CIFAR_NAMES)}). {_CIFAR_HOWTO}")
    root = _absolute(root)
    folders = [root / "cifar-10-batches-py", root]
    folder = next((f for f in folders if all((f / name).is_file() for name in _CIFAR_NAMES)), None)
    if folder is None:
        raise FileNotFoundError(f"CIFAR-10 batches not found: expected {list(_CIFAR_NAMES)} together in one of "
                                f"{[str(f) for f in folders]}. {_CIFAR_HOWTO}")
    batches = [_read_cifar_batch(folder / name) for name in _CIFAR_NAMES[:-1]]
    train = ImageSet(pixels=np.concatenate([b[0] for b in batches]), labels=np.concatenate([b[1] for b in batches]),
                     pixel_max=255.0, source=f"CIFAR-10 training batches ({folder}/data_batch_1..5)")
    pixels, labels = _read_cifar_batch(folder / "test_batch")
    return train, ImageSet(pixels=pixels, labels=labels, pixel_max=255.0,
                           source=f"CIFAR-10 test batch ({folder / 'test_batch'})")


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays and lists and nothing else: no code can run from a data file."""
    # _reconstruct: protocols 0-4; _frombuffer: protocol 5 (numpy 1 and 2 module names)
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch: uint8 pixels [n, 3072] and int64 labels [n]."""
    raw = _read_bytes(path)
    try:
        with io.BytesIO(raw) as f:
            # encoding="bytes": the batches were pickled by Python 2, their keys read as b"data", b"labels".
            batch = _BatchUnpickler(f, encoding="bytes").load()
        pixels, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as err:  # a damaged pickle can fail in many ways; each means the same to the user
        raise ValueError(f"{path} is not a CIFAR-10 python batch ({type(err).__name__}: {err}). "
                         f"{_CIFAR_HOWTO}") from err
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3072 or labels.shape != pixels.shape[:1]:
        raise ValueError(f"{path}: data of dtype {pixels.dtype} and shape {pixels.shape} with {labels.size} labels; "
                         f"a CIFAR-10 batch holds uint8 data [n, 3072] and n labels. {_CIFAR_HOWTO}")
    return pixels, labels


def load_digits() -> tuple[ImageSet, ImageSet]:
    """scikit-learn's bundled 8×8 digits.

    Returns
    -------
    (ImageSet, ImageSet)
        The one split [1797, 64] (pixels 0..16) as both, from which the caller draws disjoint examples.
    """
    from sklearn.datasets import load_digits as sklearn_digits  # imported here: scikit-learn is slow to import

    digits = sklearn_digits()
    split = ImageSet(pixels=digits.data, labels=digits.target.astype(np.int64), pixel_max=16.0,
                     source="scikit-learn load_digits (1797 images of 8x8 pixels)")
    return split, split
