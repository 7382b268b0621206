"""Which layers of a model are quantizable, and which LayerNorms feed which linear layers.

The single definition of "quantizable layer" shared by :mod:`quant` and :mod:`profiling`:
every ``nn.Linear`` (qkv, proj, fc1, fc2, Swin's patch-merging ``reduction``, the heads),
the patch-embedding ``nn.Conv2d`` and, per attention module, the two activation products
``{attn}.matmul_qk`` (``q @ k^T``) and ``{attn}.matmul_av`` (``attn @ v``). Names are the
qualified names of ``model.named_modules()``, identical before and after :func:`quant.prepare`.

Supported: timm ``VisionTransformer`` (including ``VisionTransformerDistilled``) with
pre-norm ``Block``s, and ``SwinTransformer``. Anything else raises
:class:`~quant.errors.UnsupportedModelError` naming the module and class, rather than
silently quantizing a structure whose attention or LayerNorm folding we would get wrong.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .errors import UnsupportedModelError
from .modules import QuantAttention, QuantConv2d, QuantLinear, QuantMatMul, QuantWindowAttention
from .quantizers import UniformQuantizer

__all__ = ["LayerSite", "PostLNGroup", "find_quantizable_layers", "find_post_ln_groups", "model_family"]


@dataclass(frozen=True)
class LayerSite:
    """One quantizable site.

    ``kind``: ``"linear"``, ``"conv"`` or ``"matmul"``. ``module``: the layer (for a matmul
    site of a float model, the attention module that computes it; after ``prepare``, the
    :class:`~quant.modules.QuantMatMul`). ``role``: ``"first"`` (patch embedding),
    ``"last"`` (classifier head(s)) or ``"body"``; first/last layers are conventionally kept
    at 8 bits.
    """

    name: str
    kind: str
    module: nn.Module
    role: str = "body"

    @property
    def params(self) -> int:
        """Number of weight elements quantized at this site (0 for a matmul)."""
        if self.kind == "matmul":
            return 0
        return int(self.module.weight.numel())


@dataclass(frozen=True)
class PostLNGroup:
    """A LayerNorm ``norm`` whose output feeds only the linear layers ``consumers``
    (through per-channel-affine-equivariant ops: token selection, average/max pooling,
    window partition), so its output may be re-scaled per channel and the inverse folded
    into the consumers' weights exactly."""

    norm: str
    consumers: tuple[str, ...]


_SUPPORTED = "timm VisionTransformer, VisionTransformerDistilled or SwinTransformer (or a model returned by quant.prepare)"


def _timm():
    from timm.layers import LayerScale, Mlp
    from timm.models.swin_transformer import PatchMerging, SwinTransformer, SwinTransformerBlock, WindowAttention
    from timm.models.vision_transformer import Attention, Block, VisionTransformer

    return dict(VisionTransformer=VisionTransformer, Block=Block, Attention=Attention, Mlp=Mlp,
                SwinTransformer=SwinTransformer, SwinTransformerBlock=SwinTransformerBlock,
                WindowAttention=WindowAttention, PatchMerging=PatchMerging, LayerScale=LayerScale)


def model_family(model: nn.Module) -> str:
    """``"vit"`` or ``"swin"``; raises :class:`UnsupportedModelError` otherwise."""
    t = _timm()
    if isinstance(model, t["VisionTransformer"]):
        return "vit"
    if isinstance(model, t["SwinTransformer"]):
        return "swin"
    cls = type(model).__name__
    raise UnsupportedModelError(f"model class {cls} is not supported; expected a {_SUPPORTED}", "", cls)


def _unsupported(name: str, module: nn.Module, why: str) -> UnsupportedModelError:
    cls = type(module).__name__
    return UnsupportedModelError(f"unsupported module '{name}' ({cls}): {why}. Supported models: {_SUPPORTED}", name, cls)


def _is_attention(module: nn.Module) -> bool:
    t = _timm()
    return type(module) in (t["Attention"], t["WindowAttention"], QuantAttention, QuantWindowAttention)


def _validate(model: nn.Module) -> str:
    """Check the model is a structure we quantize correctly; return its family."""
    t = _timm()
    family = model_family(model)
    if family == "vit":
        if getattr(model, "attn_pool", None) is not None:
            raise _unsupported("attn_pool", model.attn_pool, "attention pooling heads are not supported (use global_pool='token' or 'avg')")
        blocks = [(f"blocks.{i}", b) for i, b in enumerate(model.blocks)]
        block_cls, attn_cls = t["Block"], (t["Attention"], QuantAttention)
    else:
        blocks = []
        for i, stage in enumerate(model.layers):
            if not isinstance(stage.downsample, (nn.Identity, t["PatchMerging"])):
                raise _unsupported(f"layers.{i}.downsample", stage.downsample, "expected PatchMerging or Identity")
            blocks += [(f"layers.{i}.blocks.{j}", b) for j, b in enumerate(stage.blocks)]
        block_cls, attn_cls = t["SwinTransformerBlock"], (t["WindowAttention"], QuantWindowAttention)
    for name, block in blocks:
        if type(block) is not block_cls:
            raise _unsupported(name, block, f"expected a pre-norm {block_cls.__name__}")
        if type(block.attn) not in attn_cls:
            raise _unsupported(f"{name}.attn", block.attn, f"expected {' or '.join(c.__name__ for c in attn_cls)}")
        if getattr(block.attn, "gate", None) is not None:
            raise _unsupported(f"{name}.attn", block.attn, "gated attention is not supported")
        if type(block.mlp) is not t["Mlp"]:
            raise _unsupported(f"{name}.mlp", block.mlp, "expected timm Mlp")
    allowed = (nn.Linear, nn.Conv2d, nn.LayerNorm, QuantLinear, QuantConv2d, t["WindowAttention"],
               QuantWindowAttention, t["LayerScale"], UniformQuantizer)  # QAT: learned step sizes/offsets
    for name, module in model.named_modules():
        if module is model or not any(p is not None for p in module._parameters.values()):
            continue
        if not isinstance(module, allowed):
            raise _unsupported(name, module, "this parameterised layer type is not known to the quantizer")
        if isinstance(module, nn.Conv2d) and name != "patch_embed.proj":
            raise _unsupported(name, module, "the only supported convolution is the patch embedding 'patch_embed.proj'")
    return family


def _classifier_ids(model: nn.Module) -> set[int]:
    heads = model.get_classifier()
    heads = heads if isinstance(heads, tuple) else (heads,)
    return {id(h) for h in heads if isinstance(h, (nn.Linear, QuantLinear))}


def find_quantizable_layers(model: nn.Module) -> list[LayerSite]:
    """All quantizable sites of ``model`` in forward order.

    Order is module registration order (which is execution order for the supported timm
    families), with each attention module's sites as qkv, matmul_qk, matmul_av, proj.
    Works on float models and on models returned by :func:`quant.prepare` (same names).
    Raises :class:`UnsupportedModelError` naming the first unsupported module.
    """
    _validate(model)
    heads = _classifier_ids(model)
    first = model.patch_embed.proj

    def role(module: nn.Module) -> str:
        return "first" if module is first else "last" if id(module) in heads else "body"

    sites: list[LayerSite] = []
    handled: set[str] = set()
    for name, module in model.named_modules():
        if name in handled:
            continue
        if _is_attention(module):
            quantized = isinstance(module, (QuantAttention, QuantWindowAttention))
            qk, av = f"{name}.matmul_qk", f"{name}.matmul_av"
            sites += [
                LayerSite(f"{name}.qkv", "linear", module.qkv, role(module.qkv)),
                LayerSite(qk, "matmul", module.matmul_qk if quantized else module),
                LayerSite(av, "matmul", module.matmul_av if quantized else module),
                LayerSite(f"{name}.proj", "linear", module.proj, role(module.proj)),
            ]
            handled |= {f"{name}.qkv", f"{name}.proj", qk, av}
        elif isinstance(module, (nn.Linear, QuantLinear)):
            sites.append(LayerSite(name, "linear", module, role(module)))
        elif isinstance(module, (nn.Conv2d, QuantConv2d)):
            sites.append(LayerSite(name, "conv", module, role(module)))
        elif isinstance(module, QuantMatMul):  # pragma: no cover - only reachable inside attention
            raise _unsupported(name, module, "a QuantMatMul outside an attention module")
    return sites


def _is_ln(module: nn.Module | None) -> bool:
    return isinstance(module, nn.LayerNorm) and module.weight is not None


def _linear_like(module: nn.Module | None) -> bool:
    return isinstance(module, (nn.Linear, QuantLinear))


def find_post_ln_groups(model: nn.Module) -> list[PostLNGroup]:
    """LayerNorm -> linear pairs whose LayerNorm output may be folded into the linear.

    ViT/DeiT: ``norm1 -> attn.qkv``, ``norm2 -> mlp.fc1`` (and ``attn.norm -> proj``,
    ``mlp.norm -> fc2`` when those norms exist), final ``norm`` (or ``fc_norm``) -> ``head``
    (and ``head_dist``). Swin: ``norm1 -> qkv`` (skipped for blocks whose resolution is not a
    multiple of the window, because timm zero-pads *after* norm1 and padded zeros would not
    be folded), ``norm2 -> fc1``, ``downsample.norm -> downsample.reduction``,
    ``norm -> head.fc``. A pair is only listed if the widths match.
    """
    family = _validate(model)
    pairs: list[tuple[str, list[str]]] = []
    if family == "vit":
        for i, block in enumerate(model.blocks):
            p = f"blocks.{i}"
            pairs += [(f"{p}.norm1", [f"{p}.attn.qkv"]), (f"{p}.norm2", [f"{p}.mlp.fc1"]),
                      (f"{p}.attn.norm", [f"{p}.attn.proj"]), (f"{p}.mlp.norm", [f"{p}.mlp.fc2"])]
        final = "fc_norm" if _is_ln(getattr(model, "fc_norm", None)) else "norm"
        pairs.append((final, [h for h in ("head", "head_dist") if hasattr(model, h)]))
    else:
        for i, stage in enumerate(model.layers):
            p = f"layers.{i}"
            if not isinstance(stage.downsample, nn.Identity):
                pairs.append((f"{p}.downsample.norm", [f"{p}.downsample.reduction"]))
            for j, block in enumerate(stage.blocks):
                b = f"{p}.blocks.{j}"
                (h, w), (wh, ww) = block.input_resolution, block.window_size
                if h % wh == 0 and w % ww == 0:
                    pairs.append((f"{b}.norm1", [f"{b}.attn.qkv"]))
                pairs.append((f"{b}.norm2", [f"{b}.mlp.fc1"]))
        pairs.append(("norm", ["head.fc"]))
    groups = []
    for norm_name, consumers in pairs:
        norm = model.get_submodule(norm_name) if _has(model, norm_name) else None
        mods = [model.get_submodule(c) for c in consumers if _has(model, c)]
        if not _is_ln(norm) or not mods or len(mods) != len(consumers):
            continue
        width = norm.normalized_shape[-1]
        if len(norm.normalized_shape) != 1 or not all(_linear_like(m) and m.in_features == width for m in mods):
            continue
        groups.append(PostLNGroup(norm_name, tuple(consumers)))
    return groups


def _has(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True
