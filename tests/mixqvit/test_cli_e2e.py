"""End to end through the CLI on a tiny random-init timm ViT and a synthetic ImageFolder:
profile -> solve -> quantize -> evaluate, plus the errors a user meets on the way.

Commands run in-process through `mixqvit.cli.main` (a subprocess would pay the torch import
each time); `test_cli_allocation.py` covers `python -m mixqvit` itself.
"""
import re

import pytest
import torch

from allocator import Plan, Profile
from mixqvit.datasets import load_calibration, load_test
from mixqvit.evaluation import evaluate_top1
from mixqvit.checkpoints import save_checkpoint
from mixqvit.loading import load_model
from quant import quantize
from mixqvit.cli import main
from mixqvit_test_helpers import ARCH, MODEL_ARGS, TINY, write_image_folder



@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("data") / "imgs")


def _error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("mixqvit")]
    assert len(lines) == 1, err
    return lines[0]


def test_profile_solve_quantize_eval(image_folder, tmp_path, capsys):
    prof_path, plan_path, q_path = tmp_path / "profile.json", tmp_path / "plan.json", tmp_path / "q.pt"
    data = ["--data", str(image_folder), "--calib", "12"]
    assert main(["profile", *MODEL_ARGS, *data, "--bits", "2,4,8", "--out", str(prof_path), "--quiet"]) == 0
    profile = Profile.load(prof_path)
    assert profile.bits == (2, 4, 8)
    assert profile.names[0] == "patch_embed.proj" and profile.names[-1] == "head"
    assert {l.kind for l in profile.layers} == {"conv", "linear", "matmul"}
    assert profile.metadata["model"] == ARCH and profile.metadata["input_size"] == [3, 16, 16]
    capsys.readouterr()

    assert main(["solve", str(prof_path), "--budget", "6", "--out", str(plan_path)]) == 0
    plan = Plan.load(plan_path)
    assert plan.names == profile.names
    assert plan.avg_w_bits <= 6 + 1e-9
    assert plan.bops <= sum(l.macs * 36 for l in profile.layers) * (1 + 1e-9)
    capsys.readouterr()

    rc = main(["quantize", *MODEL_ARGS, *data, "--plan", str(plan_path), "--eval", "--float", "--quiet",
               "--out", str(q_path)])
    assert rc == 0
    out = capsys.readouterr().out
    match = re.search(r"top-1 on ImageFolder .*, 24 images: quantized ([0-9.]+), float ([0-9.]+)", out)
    assert match, out
    acc_q, acc_f = float(match.group(1)), float(match.group(2))
    assert 0.0 <= acc_q <= 1.0 and 0.0 <= acc_f <= 1.0
    # the saved quantized model reloads and computes what a fresh quantization with the plan does
    # (an untrained timm model is seeded, so every command sees the same weights)
    loaded = load_model(ARCH, model_kwargs=TINY)
    assert torch.equal(loaded.model.head.weight, load_model(ARCH, model_kwargs=TINY).model.head.weight)
    calib = load_calibration(loaded, image_folder, 12)
    fresh = quantize(loaded.model, plan, calib[0])
    qmodel = torch.load(q_path, weights_only=False)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(qmodel(x), fresh(x))
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.recorded
def test_shipped_vit_profile_solve_quantize_eval_on_fashion_mnist(tmp_path, capsys):
    """The whole CLI chain on the shipped ViT and real test images: the float accuracy it prints
    is the one recorded when the checkpoint was trained (same first 500 images)."""
    prof_path, plan_path = tmp_path / "profile.json", tmp_path / "plan.json"
    assert main(["profile", "--model", "fmnist_vit", "--calib", "32", "--bits", "2,4,8",
                 "--out", str(prof_path), "--quiet"]) == 0
    profile = Profile.load(prof_path)
    assert len(profile.layers) == 38 and profile.bits == (2, 4, 8)
    capsys.readouterr()
    assert main(["solve", str(prof_path), "--budget", "4", "--out", str(plan_path)]) == 0
    plan = Plan.load(plan_path)
    assert plan.names == profile.names and plan.avg_w_bits <= 4 + 1e-9
    assert plan.bops <= sum(l.macs * 16 for l in profile.layers) * (1 + 1e-9)
    capsys.readouterr()
    assert main(["quantize", "--model", "fmnist_vit", "--plan", str(plan_path), "--calib", "32", "--eval",
                 "--float", "--test-limit", "500", "--quiet"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"top-1 on Fashion-MNIST test, 500 images .*: quantized ([0-9.]+), float ([0-9.]+)", out)
    assert match, out
    recorded = load_model("fmnist_vit").info["test_accuracy_first500"]
    assert float(match.group(2)) == pytest.approx(recorded, abs=1e-4)
    assert abs(float(match.group(1)) - recorded) <= 0.03  # a 4-bit budget on 32 calibration images


def test_checkpoint_paths_load_the_same_model(image_folder, tmp_path, capsys):
    loaded = load_model(ARCH, model_kwargs=TINY)
    ckpt = save_checkpoint(loaded.model, tmp_path / "tiny.safetensors", ARCH, TINY)
    torch.save({"arch": ARCH, "model_kwargs": TINY, "state_dict": loaded.model.state_dict()}, tmp_path / "tiny.pt")
    x = torch.randn(4, 3, 16, 16)
    for path in (ckpt, tmp_path / "tiny.pt"):
        again = load_model(str(path))
        assert again.input_size == (3, 16, 16) and again.source == "checkpoint"
        assert torch.equal(again.model(x), loaded.model.eval()(x))
    test = load_test(loaded, image_folder)
    expected = evaluate_top1(loaded.model, test, verbose=False)
    assert main(["quantize", "--model", str(ckpt), "--data", str(image_folder), "--calib", "6", "--plan", "W8A8",
                 "--eval", "--float", "--quiet"]) == 0
    assert f"float {expected:.4f}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, expected", [
    (["profile", "--model", "vit_tiny_patch16_22"], "unknown model 'vit_tiny_patch16_22'"),
    (["profile", "--model", "no/such/model.safetensors"], "checkpoint no/such/model.safetensors does not exist"),
    (["quantize", *MODEL_ARGS, "--plan", "W4A4", "--data", "/no/such/dir"], "data path /no/such/dir does not exist"),
    (["quantize", *MODEL_ARGS, "--plan", "W4A4"], "needs --data"),
    (["quantize", *MODEL_ARGS, "--plan", "/no/plan.json", "--data", "."], "plan file"),
    (["profile", "--model", ARCH, "--model-kwargs", '{"no_such_kwarg": 1}', "--data", "."], "rejected --model-kwargs"),
])
def test_user_errors_exit_2_with_one_line(argv, expected, capsys, tmp_path):
    out = tmp_path / "profile.json"
    assert main([*argv, *(["--out", str(out)] if argv[0] == "profile" else [])]) == 2
    assert expected in _error_line(capsys)
    assert not out.exists()


def test_calib_larger_than_folder_and_plan_of_other_model(image_folder, tmp_path, capsys):
    assert main(["profile", *MODEL_ARGS, "--data", str(image_folder), "--calib", "100"]) == 2
    assert "--calib 100 exceeds the 24 images" in _error_line(capsys)
    other = Plan.from_dict({"format_version": 1, "layers": [
        {"name": "fc", "kind": "linear", "params": 10, "macs": 10, "w_bits": 4, "a_bits": 4}]})
    other.save(tmp_path / "other.json")
    assert main(["quantize", *MODEL_ARGS, "--data", str(image_folder), "--calib", "3",
                 "--plan", str(tmp_path / "other.json")]) == 2
    assert "plan does not match the model" in _error_line(capsys)


def test_fashion_mnist_data_with_rgb_model(capsys):
    assert main(["quantize", *MODEL_ARGS, "--plan", "W4A4", "--data", "/usr/share/datasets/fashion-mnist",
                 "--calib", "10"]) == 2
    assert "Fashion-MNIST images are (1, 28, 28)" in _error_line(capsys)


def test_pretrained_download_failure_is_clear(monkeypatch, tmp_path, capsys):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["profile", "--model", ARCH, "--pretrained", "--data", "."]) == 2
    line = _error_line(capsys)
    assert "no pretrained weights for 'vit_tiny_patch16_224'" in line and "internet" in line
