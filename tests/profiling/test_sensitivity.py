"""Sensitivity: cached suffix runs equal full runs, rows behave, checkpoints resume exactly."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from quant import calibrate, prepare, quant_sites

import profiling._sweep as sweep_module
from profiling import CalibrationDataError, CheckpointMismatchError, measure_sensitivity

from _profiling_fixtures import BUILDERS, images, labels

BITS = (2, 4, 8)


def _prepared(family: str = "vit", n: int = 8):
    x = images(n)
    q = prepare(BUILDERS[family]())
    calibrate(q, x)
    return q, x


def test_cached_suffix_equals_full_reevaluation(family):
    q, x = _prepared(family, 6)
    batches = [x[:4], x[4:]]  # several batches exercise the per-batch caches
    cached = measure_sensitivity(q, batches, bits=BITS, verbose=False)
    naive = measure_sensitivity(q, batches, bits=BITS, verbose=False, cache=False)
    assert cached.cached and not naive.cached
    np.testing.assert_allclose(cached.weight, naive.weight, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(cached.act, naive.act, rtol=1e-6, atol=1e-12)
    assert np.abs(cached.act).max() > 0


def test_rows_finite_matmul_weight_zero_and_bits_restored():
    q, x = _prepared("swin")
    sites = quant_sites(q)
    sites["head.fc"].set_bits(6, 7)
    res = measure_sensitivity(q, x, bits=BITS, verbose=False)
    assert sites["head.fc"].w_bits == 6 and sites["head.fc"].a_bits == 7
    assert all(s.w_bits is None for n, s in sites.items() if n != "head.fc")
    assert np.all(np.isfinite(res.weight)) and np.all(np.isfinite(res.act))
    assert np.all(res.weight >= -1e-12) and np.all(res.act >= -1e-12)  # KL is non-negative
    for i, name in enumerate(res.names):
        if "matmul" in name:
            assert np.all(res.weight[i] == 0)
        else:
            assert res.weight[i, 0] > 0


def test_weight_damage_falls_with_bits():
    """Per layer the 2-bit damage exceeds the 8-bit one, and the layer average falls with bits.

    Strict per-layer monotonicity is not guaranteed (the 3- and 4-bit grids are not nested, so
    a particular weight can round worse at 4 bits), but the expected quantization error falls
    about 4x per bit, so the average over layers must decrease; it does by orders of magnitude.
    """
    q, x = _prepared("vit")
    bits = (2, 3, 4, 5, 6, 8)
    res = measure_sensitivity(q, x, bits=bits, activation=False, verbose=False)
    weighted = res.weight[[i for i, n in enumerate(res.names) if "matmul" not in n]]
    assert np.all(weighted[:, 0] > 10 * weighted[:, -1])
    mean = weighted.mean(axis=0)
    assert np.all(np.diff(mean) < 0), mean


def test_baseline_bits_and_other_metrics():
    q, x = _prepared("vit")
    y = labels(8)
    res = measure_sensitivity(q, [(x, y)], bits=(2, 8), metric="loss", baseline_bits=8, verbose=False)
    assert res.baseline_bits == 8 and np.all(np.isfinite(res.weight))
    # At the baseline's own bit-width nothing changes: damage exactly 0.
    assert np.all(res.weight[:, 1] == 0) and np.all(res.act[:, 1] == 0)
    top1 = measure_sensitivity(q, [(x, y)], bits=(2,), metric="top1", verbose=False)
    assert np.all(np.abs(top1.act) <= 1)
    with pytest.raises(CalibrationDataError, match="needs labels"):
        measure_sensitivity(q, x, bits=(2,), metric="loss", verbose=False)
    with pytest.raises(ValueError, match="metric"):
        measure_sensitivity(q, x, bits=(2,), metric="mse", verbose=False)


def test_resume_from_partial_checkpoint_is_identical(tmp_path, monkeypatch):
    q, x = _prepared("deit", 4)
    path = tmp_path / "sens.json"
    full = measure_sensitivity(q, x, bits=BITS, verbose=False)

    calls = {"n": 0}
    real = sweep_module.per_sample_damage

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 20:
            raise KeyboardInterrupt("simulated interruption")
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "per_sample_damage", flaky)
    with pytest.raises(KeyboardInterrupt):
        measure_sensitivity(q, x, bits=BITS, verbose=False, checkpoint=str(path))
    monkeypatch.setattr(sweep_module, "per_sample_damage", real)

    partial = json.loads(path.read_text())  # a complete, valid file despite the interruption
    assert 0 < len(partial["done"]) < len(full.names)
    assert [p.name for p in tmp_path.iterdir()] == ["sens.json"]  # no temporary files left
    resumed = measure_sensitivity(q, x, bits=BITS, verbose=False, checkpoint=str(path))
    assert resumed.pairs < full.pairs  # finished layers were not measured again
    np.testing.assert_array_equal(resumed.weight, full.weight)
    np.testing.assert_array_equal(resumed.act, full.act)
    again = measure_sensitivity(q, x, bits=BITS, verbose=False, checkpoint=str(path))
    assert again.pairs == 0
    np.testing.assert_array_equal(again.act, full.act)


def test_mismatched_checkpoint_is_refused(tmp_path):
    q, x = _prepared("vit", 4)
    path = tmp_path / "sens.json"
    measure_sensitivity(q, x, bits=(2, 4), verbose=False, checkpoint=str(path), activation=False)
    before = path.read_text()
    with pytest.raises(CheckpointMismatchError, match="bits"):
        measure_sensitivity(q, x, bits=(2, 8), verbose=False, checkpoint=str(path), activation=False)
    with pytest.raises(CheckpointMismatchError, match="data_hash"):
        measure_sensitivity(q, x + 1, bits=(2, 4), verbose=False, checkpoint=str(path), activation=False)
    other, _ = _prepared("vit", 4)
    with torch.no_grad():
        other.head.weight.mul_(2)
    with pytest.raises(CheckpointMismatchError, match="model_hash"):
        measure_sensitivity(other, x, bits=(2, 4), verbose=False, checkpoint=str(path), activation=False)
    assert path.read_text() == before  # refused runs never touch the file
    path.write_text("{not json")
    with pytest.raises(CheckpointMismatchError, match="not readable"):
        measure_sensitivity(q, x, bits=(2, 4), verbose=False, checkpoint=str(path))


def test_subset_of_sites():
    q, x = _prepared("vit", 4)
    res = measure_sensitivity(q, x, bits=(2,), verbose=False, sites=["blocks.1.mlp.fc1"])
    i = res.names.index("blocks.1.mlp.fc1")
    assert res.weight[i, 0] > 0 and np.count_nonzero(res.weight) == 1
    with pytest.raises(ValueError, match="not quantizable sites"):
        measure_sensitivity(q, x, bits=(2,), verbose=False, sites=["nope"])
