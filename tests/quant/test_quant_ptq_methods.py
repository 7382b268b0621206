"""PTQ ingredients beyond round-to-nearest: percentile search, GPTQ, sequential calibration,
the RepQ-ViT preset and planted outlier channels."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import QuantConfig, calibrate, find_post_ln_groups, prepare, quant_sites, quantize
from quant.outliers import plant_outliers
from quant.gptq import HessianAccumulator, gptq_quantize
from quant.quantizers import WeightQuantizer
from quant.reconstruct import reconstruct
from quant.ranges import SEARCH_PERCENTILES, estimate_range, fake_quantize, qparams_from_range
from quant.settle import settle_constant_inputs

from quant_helpers import build_tiny, make_images


def _sq_err(row: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool) -> float:
    s, z, qmin, qmax = qparams_from_range(lo, hi, bits, symmetric)
    return float((fake_quantize(row, s, z, qmin, qmax) - row).double().pow(2).sum())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.sampled_from([2, 3, 4, 6, 8]), symmetric=st.booleans(),
       heavy=st.floats(1.0, 50.0))
def test_percentile_search_returns_its_l2_minimiser(seed, bits, symmetric, heavy):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(3, 4000, generator=g) * torch.tensor([[1.0], [0.1], [3.0]])
    rows[:, :5] *= heavy  # a few outliers make the clipping candidates differ
    lo, hi = estimate_range(rows, "search", bits, symmetric)
    for c in range(rows.shape[0]):
        chosen = _sq_err(rows[c], lo[c], hi[c], bits, symmetric)
        errs = []
        for p in SEARCH_PERCENTILES:  # the candidates: quantiles interpolated in float64, rounded to float32
            wide = rows[c].double()
            qlo, qhi = torch.quantile(wide, 1 - p / 100).float(), torch.quantile(wide, p / 100).float()
            errs.append(_sq_err(rows[c], qlo, qhi, bits, symmetric))
        assert chosen <= min(errs) * (1 + 1e-6) + 1e-9
        assert any(abs(chosen - e) <= 1e-6 * max(e, 1e-9) for e in errs)  # it is one of the candidates


def _correlated_inputs(seed: int, n: int, cols: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(cols // 4, cols, generator=g)
    return torch.randn(n, cols // 4, generator=g) @ basis + 0.1 * torch.randn(n, cols, generator=g)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.sampled_from([2, 3, 4, 6]), symmetric=st.booleans(),
       per_channel=st.booleans(), act_order=st.booleans())
def test_gptq_output_error_is_at_most_round_to_nearest(seed, bits, symmetric, per_channel, act_order):
    x = _correlated_inputs(seed, 512, 64) * (1 + 4 * torch.rand(64, generator=torch.Generator().manual_seed(seed)))
    w = torch.randn(24, 64, generator=torch.Generator().manual_seed(seed + 1))
    wq = WeightQuantizer(method="mse", per_channel=per_channel, symmetric=symmetric, gptq_act_order=act_order)
    rtn = wq.rounded(w, bits)
    acc = HessianAccumulator()
    acc.add(x)
    wq.set_hessian(acc.hessian())
    gq = wq.rounded(w, bits)
    err_rtn = float((x @ (w - rtn).T).pow(2).sum())
    err_gptq = float((x @ (w - gq).T).pow(2).sum())
    assert err_gptq <= err_rtn * 1.0001
    # on the weight quantizer's grid: integer codes within [qmin, qmax]
    s, z, qmin, qmax = wq.qparams(w, bits)
    codes = gq / (s[:, None] if s.dim() else s) + (z[:, None] if z.dim() else z)
    assert torch.allclose(codes, codes.round(), atol=1e-3)
    assert float(codes.min()) >= qmin - 1e-3 and float(codes.max()) <= qmax + 1e-3


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), offset=st.floats(1.0, 300.0), spread=st.floats(1e-3, 1.0),
       batches=st.integers(1, 3))
def test_folded_hessian_matches_float64_and_stays_psd(seed, offset, spread, batches):
    """A LayerNorm output channel far from zero with a narrow range, folded to (x - mid) / r:
    the second moment must not be lost to float32 cancellation (it was: min eigenvalue -32.7
    with one calibration image)."""
    g = torch.Generator().manual_seed(seed)
    d = 16
    mid = (torch.rand(d, generator=g) - 0.5) * 2 * offset
    r = spread * (0.5 + torch.rand(d, generator=g))
    x = mid + r * torch.randn(batches * 50, d, generator=g) @ torch.randn(d, d, generator=g).div(d ** 0.5)
    acc = HessianAccumulator()
    for chunk in x.chunk(batches):
        acc.add(chunk)
    acc.fold(mid, r)
    y = (x.double() - mid.double()) / r.double()
    reference = y.T @ y / len(y)
    H = acc.hessian()
    assert torch.allclose(H, reference, rtol=1e-3, atol=1e-3 * float(reference.diagonal().max()))
    assert float(torch.linalg.eigvalsh(H).min()) >= -1e-3 * float(reference.diagonal().max())


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.sampled_from([2, 3, 4]))
def test_gptq_act_order_does_not_depend_on_the_storage_order_of_columns(seed, bits):
    """Act-order rounds by decreasing Hessian diagonal, so permuting the input columns of the
    weight and the Hessian together permutes the result and changes nothing else; with the
    columns already stored in that order it is plain GPTQ."""
    g = torch.Generator().manual_seed(seed)
    x = _correlated_inputs(seed, 256, 32) * (1 + 4 * torch.rand(32, generator=g))
    w = torch.randn(12, 32, generator=g)
    H = x.T @ x / len(x)
    qp = WeightQuantizer(method="minmax").qparams(w, bits)
    perm = torch.randperm(32, generator=g)
    out = gptq_quantize(w, H, qp, act_order=True)
    permuted = gptq_quantize(w[:, perm], H[perm][:, perm], qp, act_order=True)
    assert torch.equal(permuted, out[:, perm])
    sorted_cols = torch.argsort(torch.diagonal(H), descending=True, stable=True)
    natural = gptq_quantize(w[:, sorted_cols], H[sorted_cols][:, sorted_cols], qp)
    assert torch.equal(natural, out[:, sorted_cols])


def test_gptq_with_diagonal_hessian_is_round_to_nearest():
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    wq = WeightQuantizer(method="minmax")
    qp = wq.qparams(w, 4)
    out = gptq_quantize(w, torch.diag(torch.rand(16) + 0.5), qp, damp=0.0)
    # float32 grid values computed two ways; a rounding flip would differ by a whole step (~0.1)
    assert torch.allclose(out, wq.rounded(w, 4), rtol=1e-5, atol=1e-5)


def test_gptq_refuses_a_hessian_of_the_wrong_size():
    wq = WeightQuantizer()
    with pytest.raises(ValueError, match="Hessian"):
        gptq_quantize(torch.randn(4, 8), torch.eye(5), wq.qparams(torch.randn(4, 8), 4))


@pytest.mark.parametrize("overrides", [dict(weight_rounding="gptq"), dict(sequential=True),
                                       dict(weight_rounding="gptq", sequential=True)])
def test_reconstruction_options_lower_the_logit_error(tiny_kind, calib_images, overrides):
    """On the calibration data GPTQ's per-layer objective is what it minimises: the logits of
    the quantized model move closer to the float ones than with round-to-nearest (W3A8), and
    the result is deterministic."""
    model = build_tiny(tiny_kind)
    with torch.no_grad():
        ref = model(calib_images)
        base = quantize(model, "W3A8", calib_images, config=QuantConfig(edge_bits=None, weight_rounding="nearest"))(calib_images)
        cfg = QuantConfig(edge_bits=None, **{"weight_rounding": "nearest", **overrides})
        out = quantize(model, "W3A8", calib_images, config=cfg)(calib_images)
        again = quantize(model, "W3A8", calib_images, config=cfg)(calib_images)
    assert torch.equal(out, again)
    if "weight_rounding" in overrides:
        assert (out - ref).norm() < (base - ref).norm()


def _fit_error(qmodel: torch.nn.Module, model: torch.nn.Module, images: torch.Tensor) -> float:
    """The reconstruction's objective on ``images``: feature MSE over the float variance + logit KL."""
    with torch.no_grad():
        qf, tf = qmodel.forward_features(images), model.forward_features(images)
        ql, tl = qmodel.forward_head(qf), model.forward_head(tf)
        kl = torch.nn.functional.kl_div(ql.log_softmax(-1), tl.log_softmax(-1), log_target=True, reduction="batchmean")
        return float((qf - tf).pow(2).mean() / tf.var() + kl)


@pytest.mark.parametrize("drop", [0.0, 0.5])
def test_reconstruction_lowers_its_objective_deterministically(tiny_kind, calib_images, drop):
    model = build_tiny(tiny_kind)
    cfg = QuantConfig(edge_bits=None)
    runs = []
    for _ in range(2):
        qmodel = quantize(model, "W3A3", calib_images, config=cfg)
        before = _fit_error(qmodel, model, calib_images)
        reconstruct(qmodel, model, calib_images, steps=25, batch_size=16, seed=0, drop=drop)
        runs.append(qmodel)
    after = _fit_error(runs[0], model, calib_images)
    assert after < before
    assert all(p.requires_grad for p in runs[1].parameters()), "the caller's requires_grad flags come back"
    with torch.no_grad():
        assert torch.equal(runs[0](calib_images), runs[1](calib_images)), "deterministic for a seed"
    with pytest.raises(ValueError, match="drop"):
        reconstruct(runs[0], model, calib_images, steps=1, drop=1.0)


def test_sequential_calibration_sees_quantized_inputs(calib_images):
    model = build_tiny("vit")
    q_seq = quantize(model, "W3A3", calib_images, config=QuantConfig(edge_bits=None, sequential=True))  # GPTQ too
    q_par = quantize(model, "W3A3", calib_images, config=QuantConfig(edge_bits=None, sequential=False))
    name = "blocks.1.mlp.fc2"  # downstream of quantized layers; not a folded post-LN input
    seq_stats = quant_sites(q_seq)[name].act_quant.observer
    par_stats = quant_sites(q_par)[name].act_quant.observer
    assert seq_stats.n_seen == par_stats.n_seen
    assert not torch.equal(seq_stats.max_val, par_stats.max_val)


def test_gptq_profile_calibration_keeps_bits_free(calib_images, test_images):
    """Calibrated once with every site float (as profiling does), GPTQ rounds at whatever bits
    are set afterwards, identically to quantize() at those bits."""
    model = build_tiny("deit")
    cfg = QuantConfig(edge_bits=None, weight_rounding="gptq", sequential=False)
    qmodel = calibrate(prepare(model, cfg), calib_images)
    for site in quant_sites(qmodel).values():
        site.set_bits(4, 8)
    settle_constant_inputs(qmodel, calib_images.shape[1:])  # quantize ends with it too
    direct = quantize(model, "W4A8", calib_images, config=cfg)
    with torch.no_grad():
        assert torch.allclose(qmodel(test_images), direct(test_images), atol=1e-5)


def test_qat_start_keeps_the_gptq_model(calib_images, test_images):
    from quant import make_quantizers_learnable

    model = build_tiny("vit")
    qmodel = quantize(model, "W3A8", calib_images, config=QuantConfig(edge_bits=None, weight_rounding="gptq"))
    with torch.no_grad():
        before = qmodel(test_images)
    make_quantizers_learnable(qmodel)
    assert all(s.weight_quant.hessian is None for s in quant_sites(qmodel).values() if hasattr(s, "weight_quant"))
    with torch.no_grad():
        assert torch.allclose(qmodel(test_images), before, atol=1e-5)


def test_repq_preset_and_unknown_presets():
    cfg = QuantConfig.preset("repq")
    assert (cfg.post_ln, cfg.act_method, cfg.softmax, cfg.sequential) == ("channel", "search", "logsqrt2", True)
    assert QuantConfig.preset("repq", seed=3).seed == 3
    assert QuantConfig.preset("default") == QuantConfig()
    with pytest.raises(ValueError, match="preset"):
        QuantConfig.preset("nope")
    with pytest.raises(ValueError, match="weight_rounding"):
        QuantConfig(weight_rounding="adaround")


def test_plant_outliers_preserves_the_function(tiny_kind, test_images):
    model = build_tiny(tiny_kind)
    planted = plant_outliers(model, channels=2, factor=30.0, seed=1)
    with torch.no_grad():
        ref, out = model(test_images), planted(test_images)
    assert float((out - ref).abs().max() / ref.abs().max()) <= 1e-5
    norm = find_post_ln_groups(model)[0].norm
    ratio = planted.get_submodule(norm).weight / model.get_submodule(norm).weight
    assert int((ratio - 30.0).abs().lt(1e-3).sum()) == 2  # two planted channels, the rest unchanged
    assert int((ratio - 1.0).abs().lt(1e-6).sum()) == ratio.numel() - 2


def test_plant_outliers_rejects_bad_arguments():
    model = build_tiny("vit")
    with pytest.raises(ValueError, match="channels"):
        plant_outliers(model, channels=0)
    with pytest.raises(ValueError, match="only"):
        plant_outliers(model, channels=10_000)
    with pytest.raises(ValueError, match="factor"):
        plant_outliers(model, factor=0.0)


@pytest.mark.parametrize("cap", [10_000, 100])
def test_observer_fold_reexpresses_its_statistics(cap):
    from quant.act_quantizers import ActObserver

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, 5, generator=g) * torch.tensor([1.0, 5.0, 0.2, 3.0, 1.0])
    mid, r = torch.randn(5, generator=g), torch.rand(5, generator=g) + 0.5
    plain, folded = ActObserver(cap, seed=3, channel_stats=True), ActObserver(cap, seed=3, channel_stats=True)
    for obs in (plain, folded):
        obs.reset()
        obs.update(x[:2])
        obs.update(x[2:])
    folded.fold(mid, r)
    ch = plain.sample_channel
    assert torch.allclose(folded.sample, (plain.sample - mid[ch]) / r[ch])
    y = (x - mid) / r
    assert torch.allclose(folded.ch_min, y.reshape(-1, 5).amin(0)) and torch.allclose(folded.ch_max, y.reshape(-1, 5).amax(0))
    assert float(folded.min_val) == pytest.approx(float(y.min())) and float(folded.max_val) == pytest.approx(float(y.max()))
    if cap > x.numel():  # everything kept: the sample is the folded tensor itself
        assert torch.allclose(folded.sample, y.reshape(-1))


@pytest.mark.parametrize("post_ln_range", ["search", "channel_search"])
def test_post_ln_range_modes_keep_the_float_function_and_quantize(tiny_kind, calib_images, test_images, post_ln_range):
    model = build_tiny(tiny_kind)
    cfg = QuantConfig(post_ln_range=post_ln_range, act_method="search")
    with torch.no_grad():
        ref = model(test_images)
        folded = calibrate(prepare(model, cfg), calib_images)(test_images)
        q8 = quantize(model, "W8A8", calib_images, config=cfg)(test_images)
    assert float((folded - ref).abs().max() / ref.abs().max()) <= 1e-5
    assert 0 < float((q8 - ref).norm() / ref.norm()) < 0.2


def test_reconstruct_fits_the_scales_to_the_float_model(calib_images):
    from quant.reconstruct import reconstruct

    model = build_tiny("vit")
    qmodel = quantize(model, "W3A3", calib_images, config=QuantConfig(edge_bits=None, weight_rounding="nearest"))
    weights = {n: p.detach().clone() for n, p in qmodel.named_parameters()}
    with torch.no_grad():
        ref = model(calib_images)
        before = float((qmodel(calib_images) - ref).norm())
    reconstruct(qmodel, model, calib_images, steps=30, lr=3e-3, batch_size=16)
    with torch.no_grad():
        after = float((qmodel(calib_images) - ref).norm())
    assert after < before
    for n, p in qmodel.named_parameters():  # weights, LayerNorms and biases stay as calibrated
        if n in weights:
            assert torch.equal(p, weights[n]) or n.endswith(("scale", "zero_point")), n
        assert p.requires_grad
    with pytest.raises(ValueError, match="steps"):
        reconstruct(qmodel, model, calib_images, steps=0)


@pytest.mark.parametrize("n_images", [1, 2])
def test_gptq_default_survives_a_tiny_calibration_set(n_images):
    """One image gives a singular Hessian (Cholesky failed there before the damping escalation);
    the default still quantizes, and every weight stays on its grid's level count."""
    model = build_tiny("vit")
    images = make_images(n_images, seed=3)
    qmodel = quantize(model, "W4A4", images, config=QuantConfig(weight_rounding="gptq", edge_bits=None))
    out = qmodel(make_images(4, seed=4))
    assert torch.isfinite(out).all()
    weights = [site.quantized_weight() for site in quant_sites(qmodel).values() if hasattr(site, "quantized_weight")]
    weights = [w for w in weights if w is not None]
    assert weights
    for weight in weights:
        assert max(len(torch.unique(row)) for row in weight.flatten(1)) <= 2 ** 4
