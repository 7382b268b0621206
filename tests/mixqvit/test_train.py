"""Training: schedule, augmentation, determinism, distillation, and the saved files."""
from __future__ import annotations

import argparse
from dataclasses import asdict
import json
import os
import stat

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mixqvit.commands import train as train_command
from mixqvit.data import FMNIST_MEAN, FMNIST_STD, load_fashion_mnist
from mixqvit.datasets import EvalData
from mixqvit.evaluation import evaluate_top1
from mixqvit.models import build_model, load_shipped, shipped_paths
from mixqvit.fit import TeacherTargets, augment, fit, lr_at
from mixqvit.recipes import RECIPES, TrainConfig
from mixqvit.train import CheckpointExistsError, train_model

SMALL = TrainConfig(epochs=1, batch_size=64, lr=1e-3, warmup_epochs=0.0)


@pytest.fixture(scope="module")
def tiny_data():
    images, labels = load_fashion_mnist("test")
    return images[:256].clone(), labels[:256].clone()


@settings(max_examples=60, deadline=None)
@given(total=st.integers(1, 500), warm_frac=st.floats(0, 0.5), data=st.data())
def test_lr_schedule_bounds_and_ends(total, warm_frac, data):
    warmup = int(warm_frac * total)
    step = data.draw(st.integers(0, total - 1))
    lr = lr_at(step, total, warmup, 1e-3, 1e-5)
    assert 0 < lr <= 1e-3 + 1e-15 and (step < warmup or lr >= 1e-5 - 1e-15)
    if warmup < total - 1:
        assert lr_at(total, total, warmup, 1e-3, 1e-5) == pytest.approx(1e-5)
        assert lr_at(warmup, total, warmup, 1e-3, 1e-5) == pytest.approx(1e-3)


def test_augment_translates_and_flips_one_pixel():
    background = (0.0 - FMNIST_MEAN) / FMNIST_STD
    img = torch.full((64, 1, 28, 28), background)
    img[:, 0, 10, 5] = 3.0
    out = augment(img, torch.Generator().manual_seed(0), padding=2, hflip=True)
    assert out.shape == img.shape
    assert torch.all((out == 3.0).flatten(1).sum(1) == 1)  # the pixel survives exactly once
    rows, cols = torch.nonzero(out[:, 0] == 3.0)[:, 1], torch.nonzero(out[:, 0] == 3.0)[:, 2]
    assert torch.all((rows - 10).abs() <= 2)
    unflipped, flipped = (cols - 5).abs() <= 2, (cols - 22).abs() <= 2
    assert torch.all(unflipped ^ flipped) and unflipped.any() and flipped.any()
    assert torch.all(out[out != 3.0] == background)
    torch.testing.assert_close(out, augment(img, torch.Generator().manual_seed(0), 2, True))
    assert torch.equal(augment(img, torch.Generator(), 0, False), img)


def _run(tiny_data, seed: int, steps: int):
    torch.manual_seed(seed)
    model = build_model("fmnist_vit")
    history = fit(model, *tiny_data, SMALL, torch.Generator().manual_seed(seed), max_steps=steps, verbose=False)
    return model, history


def test_fit_is_deterministic_and_loss_decreases(tiny_data):
    images, labels = tiny_data
    torch.manual_seed(0)
    with torch.no_grad():
        before = F.cross_entropy(build_model("fmnist_vit").eval()(images), labels).item()
    a, hist_a = _run(tiny_data, seed=0, steps=8)
    b, hist_b = _run(tiny_data, seed=0, steps=8)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert hist_a[0]["loss"] == hist_b[0]["loss"] and hist_a[0]["train_acc"] == hist_b[0]["train_acc"]
    with torch.no_grad():
        after = F.cross_entropy(a(images), labels).item()
    assert after < before - 0.2, (before, after)
    c, _ = _run(tiny_data, seed=1, steps=1)
    assert not torch.equal(c.state_dict()["head.weight"], sa["head.weight"])


def test_hard_distillation_runs_and_restores_mode(tiny_data):
    torch.manual_seed(0)
    teacher = build_model("fmnist_vit").eval()
    student = build_model("fmnist_deit")
    cfg = TrainConfig(epochs=1, batch_size=64, distill="hard")
    history = fit(student, *tiny_data, cfg, torch.Generator().manual_seed(0), teacher=teacher, max_steps=2, verbose=False)
    assert len(history) == 1 and history[0]["loss"] > 0
    assert student.distilled_training is False and not student.training
    with pytest.raises(ValueError, match="distill=None"):
        fit(student, *tiny_data, SMALL, torch.Generator(), teacher=teacher, max_steps=1, verbose=False)
    with pytest.raises(ValueError, match="distillation head"):
        fit(build_model("fmnist_vit"), *tiny_data, cfg, torch.Generator(), teacher=teacher, max_steps=1, verbose=False)


def test_cached_teacher_targets_match_running_the_teacher(tiny_data):
    """With flips only, looked-up teacher logits are the teacher's logits on the augmented batch."""
    images, _ = tiny_data
    torch.manual_seed(0)
    teacher = build_model("fmnist_vit").eval()
    cached = TeacherTargets(teacher, images, TrainConfig(crop_padding=0))
    live = TeacherTargets(teacher, images, TrainConfig(crop_padding=2))
    assert cached.cache is not None and cached.cache.shape == (2, 256, 10) and live.cache is None
    idx = torch.tensor([5, 200, 7, 31, 99, 0])
    x, flipped = augment(images[idx], torch.Generator().manual_seed(2), 0, True, return_flips=True)
    assert flipped.any() and (~flipped).any()
    torch.testing.assert_close(cached(x, idx, flipped), live(x, idx, flipped), rtol=1e-5, atol=1e-5)


def test_train_model_writes_loadable_files(tmp_path):
    old_umask = os.umask(0o022)
    try:
        info = train_model(
            "fmnist_vit", epochs=1, seed=0, out_dir=tmp_path, verbose=False,
            overrides={"batch_size": 64}, train_limit=256, test_limit=500, max_steps=2, device="cpu",
        )
    finally:
        os.umask(old_umask)
    for f in ("fmnist_vit.safetensors", "fmnist_vit.json"):  # shipped package data: readable by all
        assert stat.S_IMODE((tmp_path / f).stat().st_mode) == 0o644, f
    saved = json.loads((tmp_path / "fmnist_vit.json").read_text())
    assert saved["test_accuracy_first500"] == info["test_accuracy_first500"]
    assert saved["limits"] == {"train_limit": 256, "test_limit": 500, "max_steps": 2}
    assert saved["train"]["batch_size"] == 64 and saved["threads"] == 1 and saved["device"] == "cpu"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries
    model, loaded = load_shipped("fmnist_vit", tmp_path)
    images, labels = load_fashion_mnist("test")
    first500 = EvalData(images[:500], labels[:500])
    assert evaluate_top1(model, first500, batch_size=500, verbose=False) == loaded["test_accuracy_first500"]
    with pytest.raises(CheckpointExistsError, match="fmnist_vit.safetensors exists"):
        train_model("fmnist_vit", out_dir=tmp_path, verbose=False, max_steps=1)
    with pytest.raises(ValueError, match="does not distill"):
        train_model("fmnist_vit", teacher="fmnist_vit", out_dir=tmp_path, force=True, verbose=False, max_steps=1)


def test_train_command_never_touches_the_shipped_checkpoints(tmp_path, monkeypatch, capsys):
    """`mixqvit train NAME` with defaults writes under ./models, and refuses to replace without --force."""
    from mixqvit.cli import main

    shipped = [p.read_bytes() for p in shipped_paths("fmnist_vit")]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "fmnist_vit.safetensors").write_bytes(b"mine")
    assert main(["train", "fmnist_vit", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "fmnist_vit.safetensors exists" in err and "--force" in err and "Traceback" not in err
    assert (tmp_path / "models" / "fmnist_vit.safetensors").read_bytes() == b"mine"
    assert [p.read_bytes() for p in shipped_paths("fmnist_vit")] == shipped


def test_train_command_passes_device_threads_and_batch_size(tmp_path, monkeypatch, capsys):
    """`mixqvit train --device/--threads/--batch-size` reach train_model; torchrun is refused in one line."""
    import mixqvit.train
    from mixqvit.cli import main

    calls = []
    monkeypatch.setattr(mixqvit.train, "train_model", lambda name, **kw: calls.append((name, kw)))
    assert main(["train", "fmnist_swin", "--out-dir", str(tmp_path), "--device", "cpu", "--threads", "1",
                 "--batch-size", "32", "--quiet"]) == 0
    name, kw = calls[0]
    assert name == "fmnist_swin" and str(kw["device"]) == "cpu" and kw["threads"] == 1
    assert kw["overrides"] == {"batch_size": 32}
    assert main(["train", "fmnist_vit", "--out-dir", str(tmp_path), "--quiet"]) == 0
    assert calls[1][1]["overrides"] is None and calls[1][1]["threads"] == 1  # the recipe's batch, one thread
    monkeypatch.setenv("WORLD_SIZE", "2")
    capsys.readouterr()
    assert main(["train", "fmnist_vit", "--out-dir", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not under torchrun" in err and len(err.strip().splitlines()) == 1 and len(calls) == 2


def test_a_teacher_override_is_what_the_info_records(tmp_path):
    info = train_model("fmnist_deit", teacher="fmnist_vit", epochs=1, out_dir=tmp_path, verbose=False,
                       train_limit=128, test_limit=100, max_steps=1)
    assert RECIPES["fmnist_deit"].teacher != "fmnist_vit"
    assert info["train"]["teacher"] == info["teacher"]["name"] == "fmnist_vit"


def test_recipes_and_arguments():
    assert set(RECIPES) == {"fmnist_vit", "fmnist_deit", "fmnist_swin"}
    assert RECIPES["fmnist_deit"].distill == "hard" and RECIPES["fmnist_deit"].teacher == "fmnist_swin"
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    args = parser.parse_args(["fmnist_swin", "--epochs", "3", "--threads", "2"])
    assert (args.model, args.epochs, args.threads, args.data, args.seed) == ("fmnist_swin", 3, 2, None, 0)
    assert args.out_dir == "models" and not args.force
    assert set(train_command.TRAINABLE) == set(RECIPES)
    with pytest.raises(ValueError, match="distill must be"):
        TrainConfig(distill="medium")
    with pytest.raises(ValueError, match="unknown model"):
        train_model("resnet", out_dir="unused", verbose=False)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_shipped_checkpoints_were_trained_with_their_recipe(name):
    """`mixqvit train NAME` with its recipe's defaults retrains exactly what is shipped."""
    _, info = load_shipped(name)
    recipe = RECIPES[name]
    assert info["epochs"] == recipe.epochs and info["seed"] == 0 and info["threads"] == 1
    assert info["train"] == {**asdict(recipe), "epochs": recipe.epochs}
    assert (info["teacher"] or {}).get("name") == recipe.teacher
