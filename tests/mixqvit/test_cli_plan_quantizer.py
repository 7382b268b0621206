"""A plan carries the quantizer its profile was measured with, and `quantize`/`export` apply that
one unless told otherwise (issue 16: the allocator optimises what the user gets)."""
from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, strategies as st
from mixqvit_test_helpers import ARCH, MODEL_ARGS, TINY, write_image_folder

import quant
from allocator import Plan, Profile
from allocator.errors import PlanError
from mixqvit.cli import main
from mixqvit.datasets import load_calibration
from mixqvit.loading import load_model
from mixqvit.ptq import plan_config
from quant import QuantConfig
from quant.config import PRESETS

PRESET_NAMES = sorted(PRESETS)


@pytest.fixture(scope="module")
def v1_plan(tmp_path_factory):
    """A tiny ViT profiled with --preset v1 and solved at 6 bits: (data folder, profile, plan path)."""
    root = tmp_path_factory.mktemp("v1")
    data = write_image_folder(root / "data", per_class=4)
    prof, plan = root / "profile.json", root / "plan.json"
    assert main(["profile", *MODEL_ARGS, "--data", str(data), "--calib", "6", "--bits", "2,4,8", "--no-importance",
                 "--preset", "v1", "--out", str(prof), "--quiet"]) == 0
    assert main(["solve", str(prof), "--budget", "6", "--objective", "sensitivity", "--out", str(plan)]) == 0
    return data, Profile.load(prof), plan


def _quantized(tmp_path, data, plan, *extra):
    out = tmp_path / "out"
    assert main(["export", *MODEL_ARGS, "--data", str(data), "--plan", str(plan), "--calib", "6", *extra,
                 "--out", str(out), "--quiet"]) == 0
    return quant.load_packed(out / f"{ARCH}.safetensors")


def _reference(data, plan_path, config):
    loaded = load_model(ARCH, model_kwargs=TINY)
    return quant.quantize(loaded.model, Plan.load(plan_path), load_calibration(loaded, str(data), 6)[0], config=config)


def test_the_profile_records_the_preset_and_the_plan_carries_it(v1_plan):
    _, profile, plan_path = v1_plan
    assert QuantConfig.from_record(profile.metadata["quant_config"]) == QuantConfig.preset("v1")
    plan = Plan.load(plan_path)
    assert plan.measured_with == profile.metadata["quant_config"]
    assert json.loads(plan_path.read_text())["measured_with"] == profile.metadata["quant_config"]


def test_export_applies_the_plans_quantizer_unless_told_otherwise(v1_plan, tmp_path, capsys):
    data, _, plan_path = v1_plan
    images = torch.randn(3, 3, TINY["img_size"], TINY["img_size"])
    capsys.readouterr()
    with torch.no_grad():
        implicit = _quantized(tmp_path / "a", data, plan_path)(images)
        assert "warning: the plan" not in capsys.readouterr().err
        assert torch.equal(implicit, _reference(data, plan_path, QuantConfig.preset("v1"))(images))
        explicit = _quantized(tmp_path / "b", data, plan_path, "--preset", "default")(images)
        assert torch.equal(explicit, _reference(data, plan_path, QuantConfig())(images))
        assert not torch.equal(explicit, implicit)
    warning = capsys.readouterr().err
    assert 'measured with preset "v1"; --preset applies preset "default"' in warning
    assert "weight_rounding" in warning and "mixqvit profile --preset NAME" in warning


@given(st.sampled_from(PRESET_NAMES + [None]), st.sampled_from(PRESET_NAMES + [None]))
def test_the_quantizer_chosen_for_a_plan(recorded_name, chosen_name):
    """--preset wins; without it the plan's own; without either the default. A warning iff they differ."""
    recorded = None if recorded_name is None else QuantConfig.preset(recorded_name)
    chosen = None if chosen_name is None else QuantConfig.preset(chosen_name)
    plan = Plan.from_dict({**_TEMPLATE, "measured_with": None if recorded is None else recorded.to_dict()})
    said: list[str] = []
    got = plan_config(chosen, plan, say=said.append)
    assert got == (chosen if chosen is not None else recorded if recorded is not None else QuantConfig())
    assert bool(said) == (chosen is not None and recorded is not None and chosen != recorded)
    assert plan_config(chosen, "W4A4", say=said.append) == (chosen or QuantConfig())


def test_a_plan_recorded_before_a_quantizer_field_existed_reads_with_its_former_meaning():
    record = QuantConfig().to_dict()
    del record["calib_dtype"]  # a profile written before float64 calibration
    plan = Plan.from_dict({**_TEMPLATE, "measured_with": record})
    assert plan_config(None, plan) == QuantConfig(calib_dtype="model")


def test_a_bad_measured_with_is_refused_with_its_field_named(tmp_path, capsys):
    with pytest.raises(PlanError, match="measured_with must be an object"):
        Plan.from_dict({**_TEMPLATE, "measured_with": "repq"})
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({**_TEMPLATE, "measured_with": {"warp_drive": True}}))
    assert main(["quantize", "--model", "fmnist_vit", "--plan", str(path), "--calib", "8"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "measured_with is not a quantizer configuration" in err
    assert "warp_drive" in err and "--preset NAME" in err


_TEMPLATE = {"format_version": 1, "layers": [
    {"name": "fc", "kind": "linear", "params": 10, "macs": 10, "w_bits": 4, "a_bits": 4}]}
