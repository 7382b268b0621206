"""Regenerate the shipped example profile(s): ``python -m allocator.examples``."""
from . import DEIT_TINY_SYNTHETIC, deit_tiny_synthetic

deit_tiny_synthetic().save(DEIT_TINY_SYNTHETIC)
print(f"wrote {DEIT_TINY_SYNTHETIC}")
