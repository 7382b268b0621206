"""Opt-in sensitivity approximations (early stopping, anchored bit-widths) and lazy calibration data."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from quant import calibrate, prepare
from torch.utils.data import TensorDataset

from profiling import CalibrationDataError, EarlyStop, as_calib_set, measure_sensitivity, profile_model
from profiling._anchored import anchored_means
from profiling._early_stop import RunningMean, should_stop

from _profiling_fixtures import BUILDERS, images, labels

BITS = (2, 4, 8)


def _prepared(family: str, n: int):
    x = images(n)
    q = prepare(BUILDERS[family]())
    calibrate(q, x)
    return q, x


def test_early_stop_that_never_fires_equals_the_exact_matrix():
    q, x = _prepared("vit", 12)
    exact = measure_sensitivity(q, x, bits=BITS, verbose=False, batch_size=4)
    never = measure_sensitivity(q, x, bits=BITS, verbose=False, batch_size=4,
                                early_stop=EarlyStop(rtol=0, negligible=0, min_images=2))
    # Same images in another (seeded) order: equal up to float32 rounding of other batch compositions.
    np.testing.assert_allclose(never.weight, exact.weight, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(never.act, exact.act, rtol=1e-4, atol=1e-9)
    assert exact.weight_images is None
    has_w = never.weight.any(axis=1)
    assert (never.weight_images[has_w] == 12).all() and (never.act_images == 12).all()


def test_early_stop_is_deterministic_and_records_the_images_used():
    q, x = _prepared("deit", 16)
    rule = EarlyStop(rtol=0.2, negligible=0.3, min_images=4)
    a = measure_sensitivity(q, x, bits=BITS, verbose=False, batch_size=4, early_stop=rule)
    b = measure_sensitivity(q, x, bits=BITS, verbose=False, batch_size=4, early_stop=rule)
    np.testing.assert_array_equal(a.act, b.act)
    np.testing.assert_array_equal(a.act_images, b.act_images)
    used = a.act_images
    assert used.min() >= 4 and used.max() <= 16 and np.all(used % 4 == 0)
    assert used.min() < 16  # a generous rule stops something early (8-bit damage is negligible)
    other_seed = measure_sensitivity(q, x, bits=BITS, verbose=False, batch_size=4,
                                     early_stop=EarlyStop(rtol=0.2, negligible=0.3, min_images=4, seed=1))
    assert not np.array_equal(other_seed.act, a.act)  # another image order, other early estimates


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 10, allow_nan=False), min_size=2, max_size=30), st.floats(0.01, 0.5))
def test_stop_rule_is_the_stated_inequality(values, rtol):
    stat = RunningMean()
    stat.add(torch.tensor(values, dtype=torch.float64))
    arr = np.array(values)
    se = arr.std(ddof=1) / np.sqrt(len(arr))
    rule = EarlyStop(rtol=rtol, negligible=0.0, min_images=2)
    assert stat.mean == pytest.approx(arr.mean(), rel=1e-12, abs=1e-12)
    if abs(se - rtol * arr.mean()) > 1e-9 * (1 + arr.mean()):  # not on the boundary
        assert should_stop(stat, 1.0, rule) == (arr.mean() > 0 and se <= rtol * arr.mean())
    assert not should_stop(stat, 1.0, EarlyStop(rtol=rtol, min_images=len(values) + 1))


def test_bad_rules_and_combinations_are_refused():
    with pytest.raises(ValueError, match="rtol"):
        EarlyStop(rtol=1.5)
    with pytest.raises(ValueError, match="min_images"):
        EarlyStop(min_images=1)
    q, x = _prepared("vit", 4)
    with pytest.raises(ValueError, match="anchor_bits=3"):
        measure_sensitivity(q, x, bits=BITS, verbose=False, anchor_bits=3)
    with pytest.raises(ValueError, match="cannot be combined"):
        measure_sensitivity(q, x, bits=BITS, verbose=False, anchor_bits=2, early_stop=EarlyStop())
    with pytest.raises(TypeError, match="EarlyStop"):
        measure_sensitivity(q, x, bits=BITS, verbose=False, early_stop=0.05)


def test_anchored_matrix_is_exact_at_the_anchor_and_ranks_like_the_exact_one(family):
    from scipy.stats import spearmanr

    q, x = _prepared(family, 6)
    exact = measure_sensitivity(q, x, bits=BITS, verbose=False, batch_size=3)
    approx = measure_sensitivity(q, x, bits=BITS, verbose=False, batch_size=3, anchor_bits=2)
    assert approx.anchor_bits == 2
    np.testing.assert_allclose(approx.act[:, 0], exact.act[:, 0], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(approx.weight[:, 0], exact.weight[:, 0], rtol=1e-6, atol=1e-12)
    outside = [i for i, n in enumerate(exact.names) if not n.startswith(("blocks.", "layers."))]
    np.testing.assert_allclose(approx.act[outside], exact.act[outside], rtol=1e-6, atol=1e-12)
    assert np.all(np.isfinite(approx.act)) and np.all(approx.act >= 0)
    assert not np.allclose(approx.act, exact.act)  # other bit-widths really are estimated
    assert spearmanr(approx.act.ravel(), exact.act.ravel()).statistic > 0.9


def test_anchored_row_scales_by_unit_error_and_refuses_an_unscalable_anchor():
    assert anchored_means("l", "act", 2.0, [4.0, 1.0, 0.0], 0) == [2.0, 0.5, 0.0]
    assert anchored_means("l", "act", 0.0, [0.0, 0.0], 1) == [0.0, 0.0]
    with pytest.raises(RuntimeError, match="lower anchor"):
        anchored_means("l", "act", 0.0, [3.0, 0.0], 1)


def test_a_dataset_is_read_lazily_and_gives_the_same_matrix():
    q, x = _prepared("swin", 10)
    y = labels(10)
    reads = {"n": 0}

    class Counting(TensorDataset):
        def __getitem__(self, i):
            reads["n"] += 1
            return super().__getitem__(i)

    ds = Counting(x, y)
    calib = as_calib_set(ds, 4)
    assert calib.size == 10 and len(calib.images) == 3 and reads["n"] == 4  # only the first batch so far
    assert calib.fingerprint() == as_calib_set((x, y), 3).fingerprint()
    in_memory = measure_sensitivity(q, (x, y), bits=(2, 4), verbose=False, batch_size=4, metric="loss")
    lazy = measure_sensitivity(q, ds, bits=(2, 4), verbose=False, batch_size=4, metric="loss")
    np.testing.assert_array_equal(lazy.act, in_memory.act)
    np.testing.assert_array_equal(lazy.weight, in_memory.weight)
    shuffled = calib.shuffled(0)
    pairs = {(float(a.sum()), int(b)) for xs, ys in zip(shuffled.images, shuffled.labels) for a, b in zip(xs, ys)}
    assert pairs == {(float(a.sum()), int(b)) for a, b in zip(x, y)}  # labels travel with their images


def test_a_dataset_with_bad_items_is_a_clear_error():
    bad = TensorDataset(torch.full((4, 1, 32, 32), float("nan")), labels(4))
    with pytest.raises(CalibrationDataError, match="NaN"):
        as_calib_set(bad, 2)
    with pytest.raises(CalibrationDataError, match="empty"):
        as_calib_set(TensorDataset(torch.zeros(0, 1, 32, 32)), 2)


def test_profile_records_the_rule_and_images_and_resumes_them(tmp_path):
    model, x = BUILDERS["vit"](), images(8)
    rule = EarlyStop(rtol=0.2, negligible=0.3, min_images=4)
    path = tmp_path / "ckpt.json"
    prof = profile_model(model, x, bits=BITS, verbose=False, importance=False, batch_size=4, early_stop=rule,
                         checkpoint=str(path))
    meta = prof.metadata
    assert meta["early_stop"] == {"rtol": 0.2, "negligible": 0.3, "min_images": 4, "seed": 0}
    used = np.array(meta["sensitivity_images"]["act"])
    assert used.shape == (len(prof.layers), len(BITS)) and used.min() >= 4
    assert json.loads(path.read_text())["images"]  # the checkpoint keeps the images used
    resumed = profile_model(model, x, bits=BITS, verbose=False, importance=False, batch_size=4, early_stop=rule,
                            checkpoint=str(path))
    assert resumed.metadata["sensitivity_images"] == meta["sensitivity_images"]
    np.testing.assert_array_equal(resumed.act_sensitivity, prof.act_sensitivity)
    saved = tmp_path / "p.json"
    prof.save(saved)
    assert type(prof).load(saved).metadata["sensitivity_images"] == meta["sensitivity_images"]
    anchored = profile_model(model, x, bits=BITS, verbose=False, importance=False, anchor_bits=2)
    assert anchored.metadata["anchor_bits"] == 2 and "anchor_bits" not in meta


def test_cli_profile_approximations_are_recorded_and_bad_anchor_refused(tmp_path, capsys):
    from mixqvit.cli import main

    common = ["--model", "fmnist_vit", "--calib", "8", "--bits", "2,4,8", "--batch-size", "4", "--threads", "1",
              "--quiet", "--no-importance"]
    out = tmp_path / "p.json"
    assert main(["profile", *common, "--anchor-bits", "2", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["metadata"]["anchor_bits"] == 2
    assert main(["profile", *common, "--early-stop", "--out", str(out)]) == 0
    meta = json.loads(out.read_text())["metadata"]
    assert meta["early_stop"]["rtol"] == 0.05 and len(meta["sensitivity_images"]["act"][0]) == 3
    capsys.readouterr()
    assert main(["profile", *common, "--anchor-bits", "3", "--out", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert "anchor_bits=3" in err and "Traceback" not in err and not (tmp_path / "bad.json").exists()
