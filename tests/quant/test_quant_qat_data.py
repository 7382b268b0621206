"""quant.data_utils.iter_batches: the shared (images, labels | None) reader used by QAT and profiling."""
from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from quant import iter_batches, iter_images


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 23), batch_size=st.one_of(st.none(), st.integers(1, 9)), labelled=st.booleans())
def test_tensor_forms_are_chunked_in_order_with_aligned_labels(n, batch_size, labelled):
    x = torch.randn(n, 1, 2, 2)
    y = torch.arange(n)
    batches = list(iter_batches((x, y) if labelled else x, batch_size=batch_size))
    expected = 1 if batch_size is None else -(-n // batch_size)
    assert len(batches) == expected
    assert torch.equal(torch.cat([b for b, _ in batches]), x)
    if labelled:
        assert torch.equal(torch.cat([lab for _, lab in batches]), y)
        assert all(len(b) == len(lab) for b, lab in batches)
    else:
        assert all(lab is None for _, lab in batches)


def test_iterables_pass_batches_through_with_their_labels():
    x, y = torch.randn(6, 1, 4, 4), torch.arange(6)
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=False)
    got = list(iter_batches(loader))
    assert [len(b) for b, _ in got] == [4, 2] and torch.equal(torch.cat([lab for _, lab in got]), y)
    assert all(lab is None for _, lab in iter_batches([x[:3], x[3:]]))
    # a non-tensor second element (e.g. file names) is not a label
    assert list(iter_batches([(x, ["a"] * 6)]))[0][1] is None
    # iter_images is iter_batches without labels (and ignores whatever the second element is)
    assert torch.equal(torch.cat(list(iter_images((x, y), batch_size=4))), x)
    assert torch.equal(torch.cat(list(iter_images([(x, torch.rand(6, 3))]))), x)


@pytest.mark.parametrize(
    "bad, exc, text",
    [
        ((torch.randn(4, 1, 2, 2), torch.arange(3)), ValueError, "1-D integer tensor of 4"),
        ([(torch.randn(2, 1, 2, 2), torch.zeros(2))], ValueError, "item 0"),
        ([(torch.randn(2, 1, 2, 2), torch.zeros(2, 2, dtype=torch.long))], ValueError, "labels of shape (2, 2)"),
        (torch.randn(3, 4, 4), ValueError, "(N, C, H, W)"),
        (42, TypeError, "(images, labels) pair"),
    ],
)
def test_bad_batches_are_explained(bad, exc, text):
    with pytest.raises(exc, match=re.escape(text)):
        list(iter_batches(bad))
    with pytest.raises(ValueError, match="batch_size"):
        list(iter_batches(torch.randn(2, 1, 2, 2), batch_size=0))
