"""The one notion of "quantizable layer", taken from `quant`, plus lookups profiling needs.

`quant.find_quantizable_layers` defines the sites (module FQNs; attention products named
``<attn>.matmul_qk`` / ``<attn>.matmul_av``). Profiling never re-discovers layers itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch.nn as nn

__all__ = ["Site", "discover_sites", "attention_fqn", "MATMUL_SUFFIXES"]

MATMUL_SUFFIXES = (".matmul_qk", ".matmul_av")


@dataclass(frozen=True)
class Site:
    """A quantizable site: FQN, kind ("linear" | "conv" | "matmul") and its module."""

    name: str
    kind: str
    module: nn.Module


def attention_fqn(name: str) -> str:
    """FQN of the attention module that owns matmul site `name` (``blocks.0.attn.matmul_qk``)."""
    for suffix in MATMUL_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise ValueError(f"{name!r} is not a matmul site name; expected it to end in {MATMUL_SUFFIXES}")


def discover_sites(model: nn.Module, sites: Sequence[Any] | None = None) -> list[Site]:
    """Sites of `model` in forward order, from `quant.find_quantizable_layers` unless given.

    `sites` may be any sequence of objects with ``name``, ``kind`` and ``module`` attributes
    (e.g. `quant.LayerSite`); linear/conv modules are looked up in `model` by name, so sites
    found on one copy of a model can be used on another.
    """
    if sites is None:
        from quant import find_quantizable_layers

        sites = find_quantizable_layers(model)
    modules = dict(model.named_modules())
    out: list[Site] = []
    for s in sites:
        if s.kind == "matmul":
            module = modules.get(attention_fqn(s.name))
        else:
            module = modules.get(s.name)
        if module is None:
            raise ValueError(
                f"site {s.name!r} names no module of this {type(model).__name__}; sites must come "
                "from find_quantizable_layers on the same architecture"
            )
        out.append(Site(s.name, s.kind, module))
    if not out:
        raise ValueError(f"{type(model).__name__} has no quantizable layers")
    return out
