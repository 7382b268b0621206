"""A recorded QuantConfig reads back as the quantizer that was used, even from before a field existed."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st
from quant import QuantConfig
from quant.config import (CALIB_DTYPES, POST_LN_RANGES, PRESETS, RANGE_METHODS, SOFTMAX_QUANTIZERS,
                          VALUES_BEFORE_FIELD, WEIGHT_ROUNDINGS)

configs = st.builds(
    QuantConfig,
    post_ln_range=st.sampled_from(POST_LN_RANGES), weight_method=st.sampled_from(RANGE_METHODS),
    act_method=st.sampled_from(RANGE_METHODS), softmax=st.sampled_from(SOFTMAX_QUANTIZERS),
    weight_rounding=st.sampled_from(WEIGHT_ROUNDINGS), gptq_damp=st.floats(0.0, 1.0),
    gptq_act_order=st.booleans(), sequential=st.booleans(), calib_dtype=st.sampled_from(CALIB_DTYPES),
)


@given(configs)
def test_a_complete_record_reads_back_unchanged(config):
    assert QuantConfig.from_record(config.to_dict()) == config


@given(configs, st.sets(st.sampled_from(sorted(VALUES_BEFORE_FIELD)), min_size=1))
def test_a_field_missing_from_the_record_has_its_former_meaning(config, missing):
    record = {k: v for k, v in config.to_dict().items() if k not in missing}
    read = QuantConfig.from_record(record)
    for field in missing:
        assert getattr(read, field) == VALUES_BEFORE_FIELD[field]
    for field in set(record):
        assert getattr(read, field) == getattr(config, field)


def test_a_default_profile_recorded_before_float64_calibration_is_not_todays_default():
    record = QuantConfig().to_dict()
    del record["calib_dtype"]
    assert QuantConfig.from_dict(record) == QuantConfig()  # what reading it as today's would claim
    assert QuantConfig.from_record(record) == QuantConfig(calib_dtype="model")


def test_the_first_recorded_configuration_is_preset_v1():
    """A record from before every added field, with v1's values, is the v1 preset (the former default)."""
    record = {k: v for k, v in QuantConfig.preset("v1").to_dict().items() if k not in VALUES_BEFORE_FIELD}
    assert QuantConfig.from_record(record) == QuantConfig.preset("v1")
    assert set(PRESETS["v1"]) >= {"calib_dtype", "weight_rounding", "post_ln_range"}


def test_an_unknown_field_is_refused():
    with pytest.raises(ValueError, match="unknown fields"):
        QuantConfig.from_record({"no_such_field": 1})


def test_quantize_applies_the_quantizer_a_plan_was_optimised_for():
    """``quantize(model, plan, data)`` without a config uses ``plan.measured_with``; a config given wins."""
    import torch

    import quant
    from export_helpers import MixedPlan
    from quant_helpers import build_tiny, make_images

    model, calib, x = build_tiny("vit"), make_images(8), make_images(3, seed=9)
    plan = MixedPlan(quant.find_quantizable_layers(model))
    plan.measured_with = QuantConfig.preset("v1").to_dict()
    assert quant.measured_config(plan) == QuantConfig.preset("v1")
    with torch.no_grad():
        implicit = quant.quantize(model, plan, calib)(x)
        assert torch.equal(implicit, quant.quantize(model, plan, calib, config=QuantConfig.preset("v1"))(x))
        default = quant.quantize(model, plan, calib, config=QuantConfig())(x)
        assert not torch.equal(implicit, default)
        plan.measured_with = None
        assert torch.equal(quant.quantize(model, plan, calib)(x), default)
    plan.measured_with = {"warp_drive": True}
    with pytest.raises(ValueError, match="measured_with is not a quantizer configuration.*warp_drive"):
        quant.quantize(model, plan, calib)
