"""Data sets and in-memory batch pipelines for evaluating candidate networks.

Readers (plain numpy, no torchvision):

* Fashion-MNIST from IDX files (raw or gzipped), e.g. the Debian package
  ``dataset-fashion-mnist`` at ``/usr/share/datasets/fashion-mnist``;
* CIFAR-10 / CIFAR-100 "python version" batches, read with a restricted
  unpickler so that a hostile file cannot run code;
* an ImageNet-style class-per-folder tree (``root/train/<class>/*.png``),
  decoded with Pillow (imported lazily) and resized to a fixed square size.

:func:`load_dataset` is the single entry point; it returns an
:class:`ArrayDataset` of uint8 images ``(N, C, H, W)`` and int64 labels.
:class:`TensorLoader` preprocesses a subset once into a float32 tensor on a
device and iterates seeded, optionally augmented batches without workers.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import gzip
import io
import math
import os
import pickle
import tarfile
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "ENV_VARS",
    "FASHION_MNIST_DEFAULT_ROOT",
    "IMAGE_EXTENSIONS",
    "TRAIN_SPLIT_SIZES",
    "ArrayDataset",
    "DataSizeError",
    "DatasetNotFoundError",
    "MfsearchDataError",
    "TensorLoader",
    "UnknownDatasetError",
    "clear_dataset_cache",
    "load_dataset",
    "parse_idx",
    "read_cifar",
    "read_fashion_mnist",
    "read_idx",
    "read_image_folder",
    "resize_mode",
    "split_indices",
]

FASHION_MNIST_DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True)
class DatasetKind:
    """A data set mfsearch reads: the variable naming its root, its default root, the size of its
    training split (validation subsets are drawn from it too; ``None``: known once read) and the
    reader ``(root, split, origin, image_size) -> ArrayDataset`` (registered below, with the readers)."""

    name: str
    env: str
    train_size: int | None = None
    default_root: str | None = None
    read: Any = None


#: name -> kind: ``evaluation.dataset`` in space files. Adding a data set is one entry here plus its reader.
DATASETS: dict[str, DatasetKind] = {
    "fashion_mnist": DatasetKind("fashion_mnist", "MFSEARCH_FASHION_MNIST", 60000, FASHION_MNIST_DEFAULT_ROOT),
    "cifar10": DatasetKind("cifar10", "MFSEARCH_CIFAR10", 50000),
    "cifar100": DatasetKind("cifar100", "MFSEARCH_CIFAR100", 50000),
    "imagefolder": DatasetKind("imagefolder", "MFSEARCH_IMAGEFOLDER"),
}
ENV_VARS: dict[str, str] = {n: k.env for n, k in DATASETS.items()}
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)
#: Images in the training split of the data sets whose size is fixed (``train_size + val_size`` must fit).
TRAIN_SPLIT_SIZES: dict[str, int] = {n: k.train_size for n, k in DATASETS.items() if k.train_size}
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")

_ALIASES = {
    "fashionmnist": "fashion_mnist",
    "fmnist": "fashion_mnist",
    "cifar_10": "cifar10",
    "cifar_100": "cifar100",
    "image_folder": "imagefolder",
}
_PAD_MAX = 8  # "pad" resize mode when 0 <= target - source <= _PAD_MAX
_CHUNK = 4096  # images preprocessed at a time by TensorLoader


class MfsearchDataError(Exception):
    """Base class for data loading errors (missing, corrupt or hostile files)."""

    #: the setting a user changes to fix the error
    field = "evaluation.dataset"


class DataSizeError(MfsearchDataError, ValueError):
    """A subset (or batch) larger than the data read can serve; :attr:`field` names the setting to change."""

    def __init__(self, message: str, field: str = "evaluation.train_size") -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> tuple:  # keeps the field when raised in a worker process
        return (type(self), (str(self), self.field))


class DatasetNotFoundError(MfsearchDataError):
    """The requested data set is not present at any of the locations tried."""


class UnknownDatasetError(MfsearchDataError, ValueError):
    """The data set name is not one of :data:`DATASET_NAMES`."""


# --------------------------------------------------------------------------- #
# Data set container
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Images ``(N, C, H, W)`` uint8 and labels ``(N,)`` int64 held in memory."""

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str
    root: str
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            raise MfsearchDataError(
                f"{self.name}: images must be a uint8 array (N, C, H, W), got "
                f"{getattr(images, 'dtype', type(images))} {getattr(images, 'shape', '')}"
            )
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise MfsearchDataError(f"{self.name}: {images.shape[0]} images but labels of shape {labels.shape}")
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise MfsearchDataError(f"{self.name}: labels must be integers, got {labels.dtype}")
        labels = labels.astype(np.int64, copy=False)
        if self.num_classes < 1:
            raise MfsearchDataError(f"{self.name}: num_classes must be >= 1")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise MfsearchDataError(
                f"{self.name}: labels outside [0, {self.num_classes}): min {labels.min()}, max {labels.max()}"
            )
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        _, c, h, w = self.images.shape
        return int(c), int(h), int(w)


# --------------------------------------------------------------------------- #
# IDX (Fashion-MNIST)
# --------------------------------------------------------------------------- #

_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode an (uncompressed) IDX byte string into a native-endian array."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise MfsearchDataError(f"{source}: not an IDX file (bad magic number {data[:4].hex()!r})")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise MfsearchDataError(f"{source}: not an IDX file (unknown type code 0x{code:02x})")
    if ndim < 1:
        raise MfsearchDataError(f"{source}: IDX file declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MfsearchDataError(f"{source}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize
    if len(data) - header != expected:
        raise MfsearchDataError(
            f"{source}: corrupt IDX file: header {dims} needs {expected} data bytes, found {len(data) - header}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, gzipped (detected by its magic bytes) or raw."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MfsearchDataError(f"cannot read IDX file {path}: {exc}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise MfsearchDataError(f"{path}: corrupt gzip stream: {exc}") from exc
    return parse_idx(raw, source=str(path))


_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FASHION_HINT = (
    "Install it with `apt-get install dataset-fashion-mnist` (it puts the IDX files in "
    f"{FASHION_MNIST_DEFAULT_ROOT}), or set MFSEARCH_FASHION_MNIST / `evaluation.data_root` "
    "in the space file to a folder holding train-images-idx3-ubyte[.gz], "
    "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]."
)


def _find_idx_file(root: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        candidate = root / name
        if candidate.is_file():
            return candidate
    return None


def read_fashion_mnist(root: str | os.PathLike[str], split: str = "train") -> ArrayDataset:
    """Read Fashion-MNIST ``split`` ("train" or "test") from IDX files in ``root``."""
    return _read_fashion_mnist(Path(root), split, origin="root argument")


def _read_fashion_mnist(root: Path, split: str, origin: str) -> ArrayDataset:
    _check_split("fashion_mnist", split, tuple(_FASHION_FILES))
    image_stem, label_stem = _FASHION_FILES[split]
    image_path = _find_idx_file(root, image_stem)
    label_path = _find_idx_file(root, label_stem)
    if image_path is None or label_path is None:
        missing = [s for s, p in ((image_stem, image_path), (label_stem, label_path)) if p is None]
        raise _not_found(
            "Fashion-MNIST",
            [f"{root} ({origin}): missing {', '.join(m + '[.gz]' for m in missing)}"],
            _FASHION_HINT,
        )
    images = read_idx(image_path)
    labels = read_idx(label_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise MfsearchDataError(f"{image_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise MfsearchDataError(f"{label_path}: {labels.shape} labels do not match {images.shape[0]} images")
    return ArrayDataset(
        images=images[:, None, :, :],
        labels=labels.astype(np.int64),
        num_classes=10,
        name="fashion_mnist",
        root=str(root),
        classes=_FASHION_CLASSES,
    )


# --------------------------------------------------------------------------- #
# CIFAR (restricted unpickling)
# --------------------------------------------------------------------------- #


def _load_numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    """Safe stand-in for numpy's protocol-5 ``_frombuffer`` pickle helper."""
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``codecs.encode`` limited to what pickle uses for bytes (latin-1)."""
    if str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(obj, "latin-1", errors)


_reconstruct = _load_numpy_reconstruct()
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the globals needed for dicts of numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} (not on the allow-list)") from None


def _safe_unpickle(data: bytes, source: str) -> Any:
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # any failure on untrusted input is a data error
        raise MfsearchDataError(f"{source}: cannot load CIFAR pickle safely ({type(exc).__name__}: {exc})") from exc


def _dict_get(batch: dict[Any, Any], key: str) -> Any:
    if key.encode() in batch:
        return batch[key.encode()]
    return batch.get(key)


@dataclass(frozen=True)
class _CifarSpec:
    label: str
    subdir: str
    archive: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: str
    num_classes: int
    meta: str
    names_key: str
    env: str


_CIFAR_SPECS = {
    "cifar10": _CifarSpec(
        label="CIFAR-10",
        subdir="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test=("test_batch",),
        label_key="labels",
        num_classes=10,
        meta="batches.meta",
        names_key="label_names",
        env=ENV_VARS["cifar10"],
    ),
    "cifar100": _CifarSpec(
        label="CIFAR-100",
        subdir="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        train=("train",),
        test=("test",),
        label_key="fine_labels",
        num_classes=100,
        meta="meta",
        names_key="fine_label_names",
        env=ENV_VARS["cifar100"],
    ),
}


def _cifar_hint(spec: _CifarSpec) -> str:
    return (
        f"Download the {spec.label} python version ({spec.archive} from "
        "https://www.cs.toronto.edu/~kriz/cifar.html), extract it (or leave the .tar.gz "
        f"there) and point the root argument, {spec.env} or `evaluation.data_root` in the "
        f"space file at the folder holding {spec.subdir}/."
    )


def _decode_cifar_batch(obj: Any, spec: _CifarSpec, source: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(obj, dict):
        raise MfsearchDataError(f"{source}: expected a dict batch, got {type(obj).__name__}")
    data = _dict_get(obj, "data")
    labels = _dict_get(obj, spec.label_key)
    if data is None or labels is None:
        raise MfsearchDataError(f"{source}: batch lacks 'data' or '{spec.label_key}'")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise MfsearchDataError(f"{source}: 'data' must be a uint8 array")
    if data.ndim == 2 and data.shape[1] == 3 * 32 * 32:
        data = data.reshape(-1, 3, 32, 32)
    if data.shape[1:] != (3, 32, 32):
        raise MfsearchDataError(f"{source}: unexpected image data shape {data.shape}")
    try:
        labels = np.asarray(labels)
    except Exception as exc:  # ragged or odd objects
        raise MfsearchDataError(f"{source}: bad labels: {exc}") from exc
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise MfsearchDataError(f"{source}: {labels.shape} labels for {data.shape[0]} images")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise MfsearchDataError(f"{source}: labels must be integers, got {labels.dtype}")
    return np.ascontiguousarray(data), labels.astype(np.int64)


def _cifar_class_names(obj: Any, spec: _CifarSpec) -> tuple[str, ...]:
    names = _dict_get(obj, spec.names_key) if isinstance(obj, dict) else None
    if not isinstance(names, list) or len(names) != spec.num_classes:
        return ()
    out = []
    for n in names:
        if isinstance(n, bytes):
            out.append(n.decode("utf-8", "replace"))
        elif isinstance(n, str):
            out.append(n)
        else:
            return ()
    return tuple(out)


#: Bounds on what a CIFAR batch file or archive member may unpack to (the largest real one, CIFAR-100
#: ``train``, is about 155 MB): a damaged or hostile archive is refused before it fills the memory.
MAX_CIFAR_MEMBER_BYTES = 512 << 20
MAX_CIFAR_TOTAL_BYTES = 1 << 30


def _check_sizes(sizes: dict[str, int], where: str = "") -> None:
    """Refuse batches (source -> bytes they unpack to) that are too large, before any is read."""
    for source, size in sizes.items():
        if size > MAX_CIFAR_MEMBER_BYTES:
            raise MfsearchDataError(f"{source}: {size} bytes, more than the {MAX_CIFAR_MEMBER_BYTES >> 20} MiB a "
                                    "CIFAR batch can take; this is not the CIFAR python version (download it again)")
    if sum(sizes.values()) > MAX_CIFAR_TOTAL_BYTES:
        raise MfsearchDataError(f"{where}: the {len(sizes)} batches unpack to {sum(sizes.values())} bytes in all, "
                                f"more than the {MAX_CIFAR_TOTAL_BYTES >> 20} MiB of the CIFAR python version "
                                "(download it again)")


def _read_bounded(handle: Any, source: str) -> bytes:
    data = handle.read(MAX_CIFAR_MEMBER_BYTES + 1)  # a size declared in a header may lie
    if len(data) > MAX_CIFAR_MEMBER_BYTES:
        _check_sizes({source: len(data)})
    return data


def _cifar_sources(root: Path, spec: _CifarSpec, files: Sequence[str]) -> dict[str, bytes] | None:
    """Return the raw bytes of ``files`` (+ meta if present), or None if absent."""
    for folder in (root, root / spec.subdir):
        if all((folder / f).is_file() for f in files):
            wanted = [*files, spec.meta] if (folder / spec.meta).is_file() else list(files)
            try:
                _check_sizes({str(folder / f): (folder / f).stat().st_size for f in wanted}, str(folder))
                out: dict[str, bytes] = {}
                for f in wanted:
                    with open(folder / f, "rb") as handle:
                        out[f] = _read_bounded(handle, str(folder / f))
                return out
            except OSError as exc:
                raise MfsearchDataError(f"{folder}: cannot read CIFAR batches: {exc}") from exc
    archive = root if root.is_file() else root / spec.archive
    if archive.is_file():
        try:
            with tarfile.open(archive, "r:*") as tar:
                members: dict[str, tarfile.TarInfo] = {}
                for f in [*files, spec.meta]:
                    try:
                        members[f] = tar.getmember(f"{spec.subdir}/{f}")
                    except KeyError:
                        if f == spec.meta:
                            continue
                        raise MfsearchDataError(f"{archive}: archive lacks {spec.subdir}/{f}") from None
                    _check_sizes({f"{archive}: {members[f].name}": members[f].size})
                _check_sizes({f"{archive}: {m.name}": m.size for m in members.values()}, str(archive))
                out = {}
                for f, member in members.items():
                    handle = tar.extractfile(member)
                    if handle is None:
                        raise MfsearchDataError(f"{archive}: {member.name} is not a file")
                    out[f] = _read_bounded(handle, f"{archive}: {member.name}")
                return out
        except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as exc:  # ValueError: a bad sparse map
            raise MfsearchDataError(f"{archive}: cannot read archive: {exc}") from exc
    return None


def read_cifar(root: str | os.PathLike[str], name: str = "cifar10", split: str = "train") -> ArrayDataset:
    """Read CIFAR-10/100 python-version batches from ``root``.

    ``root`` may hold the batch files, the extracted ``cifar-10-batches-py`` /
    ``cifar-100-python`` folder, or the original ``.tar.gz`` archive.
    """
    key = _canonical_name(name)
    if key not in _CIFAR_SPECS:
        raise UnknownDatasetError(f"read_cifar reads {', '.join(_CIFAR_SPECS)}, not {name!r}")
    return _read_cifar(Path(root), key, split, origin="root argument")


def _read_cifar(root: Path, name: str, split: str, origin: str) -> ArrayDataset:
    spec = _CIFAR_SPECS[name]
    _check_split(name, split, ("train", "test"))
    files = spec.train if split == "train" else spec.test
    sources = _cifar_sources(root, spec, files)
    if sources is None:
        tried = [
            f"{root} ({origin})",
            str(root / spec.subdir),
            str(root / spec.archive),
        ]
        raise _not_found(
            spec.label,
            [f"{', '.join(tried)}: missing {', '.join(files)}"],
            _cifar_hint(spec),
        )
    images, labels = [], []
    for f in files:
        obj = _safe_unpickle(sources[f], f"{root}/{f}")
        x, y = _decode_cifar_batch(obj, spec, f"{root}/{f}")
        images.append(x)
        labels.append(y)
    classes: tuple[str, ...] = ()
    if spec.meta in sources:
        classes = _cifar_class_names(_safe_unpickle(sources[spec.meta], f"{root}/{spec.meta}"), spec)
    return ArrayDataset(
        images=np.concatenate(images) if len(images) > 1 else images[0],
        labels=np.concatenate(labels) if len(labels) > 1 else labels[0],
        num_classes=spec.num_classes,
        name=name,
        root=str(root),
        classes=classes,
    )


# --------------------------------------------------------------------------- #
# Class-per-folder image trees
# --------------------------------------------------------------------------- #


def _require_pillow() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise MfsearchDataError(
            "Reading image folders needs Pillow, which is not installed: `pip install pillow`."
        ) from exc
    return Image


_IMAGEFOLDER_HINT = (
    "Expected a tree root/<split>/<class>/*.png|jpg|jpeg|ppm|bmp; pass its root or set "
    "MFSEARCH_IMAGEFOLDER / `evaluation.data_root` in the space file."
)


def _list_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_image_folder(
    root: str | os.PathLike[str], split: str = "train", image_size: int | None = None
) -> ArrayDataset:
    """Decode ``root/<split>/<class>/*`` into RGB uint8 arrays.

    Images are resized (aspect ratio not kept) to ``image_size`` squared; with
    ``image_size=None`` all images must already share one size. Class indices
    follow the sorted class folders of ``root/train`` (or of the split itself).
    """
    return _read_image_folder(Path(root), split, image_size, origin="root argument")


def _read_image_folder(root: Path, split: str, image_size: int | None, origin: str) -> ArrayDataset:
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    split_dir = root / split
    if not split_dir.is_dir():
        raise _not_found("imagefolder", [f"{split_dir} ({origin}): no such folder"], _IMAGEFOLDER_HINT)
    class_root = root / "train" if (root / "train").is_dir() else split_dir
    classes = [p.name for p in _list_dirs(class_root)]
    index = {c: i for i, c in enumerate(classes)}
    files: list[tuple[Path, int]] = []
    for class_dir in _list_dirs(split_dir):
        if class_dir.name not in index:
            raise MfsearchDataError(f"{class_dir}: class {class_dir.name!r} is not among the classes of {class_root}")
        paths = sorted(
            p
            for p in class_dir.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        files.extend((p, index[class_dir.name]) for p in paths)
    if not files:
        raise _not_found("imagefolder", [f"{split_dir} ({origin}): no image files found"], _IMAGEFOLDER_HINT)
    image_mod = _require_pillow()
    bilinear = getattr(image_mod, "Resampling", image_mod).BILINEAR
    bomb_error = getattr(image_mod, "DecompressionBombError", OSError)
    images: np.ndarray | None = None
    labels = np.empty(len(files), dtype=np.int64)
    for i, (path, label) in enumerate(files):
        try:
            with image_mod.open(path) as img:
                rgb = img.convert("RGB")
                if image_size is not None and rgb.size != (image_size, image_size):
                    rgb = rgb.resize((image_size, image_size), bilinear)
                array = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
        except (OSError, ValueError, bomb_error) as exc:
            raise MfsearchDataError(f"{path}: cannot decode image: {exc}") from exc
        if images is None:
            images = np.empty((len(files), *array.shape), dtype=np.uint8)
        elif array.shape != images.shape[1:]:
            raise MfsearchDataError(
                f"{path}: size {array.shape[1:]} differs from {images.shape[2:]}; "
                "pass image_size to resize all images to one square size"
            )
        images[i] = array
        labels[i] = label
    assert images is not None
    return ArrayDataset(
        images=images,
        labels=labels,
        num_classes=len(classes),
        name="imagefolder",
        root=str(root),
        classes=tuple(classes),
    )


# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #

for _name, _read in {
    "fashion_mnist": lambda root, split, origin, size: _read_fashion_mnist(root, split, origin),
    "cifar10": lambda root, split, origin, size: _read_cifar(root, "cifar10", split, origin),
    "cifar100": lambda root, split, origin, size: _read_cifar(root, "cifar100", split, origin),
    "imagefolder": lambda root, split, origin, size: _read_image_folder(root, split, size, origin),
}.items():
    DATASETS[_name] = dataclasses.replace(DATASETS[_name], read=_read)

_CACHE: dict[tuple[str, str, str, int | None], ArrayDataset] = {}
_CACHE_LOCK = threading.Lock()


def clear_dataset_cache() -> None:
    """Forget the data sets memoised by :func:`load_dataset`."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _not_found(label: str, tried: Sequence[str], hint: str) -> DatasetNotFoundError:
    tried_text = "; ".join(tried) if tried else "nothing"
    return DatasetNotFoundError(f"{label} data set not found. Tried: {tried_text}. {hint}")


def _check_split(name: str, split: str, allowed: Sequence[str]) -> None:
    if split not in allowed:
        extra = " (take validation data from 'train' with split_indices)" if split == "val" else ""
        raise ValueError(f"{name}: unknown split {split!r}; use one of {list(allowed)}{extra}")


def _canonical_name(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in DATASET_NAMES:
        raise UnknownDatasetError(f"unknown data set {name!r}; known data sets: {', '.join(DATASET_NAMES)}")
    return key


def _resolve_root(name: str, root: str | os.PathLike[str] | None) -> tuple[Path | None, str]:
    if root is not None and str(root) != "":
        return Path(root).expanduser(), "root argument"
    kind = DATASETS[name]
    value = os.environ.get(kind.env, "")
    if value:
        return Path(value).expanduser(), f"${kind.env}"
    if kind.default_root:
        return Path(kind.default_root), "default location"
    return None, f"no root argument and ${kind.env} is not set"


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    *,
    image_size: int | None = None,
    cache: bool = True,
) -> ArrayDataset:
    """Load ``name`` ("fashion_mnist", "cifar10", "cifar100", "imagefolder").

    Root resolution: explicit ``root``, then ``$MFSEARCH_<NAME>``, then (only
    for Fashion-MNIST) ``/usr/share/datasets/fashion-mnist``. ``split`` is
    "train" or "test" ("val" is also valid for imagefolder trees). Results
    are memoised per (name, root, split, image_size) with read-only arrays
    unless ``cache=False``.
    """
    key = _canonical_name(name)
    if image_size is not None and key != "imagefolder":
        raise ValueError("image_size applies to 'imagefolder' only; TensorLoader resizes the others")
    path, origin = _resolve_root(key, root)
    if path is None:
        if key == "imagefolder":
            hint = _IMAGEFOLDER_HINT
            label = "imagefolder"
        else:
            hint = _cifar_hint(_CIFAR_SPECS[key])
            label = _CIFAR_SPECS[key].label
        raise _not_found(label, [origin], hint)
    cache_key = (key, str(path.resolve()), split, image_size)
    if cache:
        with _CACHE_LOCK:
            hit = _CACHE.get(cache_key)
        if hit is not None:
            return hit
    dataset = DATASETS[key].read(path, split, origin, image_size)
    if cache:
        dataset.images.setflags(write=False)
        dataset.labels.setflags(write=False)
        with _CACHE_LOCK:
            dataset = _CACHE.setdefault(cache_key, dataset)
    return dataset


# --------------------------------------------------------------------------- #
# Splits and the in-memory batch pipeline
# --------------------------------------------------------------------------- #


def _allocate(counts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``k`` over classes proportionally to ``counts`` (largest remainder)."""
    total = int(counts.sum())
    if k == 0 or total == 0:
        return np.zeros_like(counts)
    base = counts * k // total
    remainder = counts * k - base * total
    missing = k - int(base.sum())
    if missing:
        order = np.lexsort((rng.permutation(len(counts)), -remainder))
        base[order[:missing]] += 1
    return base


def split_indices(
    n: int,
    train_size: int | None,
    val_size: int,
    seed: int,
    labels: np.ndarray | Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, disjoint (train, validation) index arrays drawn from ``range(n)``.

    Validation comes from the training split (the test split stays untouched).
    ``train_size=None`` uses everything not in validation. With ``labels``
    both parts are stratified by class. Returns sorted int64 arrays.
    """
    if n < 0 or val_size < 0 or train_size is not None and train_size < 0:
        raise ValueError(f"need n, train_size, val_size >= 0, got n={n}, train_size={train_size}, val_size={val_size}")
    if val_size > n:
        raise DataSizeError(f"val_size {val_size} is more than the {n} examples of the training split (validation "
                            "is drawn from it); lower evaluation.val_size", "evaluation.val_size")
    if train_size is None:
        train_size = n - val_size
    if train_size + val_size > n:
        raise DataSizeError(f"train_size + val_size = {train_size + val_size} is more than the {n} examples of the "
                            "training split (validation is drawn from it); lower evaluation.train_size or "
                            "evaluation.val_size")
    rng = np.random.default_rng(seed)
    if labels is None:
        perm = rng.permutation(n)
        val, train = perm[:val_size], perm[val_size : val_size + train_size]
    else:
        y = np.asarray(labels)
        if y.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {y.shape}")
        _, inverse = np.unique(y, return_inverse=True)
        inverse = inverse.reshape(-1)
        counts = np.bincount(inverse).astype(np.int64)
        perm = rng.permutation(n)
        grouped = perm[np.argsort(inverse[perm], kind="stable")]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        val_counts = _allocate(counts, val_size, rng)
        train_counts = _allocate(counts - val_counts, train_size, rng)
        val_parts, train_parts = [], []
        for start, count_v, count_t in zip(starts, val_counts, train_counts, strict=True):
            val_parts.append(grouped[start : start + count_v])
            train_parts.append(grouped[start + count_v : start + count_v + count_t])
        val, train = np.concatenate(val_parts), np.concatenate(train_parts)
    return np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)


def resize_mode(height: int, width: int, target: int) -> str:
    """Return "pad" when the target is 0..8 pixels larger on both sides, else "bilinear"."""
    if 0 <= target - height <= _PAD_MAX and 0 <= target - width <= _PAD_MAX:
        return "pad"
    return "bilinear"


def _epoch_seed(seed: int, epoch: int) -> int:
    """Mix (seed, epoch) so that (s, e + 1) and (s + 1, e) give unrelated streams."""
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, int(epoch) & 0xFFFFFFFFFFFFFFFF]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def _as_channel_vector(values: Sequence[float] | float, channels: int, what: str) -> torch.Tensor:
    vec = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if vec.numel() == 1:
        vec = vec.expand(channels)
    if vec.numel() != channels:
        raise ValueError(f"{what} needs 1 or {channels} values, got {vec.numel()}")
    return vec.clone()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside, then restore the caller's count.

    A float32 reduction split over several threads rounds differently from the same reduction on
    one, so normalisation statistics computed with the process's thread count made the loaders, and
    so every trained result, depend on what the process had set before it built them (a proxy-check
    that scored a supernet first, on two threads, then trained on one got other accuracies than a
    fresh process for the same architecture, seed and eval_id). Built on one thread, the tensors are
    the same bits as the one-thread builds of every stored run.
    """
    n = torch.get_num_threads()
    if n != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n != 1:
            torch.set_num_threads(n)


class TensorLoader:
    """Seeded in-memory batches ``(images float32 (B, C, S, S), labels int64 (B,))``.

    The whole subset is converted once on ``device``: channel conversion
    (gray replicated to RGB, RGB averaged to gray), resize (zero padding when
    the target is 0-8 pixels larger, bilinear otherwise) and per-channel
    normalisation. ``mean``/``std`` default to statistics of this subset
    (before padding); give evaluation loaders the training loader's
    ``mean``/``std``. In train mode each epoch uses a permutation drawn from
    a ``torch.Generator`` seeded from ``(seed, epoch)`` (call
    :meth:`set_epoch`), drops the last partial batch and applies per-sample
    random horizontal flips and random crops with 4-pixel black padding.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        indices: np.ndarray | Sequence[int] | None = None,
        *,
        image_size: int,
        channels: int = 3,
        batch_size: int = 128,
        train: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
        augment: bool | None = None,
        drop_last: bool | None = None,
        crop_padding: int = 4,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if image_size < 1 or batch_size < 1 or crop_padding < 0:
            raise ValueError("image_size and batch_size must be >= 1, crop_padding >= 0")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        idx = np.arange(len(dataset)) if indices is None else np.asarray(indices)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise ValueError("indices must be a 1-D integer array")
        idx = idx.astype(np.int64)
        if (train if drop_last is None else drop_last) and idx.size < batch_size:
            raise DataSizeError(f"batch_size {batch_size} is more than the {idx.size} training examples: with the "
                                "last partial batch dropped no step would train; lower evaluation.batch_size",
                                "evaluation.batch_size")
        if idx.size == 0:
            raise ValueError("indices select no examples")
        if idx.min() < 0 or idx.max() >= len(dataset):
            raise ValueError(f"indices out of range for a data set of {len(dataset)} examples")
        src_channels, height, width = dataset.image_shape
        if src_channels not in (1, 3):
            raise ValueError(f"images with {src_channels} channels are not supported")

        self.dataset = dataset
        self.indices = idx
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.augment = self.train if augment is None else bool(augment)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.crop_padding = int(crop_padding)
        self.resize_mode = resize_mode(height, width, self.image_size)
        self._epoch = 0

        with one_thread():  # the same bits whatever the caller's thread count (see one_thread)
            self._build(dataset, idx, height, width, src_channels, mean, std)

    def _build(self, dataset: ArrayDataset, idx: np.ndarray, height: int, width: int, src_channels: int,
               mean: Sequence[float] | float | None, std: Sequence[float] | float | None) -> None:
        n = idx.size
        size = self.image_size
        # zero-initialised so that the "pad" border is black without a padded temporary
        out = torch.zeros((n, self.channels, size, size), dtype=torch.float32, device=self.device)
        top, left = (size - height) // 2, (size - width) // 2
        stat_channels = 1 if src_channels == 1 or self.channels == 1 else 3
        sums = torch.zeros(stat_channels, dtype=torch.float64)
        squares = torch.zeros_like(sums)
        for start in range(0, n, _CHUNK):
            part = dataset.images[idx[start : start + _CHUNK]]
            x = torch.from_numpy(part).to(self.device).float().div_(255.0)
            if self.channels == 1 and x.shape[1] == 3:
                x = x.mean(1, keepdim=True)
            if mean is None:  # float32 per-chunk sums, accumulated in float64
                sums += x.sum(dim=(0, 2, 3)).double().cpu()
                squares += x.square().sum(dim=(0, 2, 3)).double().cpu()
            dst = out[start : start + x.shape[0]]
            if self.resize_mode == "pad":  # 1 -> 3 channels by broadcasting
                dst[:, :, top : top + height, left : left + width] = x
            else:
                dst[:] = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        if mean is None:
            count = n * height * width
            mean_vec = (sums / count).expand(self.channels).clone()
            var = (squares / count).expand(self.channels) - mean_vec**2
            std_vec = var.clamp_min(1e-12).sqrt()
        else:
            mean_vec = _as_channel_vector(mean, self.channels, "mean")
            std_vec = _as_channel_vector(std, self.channels, "std")
            if (std_vec <= 0).any():
                raise ValueError("std must be positive")
        self.mean: tuple[float, ...] = tuple(float(v) for v in mean_vec)
        self.std: tuple[float, ...] = tuple(float(v) for v in std_vec)
        mean_t = mean_vec.to(device=self.device, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = std_vec.to(device=self.device, dtype=torch.float32).view(1, -1, 1, 1)
        out.sub_(mean_t).div_(std_t)
        self.images = out
        self.labels = torch.from_numpy(dataset.labels[idx].copy()).to(self.device)
        # value a black (0) pixel takes after normalisation: the crop padding fill
        self._fill = (-mean_t / std_t).view(-1)

    @property
    def num_samples(self) -> int:
        """Number of examples in the subset."""
        return int(self.indices.size)

    @property
    def num_classes(self) -> int:
        """Number of classes of the underlying data set."""
        return self.dataset.num_classes

    @property
    def epoch(self) -> int:
        """Epoch used for the next iteration's permutation and augmentation."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose seeded permutation/augmentation to use next."""
        self._epoch = int(epoch)

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator: torch.Generator | None = None
        order: torch.Tensor | None = None
        if self.train or self.augment:
            generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self._epoch))
        if self.train:
            order = torch.randperm(self.num_samples, generator=generator).to(self.device)
        for b in range(len(self)):
            start = b * self.batch_size
            stop = min(start + self.batch_size, self.num_samples)
            if order is None:
                x = self.images[start:stop].clone()
                y = self.labels[start:stop].clone()
            else:
                sel = order[start:stop]
                x = self.images.index_select(0, sel)
                y = self.labels.index_select(0, sel)
            if self.augment:
                assert generator is not None
                x = self._augment_batch(x, generator)
            yield x, y

    def _augment_batch(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Per-sample random horizontal flip and padded random crop (vectorised)."""
        batch, channels, height, width = x.shape
        flip = (torch.rand(batch, generator=generator) < 0.5).to(self.device)
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        pad = self.crop_padding
        if pad == 0:
            return x
        offsets = torch.randint(0, 2 * pad + 1, (2, batch), generator=generator).to(self.device)
        padded = self._fill.view(1, -1, 1, 1).expand(batch, channels, height + 2 * pad, width + 2 * pad)
        padded = padded.contiguous()
        padded[:, :, pad : pad + height, pad : pad + width] = x
        rows = offsets[0].view(-1, 1) + torch.arange(height, device=self.device)
        rows = rows.view(batch, 1, height, 1).expand(batch, channels, height, width + 2 * pad)
        cols = offsets[1].view(-1, 1) + torch.arange(width, device=self.device)
        cols = cols.view(batch, 1, 1, width).expand(batch, channels, height, width)
        return padded.gather(2, rows).gather(3, cols)
