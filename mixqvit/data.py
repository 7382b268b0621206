"""Data for the demo models and for user models.

Fashion-MNIST is read from the raw IDX files (gzipped or not) that the Debian package
``dataset-fashion-mnist`` installs under ``/usr/share/datasets/fashion-mnist`` (MIT licence), or
from any directory holding the same four files. Reading the files directly keeps the loader
offline and path-based: nothing is downloaded behind the user's back.

Normalisation: pixels are scaled to [0, 1] and then standardised with the mean and standard
deviation of the 60,000 training images, ``FMNIST_MEAN = 0.2860`` and ``FMNIST_STD = 0.3530``
(computed once from the files: 0.286041 and 0.353024). The shipped demo models were trained on
exactly this normalisation, so any data fed to them must use it.

User data (for instance an ImageNet validation folder) goes through :func:`image_folder`, which
wraps ``torchvision.datasets.ImageFolder`` with a transform to the model's input size, channel
count and normalisation.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, TensorDataset

__all__ = [
    "DEFAULT_FASHION_MNIST_ROOT",
    "FMNIST_CLASSES",
    "FMNIST_MEAN",
    "FMNIST_STD",
    "calibration_indices",
    "check_indices",
    "check_subset",
    "calibration_subset",
    "fashion_mnist_files",
    "image_folder",
    "load_fashion_mnist",
    "make_loader",
    "normalize",
    "read_idx",
]

DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FMNIST_MEAN = 0.2860
FMNIST_STD = 0.3530
FMNIST_CLASSES = (
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

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_MISSING_HELP = (
    "Install the Debian package (`sudo apt-get install dataset-fashion-mnist`, which puts the files "
    f"in {DEFAULT_FASHION_MNIST_ROOT}) or pass --data PATH (root=PATH in Python) pointing to a "
    "directory that holds train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
    "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]."
)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a numpy array of its stored shape and type.

    The format is the one of LeCun's MNIST files: two zero bytes, a type code, the number of
    dimensions, that many big-endian uint32 sizes, then the data in row-major order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:  # garbage or a truncated download
        raise ValueError(f"{path} is not a readable gzip file ({type(exc).__name__}: {exc}); download it "
                         "again or reinstall the dataset-fashion-mnist package") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path} is not an IDX file: expected the magic number to start with two zero bytes, "
            f"got {raw[:4].hex() or 'an empty file'}"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: unknown IDX type code 0x{code:02x}; expected one of "
            + ", ".join(f"0x{c:02x}" for c in _IDX_DTYPES)
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: header announces shape {shape} of {dtype} ({expected} bytes) but the file "
            f"holds {len(raw) - header} data bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def fashion_mnist_files(split: str, root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Return the (images, labels) IDX paths of a split, preferring ``.gz`` over raw files.

    Raises ``FileNotFoundError`` that names the directory searched and how to get the data.
    """
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root_path = Path(root if root is not None else DEFAULT_FASHION_MNIST_ROOT).expanduser()
    if not root_path.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST directory {root_path} does not exist. {_MISSING_HELP}")
    prefix = _SPLIT_PREFIX[split]
    found = []
    for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
        candidates = [root_path / f"{stem}.gz", root_path / stem]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            raise FileNotFoundError(
                f"Fashion-MNIST file {stem}[.gz] not found in {root_path}. {_MISSING_HELP}"
            )
        found.append(hit)
    return found[0], found[1]


def normalize(images_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels (N, 28, 28) or (N, 1, 28, 28) to the float32 (N, 1, 28, 28) model input."""
    x = torch.as_tensor(np.asarray(images_uint8), dtype=torch.float32)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return (x / 255.0 - FMNIST_MEAN) / FMNIST_STD


def load_fashion_mnist(
    split: str = "train", root: str | os.PathLike | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a Fashion-MNIST split as normalised images (N, 1, 28, 28) float32 and labels (N,) int64.

    ``split`` is "train" (60,000 images) or "test" (10,000). ``root`` defaults to
    ``/usr/share/datasets/fashion-mnist``. See the module docstring for the normalisation.
    """
    img_path, lbl_path = fashion_mnist_files(split, root)
    images = read_idx(img_path)
    labels = read_idx(lbl_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{img_path}: expected images of shape (N, 28, 28), got {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{lbl_path}: expected {images.shape[0]} labels to match {img_path}, got shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(FMNIST_CLASSES)):
        raise ValueError(f"{lbl_path}: labels must lie in 0..9, got {labels.min()}..{labels.max()}")
    return normalize(images), torch.as_tensor(labels.astype(np.int64))


def calibration_indices(labels: torch.Tensor | np.ndarray, n: int, seed: int = 0) -> torch.Tensor:
    """Pick ``n`` indices, class-balanced and reproducible from ``seed``, sorted ascending.

    Every class gets ``n // C`` samples; the ``n % C`` left over go to classes drawn at random
    (seeded). Balance matters because sensitivity and calibration statistics from a subset
    dominated by a few classes misjudge layers that matter for the others.
    """
    labels = torch.as_tensor(np.asarray(labels)).long().flatten()
    classes = torch.unique(labels)
    n_classes = len(classes)
    if n <= 0 or n > len(labels):
        raise ValueError(f"n must lie in 1..{len(labels)} (the number of labels given), got {n}")
    gen = torch.Generator().manual_seed(seed)
    per_class = torch.full((n_classes,), n // n_classes, dtype=torch.long)
    extra = torch.randperm(n_classes, generator=gen)[: n % n_classes]
    per_class[extra] += 1
    chosen = []
    for c, k in zip(classes.tolist(), per_class.tolist()):
        members = torch.nonzero(labels == c).flatten()
        if k > len(members):
            raise ValueError(
                f"class {c} has {len(members)} samples but a balanced subset of {n} needs {k}; "
                "ask for fewer samples"
            )
        chosen.append(members[torch.randperm(len(members), generator=gen)[:k]])
    return torch.sort(torch.cat(chosen)).values


def check_indices(labels: torch.Tensor | np.ndarray, n: int, calib_n: int, seed: int = 0) -> torch.Tensor:
    """``n`` indices, seeded, sorted, none of them among ``calibration_indices(labels, calib_n,
    seed)``: images to check a reconstruction on (``quant.reconstruct``'s ``check_data``), which
    it must not have fitted. As balanced over the classes as what is left allows: each class
    gets the same share, a class with fewer left gives them all and the rest is shared among
    the others (one more for some, drawn at random). More than are left is an error."""
    labels = torch.as_tensor(np.asarray(labels)).long().flatten()
    free = torch.ones(len(labels), dtype=torch.bool)
    free[calibration_indices(labels, calib_n, seed)] = False
    pool = torch.nonzero(free).flatten()
    if n > len(pool):
        raise ValueError(f"{n} check images asked for, but only {len(pool)} are left after the {calib_n} calibration "
                         "images; ask for fewer")
    gen = torch.Generator().manual_seed(seed)
    members = [pool[labels[pool] == c] for c in torch.unique(labels[pool]).tolist()]
    left = torch.tensor([len(m) for m in members], dtype=torch.long)
    quota = torch.zeros_like(left)
    while n > int(quota.sum()):
        room = torch.nonzero(quota < left).flatten()
        share = (n - int(quota.sum())) // len(room)
        if share == 0:  # fewer than one more each: one more for classes drawn at random
            quota[room[torch.randperm(len(room), generator=gen)[:n - int(quota.sum())]]] += 1
            break
        quota[room] = torch.minimum(quota[room] + share, left[room])
    chosen = [m[torch.randperm(len(m), generator=gen)[:k]] for m, k in zip(members, quota.tolist())]
    return torch.sort(torch.cat(chosen)).values


def calibration_subset(
    n: int = 512, seed: int = 0, root: str | os.PathLike | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced, seeded calibration images and labels from the Fashion-MNIST *train* split.

    Drawn from the train split so that calibration never sees the test images used to report
    accuracy.
    """
    images, labels = load_fashion_mnist("train", root)
    idx = calibration_indices(labels, n, seed)
    return images[idx].clone(), labels[idx].clone()


def check_subset(n: int, calib_n: int, seed: int = 0, root: str | os.PathLike | None = None) -> torch.Tensor:
    """The Fashion-MNIST training images of :func:`check_indices` beside
    ``calibration_subset(calib_n, seed)``: what ``mixqvit quantize --reconstruct-check n`` checks on."""
    images, labels = load_fashion_mnist("train", root)
    return images[check_indices(labels, n, calib_n, seed)].clone()


def image_folder(
    path: str | os.PathLike,
    input_size: Sequence[int] = (1, 28, 28),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    crop_pct: float = 1.0,
):
    """A ``torchvision.datasets.ImageFolder`` whose images match a model's input.

    ``input_size`` is (channels, height, width); 1 channel converts to grayscale. Images are
    resized so the shorter side is ``size / crop_pct`` and centre-cropped to ``size`` (use
    ``crop_pct=0.875`` for the usual ImageNet evaluation). ``mean``/``std`` default to the
    Fashion-MNIST values for one channel; pass the model's own for anything else (ImageNet models:
    mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)).
    """
    from torchvision import datasets, transforms

    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"image folder {root} does not exist; expected a directory with one sub-directory of images per class"
        )
    if len(input_size) != 3 or input_size[0] not in (1, 3):
        raise ValueError(f"input_size must be (channels, height, width) with 1 or 3 channels, got {tuple(input_size)}")
    channels, height, width = (int(v) for v in input_size)
    if mean is None or std is None:
        if channels != 1:
            raise ValueError("mean and std are required for 3-channel input (they have no Fashion-MNIST default)")
        mean, std = (FMNIST_MEAN,), (FMNIST_STD,)
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean and std need {channels} values each, got {len(mean)} and {len(std)}")
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must lie in (0, 1], got {crop_pct}")
    resize = (round(height / crop_pct), round(width / crop_pct))
    # ImageFolder's loader already yields RGB images; one channel means grayscale.
    steps = [transforms.Grayscale(1)] if channels == 1 else []
    steps += [
        transforms.Resize(resize if height != width else resize[0]),
        transforms.CenterCrop((height, width)),
        transforms.ToTensor(),
        transforms.Normalize(tuple(mean), tuple(std)),
    ]
    return datasets.ImageFolder(str(root), transform=transforms.Compose(steps))


def make_loader(
    data: torch.Tensor | Dataset,
    labels: torch.Tensor | None = None,
    batch_size: int = 128,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader over a tensor (with optional labels) or a Dataset, reproducible from ``seed``.

    Tensors are sliced a whole batch at a time (one indexing op per batch instead of one per
    sample), which is what makes a 60,000-image epoch cheap on a CPU. Batches are (images, labels)
    when labels are given, else images alone.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    if isinstance(data, torch.Tensor):
        if labels is not None and len(labels) != len(data):
            raise ValueError(f"labels ({len(labels)}) and images ({len(data)}) differ in length")
        dataset = TensorDataset(data) if labels is None else TensorDataset(data, labels)
        base = RandomSampler(dataset, generator=gen) if shuffle else SequentialSampler(dataset)
        sampler = BatchSampler(base, batch_size=batch_size, drop_last=drop_last)
        collate = (lambda b: b[0]) if labels is None else (lambda b: (b[0], b[1]))
        return DataLoader(dataset, sampler=sampler, batch_size=None, collate_fn=collate)
    if labels is not None:
        raise ValueError("labels are only accepted with a tensor of images; a Dataset yields its own")
    return DataLoader(
        data, batch_size=batch_size, shuffle=shuffle, generator=gen, drop_last=drop_last, num_workers=num_workers
    )
