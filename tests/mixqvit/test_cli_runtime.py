"""A user's model at 224x224 through the CLI: DeiT-S (depth cut to 2 blocks so the test stays
well under 30 s on one CPU thread; every other dimension is DeiT-S's) on a tiny ImageFolder,
profile -> solve -> quantize --eval with --device cpu, --batch-size, --threads, --checkpoint,
--weights; random weights said out loud and recorded; a class-count mismatch warned about;
--device cuda without a GPU a one-line error."""
from __future__ import annotations

import json

import pytest
import timm
import torch

from mixqvit.cli import main
from mixqvit_test_helpers import write_image_folder

ARCH = "deit_small_patch16_224"
KWARGS = '{"depth": 2}'


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("imgs") / "data", per_class=2, size=224)


def test_deit_small_224_profile_solve_quantize_on_cpu(folder, tmp_path, capsys):
    prof, ckpt, plan = tmp_path / "p.json", tmp_path / "sens.json", tmp_path / "plan.json"
    common = ["--model", ARCH, "--model-kwargs", KWARGS, "--data", str(folder), "--calib", "3",
              "--device", "cpu", "--threads", "1", "--quiet"]
    assert main(["profile", *common, "--bits", "4,8", "--batch-size", "2", "--checkpoint", str(ckpt),
                 "--out", str(prof)]) == 0
    out = capsys.readouterr()
    assert "RANDOM weights" in out.err and "on cpu" in out.out
    doc = json.loads(prof.read_text())
    md = doc["metadata"]
    assert md["weights"].startswith("random") and md["batch_size"] == 2 and md["input_shape"] == [3, 224, 224]
    assert md["calibration_size"] == 3 and len(doc["layers"]) == 2 * 6 + 2
    assert json.loads(ckpt.read_text())["done"]  # the sensitivity checkpoint was written

    # the same command again resumes from the finished checkpoint and gives the same tables
    assert main(["profile", *common, "--bits", "4,8", "--batch-size", "2", "--checkpoint", str(ckpt),
                 "--out", str(tmp_path / "again.json")]) == 0
    assert "resuming" in capsys.readouterr().out
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["act_sensitivity"] == doc["act_sensitivity"] and again["weight_sensitivity"] == doc["weight_sensitivity"]

    assert main(["solve", str(prof), "--budget", "6", "--out", str(plan)]) == 0
    capsys.readouterr()

    # the user's trained weights as a plain state_dict .pth beside the timm name
    with torch.random.fork_rng():
        torch.manual_seed(1)
        state = timm.create_model(ARCH, depth=2).state_dict()
    weights = tmp_path / "deit_s.pth"
    torch.save(state, weights)
    assert main(["quantize", *common, "--weights", str(weights), "--plan", str(plan), "--eval", "--batch-size",
                 "3", "--workers", "0"]) == 0
    out = capsys.readouterr()
    assert "RANDOM" not in out.err
    assert "has 3 classes but the model predicts 1000" in out.err
    assert "top-1 on ImageFolder" in out.out and "on cpu" in out.out


def test_missing_gpu_and_bad_weights_are_one_line_errors(folder, tmp_path, capsys):
    common = ["--model", ARCH, "--model-kwargs", KWARGS, "--data", str(folder), "--calib", "2", "--quiet"]
    if not torch.cuda.is_available():
        for argv in (["quantize", *common, "--plan", "W8A8"], ["profile", *common], ["qat", *common, "--plan", "W4A4"],
                     ["demo", "--out", str(tmp_path / "report")], ["train", "fmnist_vit", "--out-dir", str(tmp_path)]):
            assert main([*argv, "--device", "cuda"]) == 2, argv[0]
            err = capsys.readouterr().err
            assert "Traceback" not in err and "no usable CUDA GPU" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.pth"
    torch.save({"head.weight": torch.zeros(3, 3)}, bad)
    assert main(["quantize", *common, "--plan", "W8A8", "--weights", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "do not fit" in err and "Traceback" not in err


def _sharded_top1(folder: str) -> tuple:
    from mixqvit.datasets import load_test
    from mixqvit.evaluation import evaluate_top1
    from mixqvit.loading import load_model
    from quant import QuantConfig, dist, quantize

    loaded = load_model("vit_tiny_patch16_224", model_kwargs={"img_size": 32, "patch_size": 8, "depth": 2,
                                                              "num_classes": 3})
    test = load_test(loaded, folder)
    calib = torch.stack([test.dataset[i][0] for i in range(4)])
    qmodel = quantize(loaded.model, "W4A4", calib, config=QuantConfig(weight_rounding="nearest"))  # what is
    # tested is the sharding of evaluation, so the quantizer settings are pinned
    return dist.world(), evaluate_top1(qmodel, test, batch_size=4, verbose=False), len(test)


def test_evaluation_sharded_over_two_processes_equals_one(tmp_path):
    from quant import dist

    folder = write_image_folder(tmp_path / "data", per_class=7, size=32)  # 21 images: uneven shares of 11 + 10
    single = _sharded_top1(str(folder))
    out = dist.spawn(_sharded_top1, 2, str(folder))
    assert [o[0] for o in out] == [(0, 2), (1, 2)]
    assert all(o[1:] == single[1:] for o in out), (single, out)
