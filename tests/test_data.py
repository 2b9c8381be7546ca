"""Tests for mfsearch.evaluation.data: readers, restricted unpickling, loaders, splits."""

from __future__ import annotations

import gzip
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mfsearch.evaluation.data import (
    DATASET_NAMES,
    FASHION_MNIST_DEFAULT_ROOT,
    ArrayDataset,
    DatasetNotFoundError,
    MfsearchDataError,
    TensorLoader,
    UnknownDatasetError,
    clear_dataset_cache,
    load_dataset,
    parse_idx,
    read_cifar,
    read_idx,
    resize_mode,
    split_indices,
)

# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` in the IDX format (big-endian)."""
    codes = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C}
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    header = bytes([0, 0, codes[dtype], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(dtype).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    data = idx_bytes(array)
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_fashion_tree(root: Path, compress: bool, n_train: int = 5, n_test: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for name, array in arrays.items():
        write_idx(root / name, array, compress)
    return arrays


def cifar_batch(n: int, label_key: bytes, seed: int, protocol: int) -> tuple[bytes, np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    payload = pickle.dumps({b"batch_label": b"synthetic", b"data": data, label_key: labels}, protocol=protocol)
    return payload, data, labels


def write_cifar10(folder: Path, protocol: int = 2) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    folder.mkdir(parents=True, exist_ok=True)
    train_data, train_labels = [], []
    for i in range(1, 6):
        payload, data, labels = cifar_batch(2 + i % 2, b"labels", seed=i, protocol=protocol)
        (folder / f"data_batch_{i}").write_bytes(payload)
        train_data.append(data)
        train_labels += labels
    payload, test_data, test_labels = cifar_batch(3, b"labels", seed=99, protocol=protocol)
    (folder / "test_batch").write_bytes(payload)
    names = [f"class{i}".encode() for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=protocol))
    return np.concatenate(train_data), train_labels, test_data, test_labels


class _Hostile:
    """Pickles to a call of os.system that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def make_synthetic(n: int = 64, channels: int = 1, size: int = 28, classes: int = 4, seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, channels, size, size), dtype=np.uint8)
    labels = np.arange(n) % classes
    return ArrayDataset(images=images, labels=labels, num_classes=classes, name="synthetic", root="<memory>")


def all_batches(loader: TensorLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


# --------------------------------------------------------------------------- #
# real Fashion-MNIST (Debian package dataset-fashion-mnist)
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def fashion_train() -> ArrayDataset:
    return load_dataset("fashion_mnist", split="train")


@pytest.fixture(scope="module")
def fashion_test() -> ArrayDataset:
    return load_dataset("fashion_mnist", split="test")


def test_real_fashion_mnist(fashion_train: ArrayDataset, fashion_test: ArrayDataset, monkeypatch) -> None:
    monkeypatch.delenv("MFSEARCH_FASHION_MNIST", raising=False)
    assert fashion_train.root == FASHION_MNIST_DEFAULT_ROOT
    assert fashion_train.images.shape == (60000, 1, 28, 28)
    assert fashion_test.images.shape == (10000, 1, 28, 28)
    for ds, per_class in ((fashion_train, 6000), (fashion_test, 1000)):
        assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64
        assert ds.num_classes == 10 and len(ds.classes) == 10
        assert ds.labels.min() == 0 and ds.labels.max() == 9
        assert np.bincount(ds.labels).tolist() == [per_class] * 10
        assert 0 < ds.images.mean() < 255
    # first training label of Fashion-MNIST is 9 (ankle boot)
    assert fashion_train.labels[0] == 9
    # memoised and read-only so shared arrays cannot be corrupted
    assert load_dataset("fashion_mnist", split="test") is load_dataset("fashion_mnist", split="test")
    assert not fashion_train.images.flags.writeable


# --------------------------------------------------------------------------- #
# IDX parsing
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("compress", [False, True])
def test_idx_roundtrip(tmp_path: Path, compress: bool) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([1, -2, 70000], dtype=np.int32)
    p_images = write_idx(tmp_path / "images-idx3-ubyte", images, compress)
    p_labels = write_idx(tmp_path / "labels-idx1-int", labels, compress)
    assert p_images.name.endswith(".gz") == compress
    np.testing.assert_array_equal(read_idx(p_images), images)
    got = read_idx(p_labels)
    assert got.dtype == np.int32 and got.dtype.isnative
    np.testing.assert_array_equal(got, labels)


@pytest.mark.parametrize("compress", [False, True])
def test_fashion_reader_on_tiny_tree(tmp_path: Path, compress: bool, monkeypatch) -> None:
    arrays = write_fashion_tree(tmp_path / "fm", compress)
    ds = load_dataset("fashion_mnist", root=tmp_path / "fm", split="test", cache=False)
    assert ds.images.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(ds.images[:, 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.labels, arrays["t10k-labels-idx1-ubyte"])
    # environment variable comes after an explicit root
    monkeypatch.setenv("MFSEARCH_FASHION_MNIST", str(tmp_path / "fm"))
    ds = load_dataset("fashion_mnist", cache=False)
    assert ds.images.shape == (5, 1, 28, 28) and ds.root == str(tmp_path / "fm")


def test_corrupt_idx_files(tmp_path: Path) -> None:
    good = idx_bytes(np.zeros((2, 2, 2), dtype=np.uint8))
    cases = {
        "bad_magic": b"\x12\x34" + good[2:],
        "bad_type": good[:2] + b"\x42" + good[3:],
        "truncated": good[:-1],
        "trailing": good + b"\x00",
        "short_header": good[:6],
        "bad_gzip": gzip.compress(good)[:-6] + b"garbage!",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(MfsearchDataError, match=name):
            read_idx(path)
    with pytest.raises(MfsearchDataError, match="IDX"):
        parse_idx(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    # a corrupt member makes the Fashion-MNIST reader fail clearly, not return garbage
    write_fashion_tree(tmp_path / "fm", compress=False)
    (tmp_path / "fm" / "t10k-labels-idx1-ubyte").write_bytes(good[:-3])
    with pytest.raises(MfsearchDataError, match="t10k-labels"):
        load_dataset("fashion_mnist", root=tmp_path / "fm", split="test", cache=False)


def test_missing_fashion_mnist(tmp_path: Path, monkeypatch) -> None:
    missing = tmp_path / "no-such-folder"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion_mnist", root=missing)
    message = str(info.value)
    assert str(missing) in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "MFSEARCH_FASHION_MNIST" in message and "data_root" in message
    assert isinstance(info.value, MfsearchDataError)
    # through the environment variable, naming where the path came from
    monkeypatch.setenv("MFSEARCH_FASHION_MNIST", str(missing))
    with pytest.raises(DatasetNotFoundError, match="MFSEARCH_FASHION_MNIST") as info:
        load_dataset("fashion_mnist", split="test")
    assert str(missing) in str(info.value) and "t10k-images-idx3-ubyte" in str(info.value)


def test_unknown_name_and_split(tmp_path: Path) -> None:
    with pytest.raises(UnknownDatasetError) as info:
        load_dataset("mnist3d")
    for name in DATASET_NAMES:
        assert name in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="split_indices"):
        load_dataset("fashion_mnist", split="val")
    with pytest.raises(ValueError, match="imagefolder"):
        load_dataset("fashion_mnist", image_size=32)
    assert load_dataset("Fashion-MNIST", split="test").images.shape[0] == 10000


# --------------------------------------------------------------------------- #
# CIFAR (restricted unpickler)
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_reader(tmp_path: Path, protocol: int) -> None:
    train_data, train_labels, test_data, test_labels = write_cifar10(tmp_path / "c10", protocol)
    train = load_dataset("cifar10", root=tmp_path / "c10", cache=False)
    assert train.images.shape == (len(train_labels), 3, 32, 32) == (13, 3, 32, 32)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    np.testing.assert_array_equal(train.images, train_data.reshape(-1, 3, 32, 32))
    assert train.labels.tolist() == train_labels
    assert train.num_classes == 10 and train.classes == tuple(f"class{i}" for i in range(10))
    # channel-major layout: first 1024 bytes are the red plane
    np.testing.assert_array_equal(train.images[0, 0].reshape(-1), train_data[0, :1024])
    test = read_cifar(tmp_path / "c10", "cifar10", "test")
    np.testing.assert_array_equal(test.images.reshape(3, -1), test_data)
    assert test.labels.tolist() == test_labels


def test_cifar_layouts_and_cifar100(tmp_path: Path, monkeypatch) -> None:
    # extracted archive folder below the root, found through the environment variable
    _, train_labels, _, _ = write_cifar10(tmp_path / "root" / "cifar-10-batches-py")
    monkeypatch.setenv("MFSEARCH_CIFAR10", str(tmp_path / "root"))
    assert load_dataset("cifar10", cache=False).labels.tolist() == train_labels
    # the original .tar.gz left unextracted
    archive = tmp_path / "tar" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "root" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    assert load_dataset("cifar10", root=archive.parent, cache=False).labels.tolist() == train_labels
    # CIFAR-100 uses train/test files and fine labels
    c100 = tmp_path / "cifar-100-python"
    c100.mkdir()
    data = np.random.default_rng(1).integers(0, 256, (3, 3072), dtype=np.uint8)
    batch = {b"data": data, b"fine_labels": [5, 99, 0], b"coarse_labels": [1, 2, 3]}
    (c100 / "train").write_bytes(pickle.dumps(batch, protocol=2))
    (c100 / "test").write_bytes(pickle.dumps({b"data": data[:2], b"fine_labels": [7, 8]}, protocol=2))
    train = load_dataset("cifar100", root=tmp_path, cache=False)
    assert train.images.shape == (3, 3, 32, 32) and train.num_classes == 100
    assert train.labels.tolist() == [5, 99, 0]
    assert load_dataset("cifar100", root=c100, split="test", cache=False).labels.tolist() == [7, 8]


def test_hostile_pickle_is_rejected_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _Hostile(marker), b"labels": [0]}, protocol=2)
    # sanity: the payload really runs code when loaded with the stock unpickler
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()

    folder = tmp_path / "c10"
    write_cifar10(folder)
    (folder / "data_batch_3").write_bytes(payload)
    with pytest.raises(MfsearchDataError, match="system") as info:
        load_dataset("cifar10", root=folder, cache=False)
    assert "data_batch_3" in str(info.value)
    assert not marker.exists()

    # other smuggling routes: builtins.eval, arbitrary codecs, object arrays of hostile objects
    evil_eval = b"cbuiltins\neval\n(Vprint('x')\ntR."
    evil_array = pickle.dumps({b"data": np.array([_Hostile(marker)], dtype=object), b"labels": [0]}, protocol=2)
    evil_codec = b"c_codecs\nencode\n(Vabc\nVrot13\ntR."
    for blob, reason in ((evil_eval, "builtins.eval"), (evil_array, "system"), (evil_codec, "rot13")):
        (folder / "data_batch_3").write_bytes(blob)
        with pytest.raises(MfsearchDataError, match=reason):
            load_dataset("cifar10", root=folder, cache=False)
    assert not marker.exists()

    # well-formed pickle with the wrong content
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 5), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(MfsearchDataError, match="shape"):
        load_dataset("cifar10", root=folder, cache=False)


def test_missing_cifar(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MFSEARCH_CIFAR10", raising=False)
    with pytest.raises(DatasetNotFoundError, match="MFSEARCH_CIFAR10") as info:
        load_dataset("cifar10")
    assert "python version" in str(info.value) and "data_root" in str(info.value)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar100", root=tmp_path)
    assert str(tmp_path) in str(info.value) and "MFSEARCH_CIFAR100" in str(info.value)


# --------------------------------------------------------------------------- #
# class-per-folder image trees
# --------------------------------------------------------------------------- #


@pytest.fixture()
def image_tree(tmp_path: Path) -> Path:
    from PIL import Image

    colours = {"cat": (255, 0, 0), "dog": (0, 0, 255)}
    for split, count in (("train", 3), ("val", 1)):
        for cls, colour in colours.items():
            folder = tmp_path / "tree" / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (20 + i, 12), colour).save(folder / f"img{i}.png")
    Image.new("L", (16, 16), 128).save(tmp_path / "tree" / "train" / "dog" / "gray.PNG")
    (tmp_path / "tree" / "train" / "dog" / "notes.txt").write_text("not an image")
    return tmp_path / "tree"


def test_image_folder(image_tree: Path, monkeypatch) -> None:
    train = load_dataset("imagefolder", root=image_tree, image_size=8, cache=False)
    assert train.images.shape == (7, 3, 8, 8) and train.images.dtype == np.uint8
    assert train.classes == ("cat", "dog") and train.num_classes == 2
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    np.testing.assert_array_equal(train.images[0, :, 4, 4], [255, 0, 0])
    np.testing.assert_array_equal(train.images[-1, :, 4, 4], [0, 0, 255])
    gray = train.images[3]  # "gray.PNG" sorts before "img0.png"
    assert (gray == 128).all()
    monkeypatch.setenv("MFSEARCH_IMAGEFOLDER", str(image_tree))
    val = load_dataset("imagefolder", split="val", image_size=8, cache=False)
    assert val.images.shape == (2, 3, 8, 8) and val.labels.tolist() == [0, 1]
    # without image_size, differing sizes are an error that says what to do
    with pytest.raises(MfsearchDataError, match="image_size"):
        load_dataset("imagefolder", root=image_tree, cache=False)


def test_image_folder_errors(image_tree: Path) -> None:
    (image_tree / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(MfsearchDataError, match="broken.png"):
        load_dataset("imagefolder", root=image_tree, image_size=8, cache=False)
    (image_tree / "val" / "bird").mkdir()
    (image_tree / "val" / "bird" / "x.png").write_bytes(b"")
    with pytest.raises(MfsearchDataError, match="bird"):
        load_dataset("imagefolder", root=image_tree, split="val", image_size=8, cache=False)
    with pytest.raises(DatasetNotFoundError, match="test"):
        load_dataset("imagefolder", root=image_tree, split="test", image_size=8)


# --------------------------------------------------------------------------- #
# splits
# --------------------------------------------------------------------------- #


def test_split_indices_stratified(fashion_train: ArrayDataset) -> None:
    labels = fashion_train.labels
    train, val = split_indices(len(labels), 5000, 1000, seed=3, labels=labels)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert len(train) == 5000 and len(val) == 1000
    assert np.intersect1d(train, val).size == 0
    assert len(np.unique(train)) == 5000 and len(np.unique(val)) == 1000
    assert np.bincount(labels[val], minlength=10).tolist() == [100] * 10
    assert np.bincount(labels[train], minlength=10).tolist() == [500] * 10
    again = split_indices(len(labels), 5000, 1000, seed=3, labels=labels)
    np.testing.assert_array_equal(again[0], train)
    np.testing.assert_array_equal(again[1], val)
    other = split_indices(len(labels), 5000, 1000, seed=4, labels=labels)
    assert not np.array_equal(other[1], val)


def test_split_indices_imbalanced_and_plain() -> None:
    labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
    train, val = split_indices(100, None, 10, seed=0, labels=labels)
    assert np.bincount(labels[val]).tolist() == [7, 2, 1]
    assert len(train) == 90 and np.union1d(train, val).tolist() == list(range(100))
    train, val = split_indices(100, 30, 11, seed=0, labels=labels)
    counts = np.bincount(labels[val], minlength=3)
    assert counts.sum() == 11 and (np.abs(counts - np.array([7.7, 2.2, 1.1])) < 1).all()
    plain_train, plain_val = split_indices(50, 20, 10, seed=1)
    assert len(plain_train) == 20 and len(plain_val) == 10
    assert np.intersect1d(plain_train, plain_val).size == 0
    np.testing.assert_array_equal(split_indices(50, 20, 10, seed=1)[0], plain_train)
    with pytest.raises(ValueError):
        split_indices(10, 8, 5, seed=0)
    with pytest.raises(ValueError):
        split_indices(10, None, 11, seed=0)


# --------------------------------------------------------------------------- #
# TensorLoader
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def subset(fashion_train: ArrayDataset) -> np.ndarray:
    train, _ = split_indices(len(fashion_train), 1200, 300, seed=0, labels=fashion_train.labels)
    return train


def test_loader_shapes_and_length(fashion_train: ArrayDataset, subset: np.ndarray) -> None:
    loader = TensorLoader(fashion_train, subset, image_size=32, channels=3, batch_size=256, train=True, seed=0)
    assert loader.resize_mode == "pad" and len(loader) == 1200 // 256
    batches = all_batches(loader)
    assert len(batches) == len(loader)
    for x, y in batches:
        assert x.shape == (256, 3, 32, 32) and x.dtype == torch.float32
        assert y.shape == (256,) and y.dtype == torch.int64
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    evaluation = TensorLoader(fashion_train, subset, image_size=32, batch_size=256, mean=loader.mean, std=loader.std)
    assert len(evaluation) == 5 and [len(y) for _, y in evaluation][-1] == 1200 - 4 * 256
    # normalised with the subset statistics
    assert abs(float(evaluation.images[:, :, 2:30, 2:30].mean())) < 1e-3
    assert abs(float(evaluation.images[:, :, 2:30, 2:30].std()) - 1) < 1e-3


def test_loader_determinism(fashion_train: ArrayDataset, subset: np.ndarray) -> None:
    def make(seed: int) -> TensorLoader:
        return TensorLoader(fashion_train, subset, image_size=32, batch_size=128, train=True, seed=seed)

    first, second, other = make(7), make(7), make(8)
    a, b, c = all_batches(first), all_batches(second), all_batches(other)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not all(torch.equal(ya, yc) for (_, ya), (_, yc) in zip(a, c, strict=True))
    assert not torch.equal(a[0][0], c[0][0])
    # epochs differ from each other and can be replayed
    first.set_epoch(1)
    e1 = all_batches(first)
    assert not torch.equal(e1[0][1], a[0][1])
    first.set_epoch(0)
    assert torch.equal(all_batches(first)[0][0], a[0][0])


def test_loader_augmentation(fashion_train: ArrayDataset, subset: np.ndarray) -> None:
    common = dict(image_size=32, batch_size=100, train=True, seed=5)
    plain = TensorLoader(fashion_train, subset, augment=False, **common)
    augmented = TensorLoader(fashion_train, subset, augment=True, mean=plain.mean, std=plain.std, **common)
    seen = []
    for (xp, yp), (xa, ya) in zip(plain, augmented, strict=True):
        assert torch.equal(yp, ya)  # same permutation, labels untouched
        assert not torch.equal(xp, xa)  # but pixels changed
        assert xa.shape == xp.shape
        seen.append(ya)
    epoch_labels = torch.cat(seen).sort().values
    expected = np.sort(fashion_train.labels[subset])
    assert epoch_labels.tolist() == expected.tolist()  # 1200 = 12 full batches: same multiset


def test_augmentation_is_flip_plus_shift() -> None:
    ds = make_synthetic(n=24, channels=3, size=32, classes=24)  # label == index
    loader = TensorLoader(ds, image_size=32, batch_size=24, train=True, seed=1, mean=0.5, std=0.25)
    fill = (0 - 0.5) / 0.25  # a black pixel after normalisation
    ((x, y),) = list(loader)
    assert sorted(y.tolist()) == list(range(24)) and y.tolist() != list(range(24))
    found = set()
    for sample, label in zip(x, y.tolist(), strict=True):
        original = loader.images[label]
        matches = [
            (flip, dy, dx)
            for flip in (False, True)
            for dy in range(9)
            for dx in range(9)
            if torch.equal(
                F.pad(original.flip(2) if flip else original, (4, 4, 4, 4), value=fill)[:, dy : dy + 32, dx : dx + 32],
                sample,
            )
        ]
        assert matches, "augmented sample is not a flipped, shifted crop of its input"
        found.add(matches[0])
    assert len(found) > 5  # per-sample randomness, not one shift for the whole batch
    assert any(flip for flip, _, _ in found) and not all(flip for flip, _, _ in found)


def test_loader_eval_not_shuffled(fashion_train: ArrayDataset, subset: np.ndarray) -> None:
    loader = TensorLoader(fashion_train, subset, image_size=32, batch_size=500, mean=0.0, std=1.0)
    xs, ys = zip(*loader, strict=True)
    assert [len(y) for y in ys] == [500, 500, 200]
    assert torch.cat(ys).tolist() == fashion_train.labels[subset].tolist()
    x = torch.cat(xs)
    expected = torch.from_numpy(fashion_train.images[subset].astype(np.float32) / 255)
    assert torch.equal(x[:, 1, 2:30, 2:30], expected[:, 0])
    assert (x[:, :, :2] == 0).all() and (x[:, :, :, 30:] == 0).all()  # zero padding 28 -> 32
    again = torch.cat([x for x, _ in loader])
    assert torch.equal(x, again)
    # batches are copies: in-place edits by a model do not corrupt the stored data
    next(iter(loader))[0].zero_()
    assert torch.equal(torch.cat([x for x, _ in loader]), x)


def test_loader_resize_and_channels() -> None:
    assert resize_mode(28, 28, 32) == "pad" and resize_mode(32, 32, 32) == "pad"
    assert resize_mode(28, 28, 40) == "bilinear" and resize_mode(32, 32, 16) == "bilinear"
    rgb = make_synthetic(n=10, channels=3, size=32)
    gray = TensorLoader(rgb, image_size=16, channels=1, batch_size=10, mean=0.0, std=1.0)
    assert gray.resize_mode == "bilinear"
    ((x, _),) = list(gray)
    source = torch.from_numpy(rgb.images.astype(np.float32) / 255).mean(1, keepdim=True)
    expected = F.interpolate(source, size=(16, 16), mode="bilinear", align_corners=False, antialias=False)
    assert x.shape == (10, 1, 16, 16)
    torch.testing.assert_close(x, expected)
    # statistics computed from the subset when not given
    stats = TensorLoader(rgb, [0, 1, 2], image_size=32, batch_size=2)
    assert len(stats.mean) == 3 and len(stats) == 2
    pixels = rgb.images[[0, 1, 2]].astype(np.float64) / 255
    np.testing.assert_allclose(stats.mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(stats.std, pixels.std(axis=(0, 2, 3)), rtol=1e-4)
    with pytest.raises(ValueError):
        TensorLoader(rgb, image_size=32, channels=2)
    with pytest.raises(ValueError):
        TensorLoader(rgb, [10], image_size=32)


def test_cache_can_be_cleared(tmp_path: Path) -> None:
    write_fashion_tree(tmp_path / "fm", compress=False)
    first = load_dataset("fashion_mnist", root=tmp_path / "fm")
    assert load_dataset("fashion_mnist", root=tmp_path / "fm") is first
    clear_dataset_cache()
    assert load_dataset("fashion_mnist", root=tmp_path / "fm") is not first


def test_array_dataset_validation() -> None:
    with pytest.raises(MfsearchDataError):
        ArrayDataset(np.zeros((2, 1, 4, 4), np.float32), np.zeros(2, int), 2, "x", "")
    with pytest.raises(MfsearchDataError):
        ArrayDataset(np.zeros((2, 1, 4, 4), np.uint8), np.array([0, 2]), 2, "x", "")


@pytest.mark.parametrize("image_size", [32, 16])  # padded, and resized
def test_loaders_are_the_same_bits_whatever_the_callers_thread_count(fashion_train: ArrayDataset,
                                                                       image_size: int) -> None:
    """The normalisation statistics are reductions: built on two threads they once rounded differently than on
    one, and every result trained on them changed with what the process had done before."""
    from mfsearch.evaluation.data import TensorLoader, split_indices

    idx, _ = split_indices(len(fashion_train.labels), 4000, 256, 0, labels=fashion_train.labels)
    before = torch.get_num_threads()
    built = []
    try:
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            built.append(TensorLoader(fashion_train, idx, image_size=image_size, channels=3, batch_size=64,
                                      train=True, seed=0))
            assert torch.get_num_threads() == threads  # the caller's count is restored
    finally:
        torch.set_num_threads(before)
    one = built[0]
    for other in built[1:]:
        assert other.mean == one.mean and other.std == one.std
        assert torch.equal(other.images, one.images)
