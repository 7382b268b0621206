"""LRP: relevance is conserved as documented, importance is a normalised, finite, stable vector.

Tolerances (measured on timm-initialised tiny ViT / DeiT / Swin, 4 seeds x 6 images, see
docs/lrp.md): the bookkeeping logit = input + biases + softmax-absorbed + residual closes to
< 3e-7 relative with the default epsilon 0 (< 1.5e-4 with epsilon 1e-6, which absorbs); relevance reaching the input plus
what additive parameters absorb is within [0.71, 1.10] of the logit per image, within 0.1 on
average; each block passes on [0.81, 1.21] of the relevance it receives.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from profiling import LRPUnsupportedError, lrp_conservation, lrp_importance
from profiling._lrp_rules import _AttentionRule, _identity_rule, _Recorder

from _profiling_fixtures import BUILDERS, images, labels, tiny_vit


def _blocks(model) -> list[str]:
    return [n for n, _ in model.named_modules()
            if n.split(".")[-2:-1] == ["blocks"] and n.split(".")[-1].isdigit()]


def _zero_bias_like(model) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.split(".")[-1] in ("bias", "pos_embed", "cls_token", "dist_token",
                                       "relative_position_bias_table"):
                p.zero_()


@pytest.mark.parametrize("epsilon, tol", [(0.0, 1e-5), (1e-6, 5e-4)])
def test_bookkeeping_closes(family, epsilon, tol):
    model = BUILDERS[family]()
    for x in images(2):
        r = lrp_conservation(model, x, epsilon=epsilon)
        scale = abs(r.logit) + abs(r.input) + abs(r.biases) + abs(r.softmax)
        assert abs(r.residual) <= tol * scale, r


def test_bookkeeping_exact_without_epsilon_and_biases(family):
    """Without biases and stabiliser, only the softmax rule may lose relevance: exact to float."""
    model = BUILDERS[family]()
    _zero_bias_like(model)
    r = lrp_conservation(model, images(1)[0], epsilon=0.0)
    assert r.biases == 0.0
    assert r.input + r.softmax == pytest.approx(r.logit, rel=1e-5, abs=1e-8)


def test_total_relevance_close_to_logit(family):
    model = BUILDERS[family]()
    blocks = _blocks(model)
    assert blocks
    totals, ratios = [], []
    for x in images(6):
        r = lrp_conservation(model, x, blocks=blocks)
        totals.append((r.input + r.biases) / r.logit)
        ratios += [inp / out for inp, out in r.blocks.values()]
    assert all(0.7 <= t <= 1.3 for t in totals), totals
    assert abs(np.mean(totals) - 1) <= 0.1, totals
    assert all(0.75 <= q <= 1.3 for q in ratios), ratios


def test_forward_values_unchanged_and_model_restored(family):
    model = BUILDERS[family]()
    x = images(4)
    with torch.no_grad():
        before = model(x)
    flags = [p.requires_grad for p in model.parameters()]
    res = lrp_importance(model, x)
    # The explained logits are the model's own (LRP changes only the backward pass).
    picked = before.gather(1, torch.as_tensor(res.targets)[:, None]).squeeze(1).double().numpy()
    np.testing.assert_allclose(res.target_logits, picked, rtol=1e-5, atol=1e-6)
    assert all("forward" not in vars(m) for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_importance_is_normalised_finite_nonnegative(family):
    res = lrp_importance(BUILDERS[family](), images(4))
    assert res.importance.shape == (len(res.names),)
    assert np.all(np.isfinite(res.importance)) and np.all(res.importance >= 0)
    assert res.importance.sum() == pytest.approx(1.0, abs=1e-12)
    assert res.per_image.shape == (4, len(res.names))
    assert any("matmul_av" in n for n in res.names)


def test_importance_is_deterministic_and_batch_independent():
    model, x = tiny_vit(), images(6)
    a = lrp_importance(model, x)
    b = lrp_importance(model, [x[:2], x[2:]])  # same images, other batching
    np.testing.assert_allclose(a.per_image, b.per_image, rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(a.importance, lrp_importance(model, x).importance)


def test_true_target_uses_labels_and_needs_them():
    model, x, y = tiny_vit(), images(4), labels(4)
    res = lrp_importance(model, [(x, y)], target="true")
    np.testing.assert_array_equal(res.targets, y.numpy())
    with pytest.raises(ValueError, match="needs labels"):
        lrp_importance(model, x, target="true")
    with pytest.raises(ValueError, match="expected 'pred'"):
        lrp_importance(model, x, target="best")


def _halved(t: torch.Tensor) -> torch.Tensor:
    """Same value, half the gradient (0.5 t + 0.5 t is exactly t)."""
    return 0.5 * t + 0.5 * t.detach()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), with_bias=st.booleans())
def test_attention_rule_is_the_half_rule_through_softmax(seed, with_bias):
    """The fused attention rule equals autograd through half(q) half(k)^T -> softmax ->
    half(probs) half(v): same gradients, same recorded relevance and softmax absorption; and
    q and k receive equal halves of the relevance of q @ k^T."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bias = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64, requires_grad=True) if with_bias else None
    grad_out = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)

    rec = _Recorder(batch=2, softmax=True)
    out = _AttentionRule.apply(q, k, v, bias, rec, "a")
    out.backward(grad_out)
    got = [t.grad.clone() for t in (q, k, v) + ((bias,) if with_bias else ())]
    for t in (q, k, v, bias):
        if t is not None:
            t.grad = None

    scores = _halved(q) @ _halved(k).transpose(-2, -1)
    scores.retain_grad()
    logits = scores if bias is None else scores + bias
    logits.retain_grad()
    probs = logits.softmax(-1)
    probs.retain_grad()
    ref_out = _halved(probs) @ _halved(v)
    ref_out.backward(grad_out)
    torch.testing.assert_close(out, ref_out.detach())
    want = [t.grad for t in (q, k, v) + ((bias,) if with_bias else ())]
    for a_, b_ in zip(got, want):
        torch.testing.assert_close(a_, b_, rtol=1e-12, atol=1e-12)

    def per_sample(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(2, -1).sum(1)

    torch.testing.assert_close(rec.abs_sum["a.matmul_av"], per_sample((ref_out * grad_out).abs()))
    torch.testing.assert_close(rec.abs_sum["a.matmul_qk"], per_sample((scores * scores.grad).abs()))
    absorbed = per_sample(probs * probs.grad) - per_sample(logits * logits.grad)
    torch.testing.assert_close(rec.softmax_absorbed, absorbed.detach())
    # Half rule: q and k each receive half of the signed relevance of q @ k^T.
    r_q, r_k = float((q.detach() * q.grad).sum()), float((k.detach() * k.grad).sum())
    assert r_q == pytest.approx(r_k, rel=1e-9)
    assert r_q + r_k == pytest.approx(float((scores.detach() * scores.grad).sum()), rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-8, 8, allow_nan=False), min_size=1, max_size=20))
def test_identity_rule_conserves_elementwise(values):
    """GELU's identity rule: x * grad_x == y * grad_y for every element, y = gelu(x) exactly."""
    x = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    y = _identity_rule(torch.nn.functional.gelu, x, slope_at_zero=0.5)
    g = torch.linspace(-1, 1, len(values), dtype=torch.float64)
    y.backward(g)
    assert torch.equal(y.detach(), torch.nn.functional.gelu(x.detach()))
    torch.testing.assert_close(x.detach() * x.grad, y.detach() * g, rtol=1e-9, atol=1e-12)


def test_unsupported_module_is_refused():
    model = tiny_vit()
    model.blocks[0].mlp.act = nn.ReLU()
    with pytest.raises(LRPUnsupportedError, match="ReLU"):
        lrp_importance(model, images(2))
    assert all("forward" not in vars(m) for m in model.modules())


def test_modules_are_recognised_by_class_not_by_name():
    """A module merely *named* like a supported one gets no rule: it is refused, not mis-explained."""
    class GELU(nn.Module):  # same class name as torch's, different function
        def forward(self, x):
            return torch.relu(x)

    model = tiny_vit()
    model.blocks[0].mlp.act = GELU()
    with pytest.raises(LRPUnsupportedError, match="GELU"):
        lrp_importance(model, images(2))

    class Wrapper(nn.Module):  # an unknown container could do anything in its forward
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) ** 2

    model = tiny_vit()
    model.blocks[1].mlp.drop1 = Wrapper(nn.Identity())
    with pytest.raises(LRPUnsupportedError, match="Wrapper"):
        lrp_importance(model, images(2))


def test_conservation_keeps_the_callers_gradients():
    model = tiny_vit()
    model(images(2)).sum().backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    lrp_conservation(model, images(1)[0])
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n].grad, g) for n, g in before.items())
