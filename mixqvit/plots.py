"""PNG plots of a profile, of plans and of the accuracy/size trade-off.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``) rather
than through ``pyplot``: no global backend switch, no display needed, nothing left open between
calls, so the plots work the same on a headless CI box and inside a user's notebook.

The functions take plain sequences (layer names, bit lists, arrays) rather than project objects
so they can be fed from a live run or from the JSON files a run left behind.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from allocator.atomic import atomic_path

__all__ = ["plot_bit_allocation", "plot_profile_heatmaps", "plot_accuracy_vs_size"]

# Past this many layers the x tick labels are unreadable; show every n-th one.
_MAX_TICK_LABELS = 60


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return Path(path)


def _layer_ticks(ax, names: Sequence[str]) -> None:
    step = max(1, int(np.ceil(len(names) / _MAX_TICK_LABELS)))
    idx = np.arange(0, len(names), step)
    ax.set_xticks(idx)
    ax.set_xticklabels([names[i] for i in idx], rotation=90, fontsize=6)


def plot_bit_allocation(
    layer_names: Sequence[str],
    allocations: Mapping[str, tuple[Sequence[int], Sequence[int]]],
    path: str | os.PathLike,
    title: str = "Per-layer bit allocation",
) -> Path:
    """One panel per plan (e.g. per budget): weight and activation bits of every layer as bars.

    ``allocations`` maps a label such as ``"W4A4"`` to ``(w_bits, a_bits)``, each a sequence
    aligned with ``layer_names``.  Panels share the x axis so budgets compare at a glance.
    """
    names = list(layer_names)
    if not names:
        raise ValueError("layer_names is empty; nothing to plot")
    if not allocations:
        raise ValueError("allocations is empty; pass at least one {label: (w_bits, a_bits)}")
    for label, (w, a) in allocations.items():
        if len(w) != len(names) or len(a) != len(names):
            raise ValueError(
                f"allocation {label!r} has {len(w)} weight and {len(a)} activation entries; "
                f"expected {len(names)} (one per layer name)"
            )
    n = len(allocations)
    width = max(8.0, 0.12 * len(names) + 2)
    fig = Figure(figsize=(width, 1.9 * n + 1.6))
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    x = np.arange(len(names))
    top = max(max(max(w), max(a)) for w, a in allocations.values())
    for ax, (label, (w, a)) in zip(axes, allocations.items()):
        ax.bar(x - 0.2, w, width=0.4, label="weights", color="tab:blue")
        ax.bar(x + 0.2, a, width=0.4, label="activations", color="tab:orange")
        ax.set_ylabel("bits")
        ax.set_ylim(0, top + 1)
        ax.set_title(label, fontsize=9, loc="left")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(loc="upper right", fontsize=7, ncol=2)
    _layer_ticks(axes[-1], names)
    fig.suptitle(title)
    return _save(fig, path)


def _heatmap(fig: Figure, ax, table: np.ndarray, bits: Sequence[int], title: str) -> None:
    data = np.asarray(table, dtype=float).T  # bits x layers
    positive = data[data > 0]
    if positive.size:
        norm = LogNorm(vmin=float(positive.min()), vmax=float(max(positive.max(), positive.min() * 10)))
        shown = np.where(data > 0, data, np.nan)
    else:
        norm, shown = None, data
    im = ax.imshow(shown, aspect="auto", cmap="viridis", norm=norm, interpolation="nearest")
    ax.set_yticks(np.arange(len(bits)))
    ax.set_yticklabels([str(b) for b in bits])
    ax.set_ylabel("bits")
    ax.set_title(title + (" (log colour; white = 0)" if norm is not None else ""), fontsize=9, loc="left")
    fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)


def plot_profile_heatmaps(
    layer_names: Sequence[str],
    bits: Sequence[int],
    path: str | os.PathLike,
    importance: Sequence[float] | np.ndarray | None = None,
    weight_sensitivity: np.ndarray | None = None,
    act_sensitivity: np.ndarray | None = None,
    title: str = "Layer importance and sensitivity",
) -> Path:
    """Importance (one row) and weight/activation sensitivity (bits x layers) heatmaps.

    Sensitivities span orders of magnitude between 2 and 8 bits, so they are coloured on a log
    scale; zero entries (e.g. the weight row of an attention matmul) are left blank.  Panels for
    tables that are ``None`` are omitted; at least one must be given.
    """
    names = list(layer_names)
    L = len(names)
    panels = []
    if importance is not None:
        imp = np.asarray(importance, dtype=float).reshape(-1)
        if imp.shape != (L,):
            raise ValueError(f"importance has {imp.size} entries; expected {L} (one per layer name)")
        panels.append(("importance", imp))
    for label, table in (("weight sensitivity", weight_sensitivity), ("activation sensitivity", act_sensitivity)):
        if table is not None:
            arr = np.asarray(table, dtype=float)
            if arr.shape != (L, len(bits)):
                raise ValueError(f"{label} has shape {arr.shape}; expected {(L, len(bits))} (layers x bits)")
            panels.append((label, arr))
    if not panels:
        raise ValueError("nothing to plot: importance, weight_sensitivity and act_sensitivity are all None")
    heights = [1 if label == "importance" else max(1.2, 0.3 * len(bits)) for label, _ in panels]
    width = max(8.0, 0.12 * L + 2)
    fig = Figure(figsize=(width, 1.2 * sum(heights) + 2.2))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, (label, data) in zip(axes, panels):
        if label == "importance":
            im = ax.imshow(data[None, :], aspect="auto", cmap="magma", interpolation="nearest")
            ax.set_yticks([])
            ax.set_title("importance (LRP relevance)", fontsize=9, loc="left")
            fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
        else:
            _heatmap(fig, ax, data, bits, label)
    _layer_ticks(axes[-1], names)
    fig.suptitle(title)
    return _save(fig, path)


def plot_accuracy_vs_size(
    series: Mapping[str, Sequence[tuple[float, float, str]]],
    path: str | os.PathLike,
    float_point: tuple[float, float] | None = None,
    title: str = "Top-1 accuracy vs model size",
) -> Path:
    """Accuracy against size (MB), one line per series (e.g. "uniform", "mixed").

    Each series is a sequence of ``(size_mb, accuracy, label)``; points are annotated with their
    label (e.g. the budget).  ``float_point`` = ``(size_mb, accuracy)`` of the float model is drawn
    as a star and a dashed reference line.
    """
    if not series or not any(series.values()):
        raise ValueError("series is empty; pass {name: [(size_mb, accuracy, label), ...]}")
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    markers = ["o", "s", "^", "D", "v"]
    for i, (name, points) in enumerate(series.items()):
        pts = sorted(points, key=lambda p: p[0])
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ys = [100 * p[1] for p in pts]
        ax.plot(xs, ys, marker=markers[i % len(markers)], label=name)
        for x, y, (_, _, label) in zip(xs, ys, pts):
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if float_point is not None:
        ax.axhline(100 * float_point[1], color="grey", ls="--", lw=1)
        ax.plot([float_point[0]], [100 * float_point[1]], marker="*", ms=12, color="black", ls="", label="float")
    ax.set_xlabel("model size (MB)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
