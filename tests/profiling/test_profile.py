"""profile_model: a complete, deterministic allocator.Profile that round-trips and solves."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from allocator import Profile, solve

from profiling import CalibrationDataError, profile_model
from profiling._data import as_calib_set

from _profiling_fixtures import BUILDERS, images, labels, tiny_vit

BITS = (2, 4, 8)


def test_profile_complete_roundtrips_and_solves(family, tmp_path):
    model = BUILDERS[family]()
    prof = profile_model(model, images(4), bits=BITS, verbose=False)
    L = len(prof.layers)
    assert prof.bits == BITS and prof.importance.shape == (L,)
    assert prof.weight_sensitivity.shape == prof.act_sensitivity.shape == (L, len(BITS))
    pinned = [layer.name for layer in prof.layers if layer.fixed_bits == 8]
    assert pinned[0] == "patch_embed.proj" and all("head" in n for n in pinned[1:])
    assert len(pinned) == (3 if family == "deit" else 2)
    md = prof.metadata
    assert md["calibration_size"] == 4 and md["input_shape"] == [1, 32, 32] and md["seed"] == 0
    assert md["model_class"].endswith(type(model).__name__) and "library_version" in md
    path = tmp_path / "p.json"
    prof.save(path)
    back = Profile.load(path)
    assert back.to_dict() == prof.to_dict()
    plan = solve(back, budget="W4A8")
    assert set(plan.w_bits) == {layer.name for layer in prof.layers}
    assert all(plan.w_bits[n] == 8 for n in pinned)


def test_profile_is_deterministic_and_leaves_model_alone():
    model = tiny_vit()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    a = profile_model(model, images(4), bits=(2, 8), verbose=False)
    b = profile_model(model, images(4), bits=(2, 8), verbose=False)
    assert model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    da, db = a.to_dict(), b.to_dict()
    da["metadata"].pop("timings_s"), db["metadata"].pop("timings_s")
    assert da == db


def test_profile_options():
    prof = profile_model(tiny_vit(), [(images(4), labels(4))], bits=(3, 8), importance=False,
                         activation=False, pin_first_last=None, metric="loss", verbose=False)
    assert prof.importance is None and prof.act_sensitivity is None
    assert prof.metric == "loss" and np.all(prof.weight_sensitivity >= 0)
    assert all(layer.fixed_bits is None for layer in prof.layers)
    with pytest.raises(ValueError, match="pin_first_last"):
        profile_model(tiny_vit(), images(2), pin_first_last=0, verbose=False)


def test_calibration_data_forms_and_errors():
    x, y = images(5), labels(5)
    assert as_calib_set(x).size == 5 and as_calib_set(x).labels is None
    pairs = as_calib_set([(x[:2], y[:2]), (x[2:], y[2:])])
    assert pairs.size == 5 and torch.equal(torch.cat(pairs.labels), y)
    assert as_calib_set([(x, y)]).fingerprint() != as_calib_set(x).fingerprint()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=2)
    assert as_calib_set(loader).size == 5
    with pytest.raises(CalibrationDataError, match="empty"):
        as_calib_set([])
    with pytest.raises(CalibrationDataError, match=r"\(N, C, H, W\)"):
        as_calib_set(torch.zeros(3, 32, 32))
    with pytest.raises(CalibrationDataError, match="share one shape"):
        as_calib_set([x, torch.zeros(1, 1, 16, 16)])


def test_profile_leaves_the_callers_rng_alone():
    model = tiny_vit()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    profile_model(model, images(2), bits=(8,), weight=False, verbose=False)
    assert torch.equal(torch.rand(3), expected), "profile_model reseeded the global generator"


def _tables(prof) -> dict:
    return {"importance": prof.importance, "weight": prof.weight_sensitivity, "act": prof.act_sensitivity}


def test_profile_agrees_across_batch_sizes_and_bounds_the_batch():
    """One big tensor is cut into `batch_size` batches (the network never sees more images at
    once), and the profile does not depend on the cut beyond float rounding: importance within
    1e-5 relative, damages within 1e-4 relative (+1e-5 of the table's largest value for near-zero damages)."""
    model, x = tiny_vit(), images(7)
    seen: list[int] = []
    handle = model.patch_embed.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
    try:
        small = profile_model(model, x, bits=(2, 8), batch_size=3, verbose=False)
    finally:
        handle.remove()
    # LRP and every sensitivity pass see at most 3 images; the one larger pass is quant.calibrate's
    # no-grad statistics pass, whose own fixed batching keeps the statistics independent of batch_size
    assert len(seen) > 10 and [n for n in seen if n > 3] == [7]
    whole = profile_model(model, x, bits=(2, 8), batch_size=None, verbose=False)
    other = profile_model(model, [x[:4], x[4:]], bits=(2, 8), batch_size=2, verbose=False)
    for prof in (whole, other):
        for key, table in _tables(prof).items():
            ref = _tables(small)[key]
            # float32 network: the absolute floor scales with the table (near-zero damages)
            np.testing.assert_allclose(table, ref, rtol=1e-4 if key != "importance" else 1e-5,
                                       atol=1e-5 * float(np.abs(ref).max()), err_msg=key)
    assert small.metadata["batch_size"] == 3 and small.metadata["calibration_size"] == 7
    with pytest.raises(ValueError, match="batch_size"):
        profile_model(model, x, batch_size=0, verbose=False)


def test_caller_metadata_is_recorded():
    prof = profile_model(tiny_vit(), images(2), bits=(8,), weight=False, verbose=False,
                         metadata={"weights": "random (no --weights, no --pretrained)"})
    assert prof.metadata["weights"].startswith("random")
