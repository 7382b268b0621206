import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from quant import iter_images


def test_tensor_is_chunked_in_order():
    x = torch.arange(10 * 3 * 2 * 2, dtype=torch.float32).reshape(10, 3, 2, 2)
    batches = list(iter_images(x, batch_size=4))
    assert [b.shape[0] for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat(batches), x)


def test_iterable_of_tensors_and_pairs_and_dataloader():
    x = torch.randn(6, 1, 4, 4)
    y = torch.arange(6)
    assert torch.equal(torch.cat(list(iter_images([x[:3], x[3:]]))), x)
    assert torch.equal(torch.cat(list(iter_images([(x[:2], y[:2]), [x[2:], y[2:]]]))), x)
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=False)
    assert torch.equal(torch.cat(list(iter_images(loader))), x)


@pytest.mark.parametrize(
    "bad, exc, text",
    [
        (torch.randn(3, 4, 4), ValueError, "(N, C, H, W)"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.long), ValueError, "floating-point"),
        (42, TypeError, "int"),
        ("images", TypeError, "str"),
        ([torch.randn(1, 1, 2, 2), {"x": 1}], TypeError, "item 1"),
        ([("labels only",)], TypeError, "item 0"),
    ],
)
def test_bad_inputs_are_explained(bad, exc, text):
    with pytest.raises(exc, match=__import__("re").escape(text)):
        list(iter_images(bad))
