"""Demo model construction and the shipped, trained checkpoints."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from mixqvit.data import load_fashion_mnist
from mixqvit.models import (
    MODEL_CONFIGS,
    available_models,
    build_model,
    count_parameters,
    load_shipped,
    shipped_paths,
)
from mixqvit.datasets import EvalData
from mixqvit.evaluation import evaluate_top1

NAMES = ["fmnist_vit", "fmnist_deit", "fmnist_swin"]


def test_available_models():
    assert available_models() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_build_model_shapes(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    assert type(model).__name__ == MODEL_CONFIGS[name].timm_class
    with torch.no_grad():
        out = model(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    assert 100_000 < count_parameters(model) < 1_500_000  # a few MB of float32 weights


def test_build_model_is_seeded():
    torch.manual_seed(1)
    a = build_model("fmnist_vit").state_dict()
    torch.manual_seed(1)
    b = build_model("fmnist_vit").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_deit_distilled_training_returns_both_heads():
    model = build_model("fmnist_deit").train()
    model.set_distilled_training(True)
    cls_logits, dist_logits = model(torch.randn(2, 1, 28, 28))
    assert cls_logits.shape == dist_logits.shape == (2, 10)
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)  # eval: mean of both heads


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"unknown model 'resnet'.*fmnist_vit"):
        build_model("resnet")


@pytest.fixture(scope="module")
def first500():
    images, labels = load_fashion_mnist("test")
    return images[:500], labels[:500]


@pytest.mark.recorded
@pytest.mark.parametrize("name", NAMES)
def test_shipped_model_accuracy_is_reproduced(name, first500):
    """The recorded first-500 accuracy is a real measurement: re-measuring gives the same number."""
    model, info = load_shipped(name)
    weights, _ = shipped_paths(name)
    assert weights.stat().st_size < 8 * 2**20
    assert not model.training
    assert info["n_test"] == 10000 and info["limits"] == {"train_limit": None, "test_limit": None, "max_steps": None}
    assert info["params"] == count_parameters(model)
    accuracy = evaluate_top1(model, EvalData(*first500), batch_size=info["eval_batch_size"], verbose=False)
    assert accuracy == info["test_accuracy_first500"]
    assert info["test_accuracy"] > 0.85


def test_load_shipped_missing_and_mismatched(tmp_path):
    with pytest.raises(FileNotFoundError, match="mixqvit train fmnist_vit --out-dir"):
        load_shipped("fmnist_vit", tmp_path)
    weights, info_path = shipped_paths("fmnist_vit")
    shutil.copy(weights, tmp_path / weights.name)
    info = json.loads(info_path.read_text())
    info["model"]["kwargs"]["depth"] = 99
    (tmp_path / info_path.name).write_text(json.dumps(info))
    with pytest.raises(ValueError, match="describes architecture"):
        load_shipped("fmnist_vit", tmp_path)
