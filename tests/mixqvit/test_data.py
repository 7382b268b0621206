"""Fashion-MNIST IDX loading, the ImageFolder loader, calibration subsets and loaders."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mixqvit.data import (
    FMNIST_MEAN,
    FMNIST_STD,
    calibration_indices,
    calibration_subset,
    check_indices,
    check_subset,
    fashion_mnist_files,
    image_folder,
    load_fashion_mnist,
    make_loader,
    read_idx,
)

_CODES = {np.dtype("uint8"): 0x08, np.dtype("int8"): 0x09, np.dtype("int16"): 0x0B,
          np.dtype("int32"): 0x0C, np.dtype("float32"): 0x0D, np.dtype("float64"): 0x0E}


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` in the IDX format (gzipped when the name ends in .gz)."""
    header = bytes([0, 0, _CODES[array.dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(payload)
    return path


def write_fake_fmnist(root: Path, n: int = 12, gz: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    ext = ".gz" if gz else ""
    for prefix in ("train", "t10k"):
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return images, labels


# --- real files (Debian package dataset-fashion-mnist) -------------------------------------

def test_real_test_split_shape_labels_and_balance():
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (10000,) and labels.dtype == torch.int64
    assert int(labels.min()) == 0 and int(labels.max()) == 9
    assert torch.bincount(labels, minlength=10).tolist() == [1000] * 10
    # normalised with the training statistics: the test split is close to zero mean, unit std
    assert abs(float(images.mean())) < 0.02 and abs(float(images.std()) - 1) < 0.02
    lo, hi = (0 - FMNIST_MEAN) / FMNIST_STD, (1 - FMNIST_MEAN) / FMNIST_STD
    assert float(images.min()) == pytest.approx(lo) and float(images.max()) == pytest.approx(hi)


# --- synthetic IDX files ----------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(
    array=hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
        elements={"allow_nan": False},
    ),
    gz=st.booleans(),
)
def test_read_idx_round_trip(tmp_path_factory, array, gz):
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if gz else "a.idx")
    out = read_idx(write_idx(path, array))
    assert out.shape == array.shape and out.dtype == array.dtype
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("gz", [True, False])
def test_load_synthetic_split_normalises(tmp_path, gz):
    raw, raw_labels = write_fake_fmnist(tmp_path, n=12, gz=gz)
    images, labels = load_fashion_mnist("train", tmp_path)
    assert images.shape == (12, 1, 28, 28)
    expected = (torch.from_numpy(raw).float()[:, None] / 255 - FMNIST_MEAN) / FMNIST_STD
    torch.testing.assert_close(images, expected)
    assert labels.tolist() == raw_labels.tolist()


def test_gz_preferred_and_raw_found(tmp_path):
    write_fake_fmnist(tmp_path, gz=False)
    img, lbl = fashion_mnist_files("test", tmp_path)
    assert img.name == "t10k-images-idx3-ubyte" and lbl.name == "t10k-labels-idx1-ubyte"
    write_fake_fmnist(tmp_path, gz=True)
    assert fashion_mnist_files("test", tmp_path)[0].name.endswith(".gz")


def test_malformed_idx_errors(tmp_path):
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad_magic)
    truncated = tmp_path / "short"
    truncated.write_bytes(bytes([0, 0, 0x08, 1]) + (5).to_bytes(4, "big") + b"\x00\x00")
    with pytest.raises(ValueError, match=r"shape \(5,\).*holds 2 data bytes"):
        read_idx(truncated)
    unknown = tmp_path / "code"
    unknown.write_bytes(bytes([0, 0, 0x07, 0]))
    with pytest.raises(ValueError, match="unknown IDX type code 0x07"):
        read_idx(unknown)


def test_wrong_image_shape_and_label_range(tmp_path):
    write_fake_fmnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((12, 27, 28), np.uint8))
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 28, 28\)"):
        load_fashion_mnist("train", tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(12, 11, np.uint8))
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        load_fashion_mnist("test", tmp_path)


def test_missing_directory_and_file_messages(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist("test", tmp_path / "nowhere")
    msg = str(err.value)
    assert "nowhere" in msg and "apt-get install dataset-fashion-mnist" in msg and "--data PATH" in msg
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_fashion_mnist("test", tmp_path)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_fashion_mnist("val", tmp_path)


# --- ImageFolder ------------------------------------------------------------------------------

def _make_folder(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, size in (("bag", (40, 30)), ("coat", (20, 50))):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")


def test_image_folder_grayscale_and_rgb(tmp_path):
    _make_folder(tmp_path)
    gray = image_folder(tmp_path)
    assert gray.classes == ["bag", "coat"] and len(gray) == 6
    x, y = gray[4]
    assert x.shape == (1, 28, 28) and y == 1
    assert float(x.min()) >= (0 - FMNIST_MEAN) / FMNIST_STD - 1e-6
    rgb = image_folder(tmp_path, input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.875)
    x, _ = rgb[0]
    assert x.shape == (3, 32, 32) and -1.0 - 1e-6 <= float(x.min()) and float(x.max()) <= 1.0 + 1e-6
    batch = next(iter(make_loader(rgb, batch_size=4)))
    assert batch[0].shape == (4, 3, 32, 32) and batch[1].tolist() == [0, 0, 0, 1]


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="one sub-directory of images per class"):
        image_folder(tmp_path / "missing")
    _make_folder(tmp_path)
    with pytest.raises(ValueError, match="mean and std are required"):
        image_folder(tmp_path, input_size=(3, 28, 28))
    with pytest.raises(ValueError, match="need 3 values each"):
        image_folder(tmp_path, input_size=(3, 28, 28), mean=(0.5,), std=(0.5,))


# --- calibration subset -----------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(5, 30), min_size=2, max_size=6),
    frac=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_calibration_indices_balanced_and_deterministic(counts, frac, seed):
    labels = torch.from_numpy(np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts)))
    n = max(1, int(frac * min(counts) * len(counts)))
    idx = calibration_indices(labels, n, seed)
    assert len(idx) == n and len(torch.unique(idx)) == n
    assert torch.equal(idx, torch.sort(idx).values)
    per_class = torch.bincount(labels[idx], minlength=len(counts))
    assert int(per_class.max() - per_class.min()) <= 1
    assert torch.equal(idx, calibration_indices(labels, n, seed))


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(5, 30), min_size=2, max_size=6),
    calib_frac=st.floats(0.05, 0.5),
    frac=st.floats(0.05, 1.3),
    seed=st.integers(0, 2**31 - 1),
)
def test_check_indices_avoid_the_calibration_set(counts, calib_frac, frac, seed):
    """Check images are class-balanced within what is left, sorted, seeded and never a
    calibration image; more than are left is an error."""
    labels = torch.from_numpy(np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts)))
    calib_n = max(1, int(calib_frac * min(counts) * len(counts)))
    left = len(labels) - calib_n
    n = max(1, int(frac * left))
    calib = set(calibration_indices(labels, calib_n, seed).tolist())
    if n > left:
        with pytest.raises(ValueError, match=f"only {left} are left after the {calib_n} calibration images"):
            check_indices(labels, n, calib_n, seed)
        return
    idx = check_indices(labels, n, calib_n, seed)
    assert len(idx) == n and len(torch.unique(idx)) == n
    assert not calib & set(idx.tolist())
    assert torch.equal(idx, torch.sort(idx).values)
    assert torch.equal(idx, check_indices(labels, n, calib_n, seed))
    remaining = torch.bincount(labels, minlength=len(counts)) - torch.bincount(labels[sorted(calib)],
                                                                               minlength=len(counts))
    per_class = torch.bincount(labels[idx], minlength=len(counts))
    # balanced up to the classes whose images have run out
    assert all(int(c) <= int(r) for c, r in zip(per_class, remaining))
    open_classes = per_class[per_class < remaining]
    if len(open_classes):
        assert int(per_class.max() - open_classes.min()) <= 1


def test_check_subset_is_the_real_training_images_beside_the_calibration_subset():
    """What the benchmarks check on: the training images at check_indices, none of them a
    calibration image (compared by content, on the real Fashion-MNIST)."""
    images, labels = load_fashion_mnist("train")
    check = check_subset(40, 30, seed=3)
    assert torch.equal(check, images[check_indices(labels, 40, 30, 3)])
    calib, _ = calibration_subset(30, seed=3)
    flat = {tuple(x.flatten().tolist()) for x in calib}
    assert not any(tuple(x.flatten().tolist()) in flat for x in check)


def test_calibration_seed_changes_choice_and_errors():
    labels = torch.arange(1000) % 10
    a, b = calibration_indices(labels, 100, 0), calibration_indices(labels, 100, 1)
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="n must lie in 1..1000"):
        calibration_indices(labels, 1001)
    with pytest.raises(ValueError, match="class 1 has 1 samples"):
        calibration_indices(torch.tensor([0, 0, 0, 0, 1]), 4)


# --- loader factory ---------------------------------------------------------------------------

def test_make_loader_tensor_batches_and_seed():
    x = torch.arange(10, dtype=torch.float32)[:, None]
    y = torch.arange(10)
    batches = list(make_loader(x, y, batch_size=4, shuffle=True, seed=3))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    order = torch.cat([b[1] for b in batches])
    assert sorted(order.tolist()) == list(range(10)) and order.tolist() != list(range(10))
    assert torch.equal(order, torch.cat([b[1] for b in make_loader(x, y, batch_size=4, shuffle=True, seed=3)]))
    torch.testing.assert_close(torch.cat([b[0] for b in batches])[:, 0], order.float())
    images_only = list(make_loader(x, batch_size=5))
    assert len(images_only) == 2 and torch.equal(images_only[0], x[:5])
    with pytest.raises(ValueError, match="differ in length"):
        make_loader(x, y[:3])
