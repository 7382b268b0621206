"""The shared pipeline steps (data, evaluation, plan switching) and the demo, on tiny models."""
import json
import os
import stat

import numpy as np
import pytest
import torch
from torch import nn

from allocator import Plan, solve
from mixqvit.datasets import EvalData, load_calibration, load_check, load_test
from mixqvit.evaluation import evaluate_top1, profile_loaded
from mixqvit.checkpoints import save_checkpoint
from mixqvit.loading import load_model
from profiling import joint_damage
from quant import PlanSwitcher, QuantConfig, quantize
from mixqvit.demo import run_demo
from mixqvit.ptq import quantize_plan
from mixqvit_test_helpers import ARCH, TINY, write_image_folder

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("pipeline") / "imgs", per_class=10, size=18, seed=1, prefix="c")


@pytest.fixture(scope="module")
def tiny():
    return load_model(ARCH, model_kwargs=TINY)


def test_calibration_is_seeded_and_class_balanced(tiny, image_folder):
    x1, y1 = load_calibration(tiny, image_folder, 9, seed=3)
    x2, y2 = load_calibration(tiny, image_folder, 9, seed=3)
    x3, _ = load_calibration(tiny, image_folder, 9, seed=4)
    assert x1.shape == (9, 3, 16, 16) and torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    assert torch.bincount(y1).tolist() == [3, 3, 3]
    test = load_test(tiny, image_folder, limit=6)
    assert len(test) == 6 and sorted(y for _, y in test.dataset) == [0, 0, 1, 1, 2, 2]
    assert len(load_test(tiny, image_folder)) == 30


class _Oracle(nn.Module):
    """Predicts the label hidden in the first pixel; `wrong` flips every n-th prediction."""

    def __init__(self, wrong_every=0):
        super().__init__()
        self.wrong_every = wrong_every

    def forward(self, x):
        labels = x[:, 0, 0, 0].long()
        if self.wrong_every:
            idx = torch.arange(len(labels))
            labels = torch.where(idx % self.wrong_every == 0, (labels + 1) % 3, labels)
        return nn.functional.one_hot(labels, 3).float()


@pytest.mark.parametrize("wrong_every, batch_size, expected", [(0, 7, 1.0), (2, 10, 0.5), (5, 10, 0.8)])
def test_evaluate_counts_top1(wrong_every, batch_size, expected):
    labels = torch.arange(20) % 3
    images = torch.zeros(20, 1, 2, 2)
    images[:, 0, 0, 0] = labels.float()
    data = EvalData(images, labels)
    assert evaluate_top1(_Oracle(wrong_every), data, batch_size=batch_size, verbose=False) == pytest.approx(expected)


def test_evaluate_builds_no_autograd_graph():
    """Evaluation of a model with trainable weights must not record the graph (memory, time)."""
    seen = []
    model = nn.Linear(4, 3)
    model.register_forward_hook(lambda mod, args, out: seen.append(torch.is_grad_enabled() or out.requires_grad))
    data = EvalData(torch.randn(10, 4), torch.arange(10) % 3)
    evaluate_top1(model, data, batch_size=4, verbose=False)
    assert seen == [False, False, False]


def _plans(profile):
    mixed = solve(profile, budget={"size_mb": Plan.uniform(profile, 4, 4).size_bytes / 1e6}, solver="scipy")
    return [Plan.uniform(profile, 2, 2), mixed, "W4A8", Plan.uniform(profile, 8, 8)]


def test_plan_switcher_matches_fresh_quantize(tiny, image_folder):
    """Re-setting bits on one calibrated copy gives exactly the model quantize() builds per plan."""
    calib = load_calibration(tiny, image_folder, 12)
    profile = profile_loaded(tiny, calib, bits=(2, 4, 8), verbose=False)
    switcher = PlanSwitcher(tiny.model, calib[0])
    x = torch.randn(5, 3, 16, 16)
    outputs = []
    for plan in _plans(profile):
        switched = switcher.apply(plan)(x)
        fresh = quantize(tiny.model, plan, calib[0])(x)
        assert torch.equal(switched, fresh)
        outputs.append(switched)
    assert not torch.equal(outputs[0], outputs[-1])  # the bits really changed


def test_joint_damage_is_the_kl_of_the_whole_plan(tiny, image_folder):
    calib = load_calibration(tiny, image_folder, 12)
    switcher = PlanSwitcher(tiny.model, calib[0])
    x = torch.randn(7, 3, 16, 16)
    with torch.no_grad():
        w2 = switcher.apply("W2A2")(x)
        w8 = switcher.apply("W8A8")(x)
    # against its own logits a plan does no damage; against another plan's, exactly the KL
    own, other = joint_damage(switcher, ["W2A2", "W2A2"], x, w2, batch_size=3)
    assert own == pytest.approx(0.0, abs=1e-9)
    expected = torch.nn.functional.kl_div(torch.log_softmax(w2.double(), 1), torch.log_softmax(w8.double(), 1),
                                          log_target=True, reduction="batchmean").item()
    (damage,) = joint_damage(switcher, ["W2A2"], x, w8, batch_size=3)
    # batches of 3 against one batch of 7: float32 logits may differ in the last bits (measured 1.4e-7 relative)
    assert damage == pytest.approx(expected, rel=1e-5) and damage > 0


def test_plan_average_bits_of_a_real_profile(tiny, image_folder):
    calib = load_calibration(tiny, image_folder, 6)
    profile = profile_loaded(tiny, calib, bits=(2, 4, 8), verbose=False, importance=False)
    plan = Plan.uniform(profile, 4, 4)
    # pinned first/last layers at 8 bits pull both averages above 4
    assert 4 < plan.avg_w_bits < 8 and 4 < plan.avg_a_bits < 8
    macs = np.array([l.macs for l in profile.layers])
    a = np.array([8 if l.fixed_bits else 4 for l in profile.layers])
    assert plan.avg_a_bits == pytest.approx((macs * a).sum() / macs.sum())
    assert Plan.uniform(profile, 8, 8).avg_a_bits == pytest.approx(8)


def test_saved_checkpoint_is_readable_by_everyone_under_umask_022(tiny, tmp_path):
    old = os.umask(0o022)
    try:
        ckpt = save_checkpoint(tiny.model, tmp_path / "tiny.safetensors", ARCH, TINY)
    finally:
        os.umask(old)
    for f in (ckpt, ckpt.with_suffix(".json")):
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_demo_on_a_checkpoint_writes_table_and_plots(tiny, image_folder, tmp_path, capsys):
    ckpt = save_checkpoint(tiny.model, tmp_path / "tiny.safetensors", ARCH, TINY)
    out = tmp_path / "report"
    result = run_demo([str(ckpt)], calib=12, out_dir=out, data=str(image_folder), bits=(2, 4, 8),
                      budgets=(2, 4), verbose=False, rounding_steps=2, check_images=9)
    printed = capsys.readouterr().out
    assert "Mix-QViT demo" in printed and "uniform" in printed and "mixed" in printed
    table = json.loads((out / "demo.json").read_text())
    methods = [(r["method"], r["budget"]) for r in table["rows"]]
    assert methods == [("float", "FP32"), ("uniform", "W4A4"), ("uniform", "W2A2"),
                       ("mixed", "<= W4A4"), ("mixed", "<= W2A2")]
    by = {(r["method"], r["budget"].removeprefix("<= ")): r for r in table["rows"]}
    for b in ("W2A2", "W4A4"):
        uni, mix = by[("uniform", b)], by[("mixed", b)]
        assert mix["size_mb"] <= uni["size_mb"] * (1 + 1e-9) and mix["gbops"] <= uni["gbops"] * (1 + 1e-9)
        assert mix["solver"] and mix["solve_time_s"] >= 0
        # the chosen plan (uniform among the candidates) is never jointly worse on the calibration images
        assert mix["calib_kl"] <= uni["calib_kl"] and "lowest calib KL" in mix["plan_source"]
        assert mix["plan_source"].split(" (")[0].rstrip("0123456789 ") in ("ILP optimum", "uniform", "k-best", "perturbed")
        if mix["plan_source"].startswith("uniform"):
            assert (mix["size_mb"], mix["gbops"], mix["top1"]) == (uni["size_mb"], uni["gbops"], uni["top1"])
    assert all(0 <= r["top1"] <= 100 for r in table["rows"])
    assert (out / "demo.md").read_text().count("\n| ") == 6
    for png in ("bit_allocation", "importance_sensitivity", "accuracy_vs_size"):
        assert (out / f"{ARCH}_{png}.png").read_bytes()[:8] == PNG_MAGIC
    profile_names = json.loads((out / ARCH / "profile.json").read_text())["layers"]
    mixed_w2a2 = Plan.load(out / ARCH / "plan_mixed_W2A2.json")
    assert mixed_w2a2.names == [l["name"] for l in profile_names]
    assert mixed_w2a2.pinned == [], "the mixed plan chooses the bits the uniform baseline pins"
    assert set(result.files) >= {out / "demo.json", out / "demo.md"}
    # the rounded column is what `mixqvit quantize --reconstruct-rounding 2 --reconstruct-check 9` gives for
    # that plan: checked on the folder's images outside the calibration set, kept or put back as the row and
    # the note say
    assert by[("float", "FP32")]["top1_rounded"] is None
    loaded = load_model(str(ckpt))
    calib = load_calibration(loaded, str(image_folder), 12, seed=0)
    check = load_check(loaded, str(image_folder), 9, 12, seed=0)[0]
    report: list = []
    rebuilt = quantize_plan(loaded.model, mixed_w2a2, calib[0], QuantConfig(), rounding_steps=2, seed=0, check=check,
                            report=report)
    top1 = 100 * evaluate_top1(rebuilt, load_test(loaded, str(image_folder)), verbose=False)
    assert by[("mixed", "W2A2")]["top1_rounded"] == pytest.approx(top1, abs=1e-9)
    kept = {(r["method"], r["budget"]): r["rounding_kept"] for r in result.rows}
    assert kept[("mixed", "<= W2A2")] is report[-1].kept and kept[("float", "FP32")] is None
    put_back = [f"{r['model']} {r['method']} {r['budget']}" for r in result.rows if r["rounding_kept"] is False]
    note = next(n for n in table["notes"] if n.startswith("top-1 + rounding"))
    assert note.endswith("put back, so equal to top-1: " + (", ".join(put_back) or "none") + ".")


def test_demo_without_rounding_leaves_the_column_empty(tiny, image_folder, tmp_path):
    ckpt = save_checkpoint(tiny.model, tmp_path / "tiny.safetensors", ARCH, TINY)
    result = run_demo([str(ckpt)], calib=12, out_dir=tmp_path / "report", data=str(image_folder), bits=(2, 8),
                      budgets=(2,), verbose=False, rounding_steps=0)
    assert [r["top1_rounded"] for r in result.rows] == [None, None, None]
    assert [r["rounding_kept"] for r in result.rows] == [None, None, None]
    assert not any("rounding" in n for n in result.table.notes)


@pytest.mark.recorded
def test_shipped_vit_reproduces_recorded_accuracy():
    loaded = load_model("fmnist_vit")
    test = load_test(loaded, None, limit=500)
    acc = evaluate_top1(loaded.model, test, batch_size=500, verbose=False)
    assert acc == pytest.approx(loaded.info["test_accuracy_first500"], abs=1e-9)


def test_shipped_vit_w8a8_through_the_cli_keeps_accuracy(capsys):
    """W8A8 on the shipped ViT, through the CLI, stays within 1 point of the recorded float accuracy."""
    from mixqvit.cli import main

    assert main(["quantize", "--model", "fmnist_vit", "--plan", "W8A8", "--calib", "64", "--eval",
                 "--test-limit", "500", "--quiet"]) == 0
    out = capsys.readouterr().out
    acc = float(out.split("quantized ")[-1].split()[0].rstrip(","))
    recorded = load_model("fmnist_vit").info["test_accuracy_first500"]
    assert abs(acc - recorded) <= 0.01
