"""profiling._heap: LRP hands the heap back after each batch, large tensors get their own mappings
during calibration, the numbers do not change, and without glibc (or with malloc tuned by the
user) nothing happens."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch

from profiling import _heap, lrp_importance, profile_model

from _profiling_fixtures import images, tiny_vit

MiB = 1 << 20


class _FakeLibc:
    """Records the malloc calls bounded_heap makes."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


ENTER = [("mallopt", -3, 128 * 1024)]
EXIT = [("mallopt", -3, 32 * MiB), ("mallopt", -1, 64 * MiB), ("malloc_trim", 0)]


def test_outermost_block_sets_and_resets_the_threshold_also_on_error(monkeypatch):
    fake = _FakeLibc()
    monkeypatch.setattr(_heap, "_LIBC", fake)
    with pytest.raises(RuntimeError, match="inside"):
        with _heap.bounded_heap():
            with _heap.bounded_heap():
                assert fake.calls == ENTER
            assert fake.calls == ENTER  # the inner exit leaves the bound on
            raise RuntimeError("inside")
    assert fake.calls == ENTER + EXIT
    assert _heap._depth == 0


def test_lrp_trims_after_each_batch_and_calibration_runs_inside_the_bound(monkeypatch):
    fake = _FakeLibc()
    monkeypatch.setattr(_heap, "_LIBC", fake)
    lrp_importance(tiny_vit(), images(4), batch_size=2)
    assert fake.calls == 2 * [("malloc_trim", 0)]  # one trim per batch, no mmap threshold change
    fake.calls.clear()
    profile_model(tiny_vit(), images(4), bits=(4,), verbose=False, batch_size=2)
    # LRP's two batches, then calibration inside the bound; nothing around the sensitivity
    assert fake.calls == 2 * [("malloc_trim", 0)] + ENTER + EXIT


@pytest.mark.parametrize("env", [{"MALLOC_MMAP_THRESHOLD_": "65536"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"},
                                 {"MIXQVIT_HEAP_BOUND": "0"}])
def test_user_tuned_malloc_is_left_alone(monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert _heap._load_glibc() is None


def test_no_glibc_is_a_no_op(monkeypatch):
    monkeypatch.setattr(_heap, "_LIBC", None)
    with _heap.bounded_heap():
        x = torch.ones(3)
    assert torch.equal(x, torch.ones(3))
    monkeypatch.setattr(_heap.ctypes, "CDLL", lambda name: (_ for _ in ()).throw(OSError("no libc")))
    assert _heap._load_glibc() is None


def _raise_dynamic_threshold() -> None:
    """Free a 16 MiB mapped tensor: glibc then serves tensors up to that size from its heap."""
    t = torch.empty(16 * MiB // 4)
    del t


def test_profile_is_bit_identical_with_and_without_the_bound(monkeypatch):
    # Tensors of 0.5-1 MiB (above the 128 KiB bound, below the raised threshold), so the two runs
    # really allocate differently: mapped blocks with the bound, heap chunks without.
    model, x = tiny_vit(patch_size=4), images(16)
    runs = []
    for libc in (_heap._LIBC, None):
        monkeypatch.setattr(_heap, "_LIBC", libc)
        _raise_dynamic_threshold()
        prof = profile_model(model, x, bits=(2, 4), verbose=False, batch_size=8).to_dict()
        prof["metadata"].pop("timings_s")
        runs.append(prof)
    assert runs[0] == runs[1]
    assert np.all(np.asarray(runs[0]["importance"]) > 0)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mallinfo() -> _MallInfo2:
    info = _heap._LIBC.mallinfo2
    info.restype = _MallInfo2
    return info()


def _mapped_after_allocating(nbytes: int) -> int:
    """Bytes of new mappings while a tensor of `nbytes` lives."""
    before = _mallinfo().hblkhd
    t = torch.empty(nbytes // 4)
    mapped = _mallinfo().hblkhd - before
    del t
    return mapped


@pytest.mark.skipif(_heap._LIBC is None or not hasattr(_heap._LIBC, "mallinfo2"),
                    reason="needs glibc >= 2.33 (mallinfo2) and malloc not tuned by the environment")
def test_inside_the_bound_a_large_tensor_is_a_mapping_of_its_own():
    """The property the flat peak rests on: once the heap's free space is used up, a large tensor
    gets a mapping (freed back to the system with the tensor) instead of growing the heap.
    glibc serves a request from free heap space first whatever the threshold, so the tensor is
    made larger than all of it."""
    with _heap.bounded_heap():
        nbytes = _mallinfo().fordblks + 2 * MiB
        assert _mapped_after_allocating(nbytes) >= nbytes
    nbytes = _mallinfo().fordblks + 2 * MiB
    if nbytes < _heap.MMAP_THRESHOLD_AFTER:  # after the bound, the heap grows instead
        assert _mapped_after_allocating(nbytes) == 0
