"""LayerNorm folding of channel-wise post-LN quantization is exact in float."""
import pytest
import torch

from quant import QuantConfig, calibrate, find_post_ln_groups, prepare
from quant.fold import channel_transform, fold_layernorm
from quant.quantizers import UniformQuantizer
from quant.ranges import qparams_from_range

from quant_helpers import build_tiny, make_images

FOLD_TOL = 1e-5  # max |out_folded - out| / max |out|, float32


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("mode", ["clipped", "channel"])
def test_calibrated_fold_is_exact_before_quantizing(tiny_model, calib_images, test_images, mode):
    with torch.no_grad():
        ref = tiny_model(test_images)
        qmodel = calibrate(prepare(tiny_model, QuantConfig(post_ln=mode, clip_percentile=80.0)), calib_images)
        out = qmodel(test_images)
    assert _rel(out, ref) <= FOLD_TOL
    # the fold really happened: LayerNorm weights changed, and post-LN inputs have a fixed range
    norm = find_post_ln_groups(qmodel)[0].norm
    assert not torch.equal(qmodel.get_submodule(norm).weight, tiny_model.get_submodule(norm).weight)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fold_with_extreme_random_ratios_is_exact(tiny_kind, seed):
    model = build_tiny(tiny_kind, seed)
    x = make_images(8, seed=seed + 10)
    with torch.no_grad():
        for p in model.parameters():  # non-trivial LayerNorm affine
            p.add_(0.05 * torch.randn_like(p))
        ref = model(x)
        g = torch.Generator().manual_seed(seed)
        for group in find_post_ln_groups(model):
            norm = model.get_submodule(group.norm)
            c = norm.weight.numel()
            lo = -torch.rand(c, generator=g) * 3
            hi = torch.rand(c, generator=g) * 3
            hi[0] = 60.0  # one outlier channel
            fold_layernorm(norm, [model.get_submodule(n) for n in group.consumers], channel_transform(lo, hi, None))
        assert _rel(model(x), ref) <= FOLD_TOL


def test_folded_per_tensor_equals_per_channel_quantization():
    """The reason for folding: per-tensor quantization of y' is per-channel quantization of y."""
    g = torch.Generator().manual_seed(0)
    y = torch.randn(200, 6, generator=g) * torch.tensor([1.0, 2.0, 0.5, 8.0, 1.0, 3.0]) + torch.arange(6.0)
    lo, hi = y.amin(0), y.amax(0)
    t = channel_transform(lo, hi, None)
    y_folded = ((y.double() - t.mid) / t.r).float()
    q = UniformQuantizer()
    q.set_qparams(qparams_from_range(torch.tensor(-t.ref_width / 2), torch.tensor(t.ref_width / 2), 4, False))
    per_tensor_back = (q(y_folded).double() * t.r + t.mid).float()
    # per-channel 4-bit grid: step r_c * ref / 15 ; every value is within half a step
    step = (t.r * t.ref_width / 15).float()
    assert bool(((per_tensor_back - y).abs() <= step / 2 * (1 + 1e-4) + 1e-6).all())
    assert all(len(torch.unique(per_tensor_back[:, c])) <= 16 for c in range(6))


def test_clipping_caps_outlier_channels():
    lo = torch.full((100,), -1.0)
    hi = torch.ones(100)
    hi[:3] = 50.0
    clipped = channel_transform(lo, hi, 95.0)
    plain = channel_transform(lo, hi, None)
    assert float(clipped.r.max()) < 1.0 + 1e-6 < float(plain.r.max())
    assert float(plain.r.max() / plain.r.min()) == pytest.approx(51.0 / 2.0)


def test_swin_with_padded_windows_stays_exact():
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer(img_size=28, patch_size=2, in_chans=1, num_classes=10, window_size=4,
                            embed_dim=16, depths=(1, 1), num_heads=(1, 2)).eval()
    x = make_images(8, seed=3, size=28)
    with torch.no_grad():
        ref = model(x)
        out = calibrate(prepare(model, QuantConfig(post_ln="channel")), x)(x)
    assert _rel(out, ref) <= FOLD_TOL
