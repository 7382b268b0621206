"""QAT: LSQ/LSQ+ gradients, training progress at W2A2, distillation (DeiT's two heads),
determinism and checkpoint resume. Tiny random-init models on synthetic data, so it runs in
seconds on one core."""
from __future__ import annotations

import importlib
import json
import math

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from quant import (
    CheckpointMismatchError,
    PlanMismatchError,
    QATConfig,
    make_quantizers_learnable,
    qat,
    qat_loss,
    quantize,
    teacher_logits,
)
from quant.lsq import LOG_FROZEN_REASON, param_groups
from quant_helpers import build_tiny, make_images

qat_module = importlib.import_module("quant.qat_train")


def prototype_task(n: int = 32, seed: int = 0, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Images = one of a few fixed random patterns + noise, label = the pattern: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(classes, 1, 32, 32, generator=g)
    labels = torch.arange(n) % classes
    return protos[labels] + 0.5 * torch.randn(n, 1, 32, 32, generator=g), labels


def ce_on(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model.eval()(images), labels))


def test_gradients_reach_weights_and_every_step_size_and_offset(calib_images):
    model = build_tiny("vit")
    qmodel = quantize(model, "W2A2", calib_images)
    before = qmodel(calib_images[:8])
    learned = make_quantizers_learnable(qmodel)
    assert torch.equal(qmodel(calib_images[:8]), before), "LSQ starts exactly at the PTQ model"
    steps, offsets = learned.step_sizes(), learned.offsets()
    # every weight site and every uniform activation quantizer learns; asymmetric ones an offset too
    assert len(learned.weight) == 10 and len(steps) == 10 + 16 and len(offsets) == 16
    assert set(learned.frozen) == {f"blocks.{i}.attn.matmul_av.a_quant" for i in range(2)}
    assert all(reason == LOG_FROZEN_REASON for reason in learned.frozen.values())
    assert all(isinstance(p, torch.nn.Parameter) for p in learned.parameters())

    qmodel.train()
    labels = torch.arange(16) % 10
    x = calib_images[:16]
    loss, parts = qat_loss(qmodel(x), labels, teacher_logits(model.eval(), x), kd_temperature=2.0, kd_weight=0.5)
    assert not math.isnan(parts["ce"]) and not math.isnan(parts["kd"])
    loss.backward()
    for name, p in {**steps, **offsets}.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reached {name}"
    for name, p in qmodel.named_parameters():
        if name.endswith("weight") and "quant" not in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {name}"


def test_learning_rates_follow_the_lsq_rule(calib_images):
    qmodel = quantize(build_tiny("vit"), "W2A2", calib_images)
    learned = make_quantizers_learnable(qmodel)
    groups = {g["name"]: g for g in param_groups(qmodel, learned, lr=1e-3)}
    for name, s in learned.step_sizes().items():
        expected = 1e-3 * float(s.detach().abs().mean()) / learned.weight_ref
        assert groups[f"{name}.scale"]["lr"] == pytest.approx(expected)
        assert groups[f"{name}.scale"]["weight_decay"] == 0.0
    quant_params = {id(p) for p in learned.parameters()}
    model_params = [p for g in groups.values() if g["name"].startswith("weights") for p in g["params"]]
    assert not any(id(p) in quant_params for p in model_params)
    assert len(model_params) + len(quant_params) == len(list(qmodel.parameters()))


def test_training_loss_goes_down_at_w2a2():
    images, labels = prototype_task(32)
    model = build_tiny("vit")
    start = ce_on(quantize(model, "W2A2", images), images, labels)
    qmodel, history = qat(model, "W2A2", (images, labels),
                          config=QATConfig(epochs=10, batch_size=16, lr=3e-3, kd_weight=0.0), verbose=False)
    assert len(history) == 10 and all(r["steps"] == 2 for r in history)
    assert history[-1]["loss"] < history[0]["loss"] - 0.4
    assert ce_on(qmodel, images, labels) < start - 0.4
    assert not qmodel.training


def test_unlabelled_images_train_by_distillation_only():
    images, _ = prototype_task(32)
    qmodel, history = qat(build_tiny("vit"), "W3A3", images, config=QATConfig(batch_size=16), verbose=False)
    assert math.isnan(history[0]["ce"]) and math.isnan(history[0]["train_acc"]) and history[0]["kd"] >= 0
    with pytest.raises(ValueError, match="no training target"):
        qat(build_tiny("vit"), "W3A3", images, config=QATConfig(batch_size=16, kd_weight=0.0), verbose=False)


def test_deit_heads_are_distilled_head_by_head():
    images, labels = prototype_task(16)
    teacher = build_tiny("deit")
    heads = teacher_logits(teacher, images)
    assert len(heads) == 2
    assert torch.allclose((heads[0] + heads[1]) / 2, teacher(images), atol=1e-6), "eval output is the mean of the heads"

    qmodel = quantize(teacher, "W2A2", images)
    make_quantizers_learnable(qmodel)
    qmodel.train().set_distilled_training(True)
    out = qmodel(images)
    assert isinstance(out, tuple) and len(out) == 2
    loss, _ = qat_loss(out, labels, heads, kd_temperature=3.0, kd_weight=0.7)
    loss.backward()
    assert qmodel.head_dist.weight.grad.abs().sum() > 0 and qmodel.dist_token.grad.abs().sum() > 0

    trained, history = qat(teacher, "W2A2", (images, labels), config=QATConfig(batch_size=8), verbose=False)
    assert history[0]["steps"] == 2 and history[0]["kd"] > 0
    assert not trained.distilled_training and isinstance(trained(images), torch.Tensor)


def test_qat_loss_mixes_hard_and_soft_targets():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    ce = torch.nn.functional.cross_entropy(s, y)
    kd = torch.nn.functional.kl_div(torch.log_softmax(s / 4, -1), torch.softmax(t / 4, -1), reduction="batchmean") * 16
    loss, parts = qat_loss(s, y, t, kd_temperature=4.0, kd_weight=0.25)
    assert loss == pytest.approx(float(0.75 * ce + 0.25 * kd), rel=1e-5)
    assert parts["kd"] == pytest.approx(float(kd), rel=1e-5)
    assert qat_loss(s, y, t, kd_weight=0.0)[0] == pytest.approx(float(ce))
    assert qat_loss(s, None, (t,), kd_temperature=4.0)[0] == pytest.approx(float(kd), rel=1e-5)
    assert float(qat_loss(s, None, s, kd_weight=1.0)[0]) == pytest.approx(0.0, abs=1e-6)
    # a two-head teacher and a one-head student: the target is the teacher's mean (its inference output)
    assert qat_loss(s, None, (t, 3 * t), kd_weight=1.0)[0] == pytest.approx(float(qat_loss(s, None, 2 * t, kd_weight=1.0)[0]))


def tiny_with_dropout() -> torch.nn.Module:
    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=8, in_chans=1, num_classes=10, embed_dim=32, depth=2,
                             num_heads=2, drop_rate=0.1, proj_drop_rate=0.1, attn_drop_rate=0.1).eval()


class Crash(Exception):
    pass


@pytest.mark.parametrize("crash_after_save", [1, 3])
def test_resume_from_checkpoint_equals_unbroken_run(tmp_path, monkeypatch, crash_after_save):
    """Kill the run right after a mid-epoch checkpoint, start again: same model, same history.
    Dropout is on, so the RNG state must be restored too."""
    images, labels = prototype_task(24)
    kwargs = dict(config=QATConfig(epochs=2, batch_size=8, lr=3e-3, seed=7, checkpoint_every=2), verbose=False)
    model = tiny_with_dropout()
    rng_before = torch.get_rng_state()
    ref, ref_hist = qat(model, "W2A2", (images, labels), checkpoint=tmp_path / "ref.pt", **kwargs)
    assert torch.equal(torch.get_rng_state(), rng_before), "the caller's RNG state is untouched"

    real_save, saves = qat_module.save_checkpoint, []

    def crashing_save(path, payload):
        real_save(path, payload)
        saves.append(payload["step"])
        if len(saves) == crash_after_save:
            raise Crash

    monkeypatch.setattr(qat_module, "save_checkpoint", crashing_save)
    ckpt = tmp_path / "run.pt"
    with pytest.raises(Crash):
        qat(model, "W2A2", (images, labels), checkpoint=ckpt, **kwargs)
    assert saves[-1] in (2, 4), "crashed right after a mid-epoch checkpoint"
    resumed, hist = qat(model, "W2A2", (images, labels), checkpoint=ckpt, **kwargs)
    ref_state, state = ref.state_dict(), resumed.state_dict()
    assert ref_state.keys() == state.keys()
    for key in ref_state:
        assert torch.equal(ref_state[key], state[key]), key
    assert [(r["steps"], r["loss"], r["train_acc"]) for r in hist] == [(r["steps"], r["loss"], r["train_acc"]) for r in ref_hist]
    assert torch.equal(resumed(images), ref(images))

    # a finished checkpoint returns the trained model without training again
    again, again_hist = qat(model, "W2A2", (images, labels), checkpoint=ckpt, **kwargs)
    assert torch.equal(again(images), ref(images)) and len(again_hist) == 2


def test_checkpoint_of_another_run_is_refused(tmp_path):
    images, labels = prototype_task(16)
    ckpt = tmp_path / "qat.pt"
    qat(build_tiny("vit"), "W2A2", (images, labels), config=QATConfig(batch_size=8), checkpoint=ckpt, verbose=False)
    with pytest.raises(CheckpointMismatchError, match="lr: checkpoint 0.0005 vs now 0.0001") as info:
        qat(build_tiny("vit"), "W2A2", (images, labels), config=QATConfig(batch_size=8, lr=1e-4), checkpoint=ckpt,
            verbose=False)
    assert set(info.value.differences) == {"lr"}
    with pytest.raises(CheckpointMismatchError, match="plan differs at blocks.0.attn.matmul_av"):
        qat(build_tiny("vit"), "W3A3", (images, labels), config=QATConfig(batch_size=8), checkpoint=ckpt, verbose=False)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="delete"):
        qat(build_tiny("vit"), "W2A2", (images, labels), config=QATConfig(batch_size=8),
            checkpoint=tmp_path / "junk.pt", verbose=False)


def test_dataloader_training_data_and_max_steps():
    images, labels = prototype_task(32)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=8)
    _, history = qat(build_tiny("vit"), "W4A4", loader, config=QATConfig(epochs=3, max_steps=5), verbose=False)
    assert [r["steps"] for r in history] == [4, 1]


@pytest.mark.parametrize(
    "kwargs, exc, text",
    [
        ({"kd_weight": 1.5}, ValueError, "kd_weight"),
        ({"epochs": 0}, ValueError, "epochs"),
        ({"kd_temperature": 0.0}, ValueError, "kd_temperature"),
        ({"plan": "W2"}, ValueError, "W<bits>A<bits>"),
        ({"train_data": iter([])}, TypeError, "one-shot"),
        ({"train_data": torch.zeros(4, 32, 32)}, ValueError, "(N, C, H, W)"),
    ],
)
def test_bad_arguments_are_explained(kwargs, exc, text):
    args = {"plan": "W2A2", "train_data": make_images(8), **kwargs}
    with pytest.raises(exc, match=__import__("re").escape(text)):
        cfg = QATConfig(**{k: v for k, v in args.items() if k not in ("plan", "train_data")})
        qat(build_tiny("vit"), args["plan"], args["train_data"], config=cfg, verbose=False)


def test_config_is_keyword_only_and_serialisable():
    cfg = QATConfig(epochs=3, lr=1e-3, kd_weight=0.0)
    assert QATConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(TypeError):
        qat(build_tiny("vit"), "W2A2", make_images(8), 2)  # the old positional epochs
    with pytest.raises(ValueError, match="unknown fields"):
        QATConfig.from_dict({"epoch": 1})
    with pytest.raises(ValueError, match="no usable CUDA|only"):
        if torch.cuda.is_available():
            qat(build_tiny("vit"), "W2A2", make_images(8), device=f"cuda:{torch.cuda.device_count()}")
        qat(build_tiny("vit"), "W2A2", make_images(8), device="cuda")


def test_plan_of_another_model_is_refused_before_any_work():
    class Plan:
        w_bits = {"nope": 2}
        a_bits = {"nope": 2}

    with pytest.raises(PlanMismatchError, match="nope"):
        qat(build_tiny("vit"), Plan(), make_images(8), verbose=False)


def test_set_bits_after_make_learnable_rederives_in_place(calib_images):
    """An optimiser holding the step sizes and offsets keeps working when bits change."""
    qmodel = quantize(build_tiny("vit"), "W2A2", calib_images)
    learned = make_quantizers_learnable(qmodel)
    site = qmodel.blocks[0].mlp.fc2
    scale, offset = site.act_quant.quantizer.scale, site.act_quant.quantizer.zero_point
    at2 = scale.detach().clone()
    site.set_bits(2, 4)
    qmodel(calib_images[:2])
    assert site.act_quant.quantizer.scale is scale and site.act_quant.quantizer.zero_point is offset
    assert float(scale.detach()) < float(at2), "a 4-bit step is finer than a 2-bit one"
    assert learned.offsets()["blocks.0.mlp.fc2.act_quant"] is offset
