"""Split a transformer into prefix -> units (blocks) -> suffix, to re-run only a suffix.

Sensitivity profiling changes one layer at a time; everything before the transformer unit that
holds the layer is unchanged, so the tensor entering that unit is computed once per batch
(`Chain.input_of`, which stops the forward pass there) and only the rest is re-run for every
(layer, bits) pair (`Chain.run_from`).

A *unit* is a module whose output feeds only the next unit: a ViT/DeiT ``blocks.i``, a Swin
``layers.s.downsample`` or ``layers.s.blocks.j``. Re-running from unit ``k`` is done on the
model's own ``forward`` (so every model-specific step after the units -- final norm, token
pooling, DeiT's two-head average -- is the model's code, not a copy): units before ``k`` are
temporarily made identities and a forward pre-hook hands unit ``k`` the cached tensor. ``k ==
len(units)`` re-runs only the suffix, by replacing the last unit's output. The prefix (patch
embedding, a small share of the compute) is recomputed and discarded.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

__all__ = ["Chain", "find_chain"]


class Chain:
    """The units of a model in execution order, and how to run the model from one of them."""

    def __init__(self, model: nn.Module, units: list[tuple[str, nn.Module]]):
        self.model = model
        self.units = units
        self.names = [n for n, _ in units]

    def __len__(self) -> int:
        return len(self.units)

    def _unit_index(self, site_name: str) -> int | None:
        for i, name in enumerate(self.names):
            if site_name.startswith(name + "."):
                return i
        return None

    def positions(self, site_names: list[str]) -> list[int]:
        """Start index for every site (forward order given): -1 prefix, len(units) suffix."""
        out: list[int] = []
        seen_unit = False
        for s in site_names:
            k = self._unit_index(s)
            if k is not None:
                seen_unit = True
                out.append(k)
            else:
                out.append(len(self.units) if seen_unit else -1)
        return out

    def input_of(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """The tensor entering unit k when the model runs on x (k == len: the last unit's
        output). The forward pass stops right there, so this costs the prefix only."""
        if not 0 <= k <= len(self.units):
            raise ValueError(f"unit index {k} outside [0, {len(self.units)}]")
        if k < len(self.units):
            handle = self.units[k][1].register_forward_pre_hook(_stop_with_input)
        else:
            handle = self.units[-1][1].register_forward_hook(_stop_with_output)
        try:
            self.model(x)
        except _Stop as stop:
            return stop.value
        finally:
            handle.remove()
        raise RuntimeError(f"unit {self.names[min(k, len(self.units) - 1)]} was not executed by the model's "
                           "forward pass")

    @contextmanager
    def _skipping(self, k: int, h: torch.Tensor) -> Iterator[None]:
        skipped = [mod for _, mod in self.units[: min(k, len(self.units))]]
        handles = []
        try:
            for mod in skipped:
                mod.forward = _passthrough  # instance attribute shadows the class method
            if k < len(self.units):
                handles.append(self.units[k][1].register_forward_pre_hook(
                    lambda mod, args: (h,) + tuple(args[1:])))
            else:
                handles.append(self.units[-1][1].register_forward_hook(lambda mod, args, out: h))
            yield
        finally:
            for h_ in handles:
                h_.remove()
            for mod in skipped:
                del mod.forward

    def run_from(self, x: torch.Tensor, k: int, h: torch.Tensor | None) -> torch.Tensor:
        """Logits of the model on x, re-computing only from unit k, which is handed h
        (`input_of(x, k)`); k == -1 runs everything (h unused)."""
        if k < 0:
            return self.model(x)
        with self._skipping(k, h):
            return self.model(x)


class _Stop(Exception):
    """Raised by a hook to end a forward pass early, carrying the tensor it was after."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value


def _stop_with_input(mod: nn.Module, args: tuple) -> None:
    raise _Stop(args[0].detach())


def _stop_with_output(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
    raise _Stop(out.detach())


def _passthrough(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return x


def find_chain(model: nn.Module) -> Chain | None:
    """The unit chain of a timm ViT/DeiT (``blocks``) or Swin (``layers``) model, else None."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential) and len(blocks) > 0:
        return Chain(model, [(f"blocks.{i}", b) for i, b in enumerate(blocks)])
    layers = getattr(model, "layers", None)
    if isinstance(layers, nn.Sequential) and len(layers) > 0:
        units: list[tuple[str, nn.Module]] = []
        for s, stage in enumerate(layers):
            down, sub = getattr(stage, "downsample", None), getattr(stage, "blocks", None)
            if not isinstance(sub, nn.Sequential):
                return None
            if down is not None:
                units.append((f"layers.{s}.downsample", down))
            units += [(f"layers.{s}.blocks.{j}", b) for j, b in enumerate(sub)]
        return Chain(model, units)
    return None
