"""Plots are written as real PNG files and reject inputs that do not line up."""
import numpy as np
import pytest

from mixqvit.plots import plot_accuracy_vs_size, plot_bit_allocation, plot_profile_heatmaps

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = [f"blocks.{i}.fc{j}" for i in range(4) for j in (1, 2)] + ["blocks.0.attn.matmul_qk"]


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 1000


def test_bit_allocation_png(tmp_path):
    L = len(NAMES)
    allocations = {"W4A4": ([4] * L, [4] * L), "W2A2": ([2, 3] * (L // 2) + [2], [2] * L)}
    out = plot_bit_allocation(NAMES, allocations, tmp_path / "sub" / "bits.png")
    assert _is_png(out)


def test_bit_allocation_rejects_misaligned(tmp_path):
    with pytest.raises(ValueError, match="expected 9"):
        plot_bit_allocation(NAMES, {"W4A4": ([4] * 3, [4] * 3)}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        plot_bit_allocation(NAMES, {}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_heatmaps_png_with_zero_rows_and_missing_tables(tmp_path):
    rng = np.random.default_rng(0)
    bits = [2, 4, 8]
    ws = rng.random((len(NAMES), 3))
    ws[-1] = 0.0  # matmul row has no weights
    out = plot_profile_heatmaps(NAMES, bits, tmp_path / "h.png", importance=rng.random(len(NAMES)),
                                weight_sensitivity=ws, act_sensitivity=rng.random((len(NAMES), 3)))
    assert _is_png(out)
    assert _is_png(plot_profile_heatmaps(NAMES, bits, tmp_path / "h2.png", act_sensitivity=np.zeros((9, 3))))


def test_heatmaps_reject_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="expected \\(9, 3\\)"):
        plot_profile_heatmaps(NAMES, [2, 4, 8], tmp_path / "h.png", weight_sensitivity=np.ones((9, 2)))
    with pytest.raises(ValueError, match="all None"):
        plot_profile_heatmaps(NAMES, [2, 4, 8], tmp_path / "h.png")


def test_accuracy_vs_size_png(tmp_path):
    series = {"uniform": [(1.0, 0.5, "W2A2"), (2.0, 0.8, "W4A4")], "mixed": [(0.9, 0.6, "W2A2"), (2.0, 0.85, "W4A4")]}
    out = plot_accuracy_vs_size(series, tmp_path / "acc.png", float_point=(8.0, 0.9))
    assert _is_png(out)
    with pytest.raises(ValueError, match="empty"):
        plot_accuracy_vs_size({}, tmp_path / "y.png")
