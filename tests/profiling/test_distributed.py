"""Profiling in several processes (gloo on CPU, as torchrun runs it): the merged profile is
the single-process one, bit for bit (same batches, same kernels, one thread each)."""
from __future__ import annotations

import json

import numpy as np
import torch

from profiling import profile_model
from quant import dist

from _profiling_fixtures import images, labels, tiny_deit, tiny_swin


FAMILIES = ("deit", "swin")


def _profile(family: str, checkpoint: str | None) -> dict:
    model = {"deit": tiny_deit, "swin": tiny_swin}[family]()
    prof = profile_model(model, [(images(10), labels(10))], bits=(2, 4, 8), batch_size=4, checkpoint=checkpoint,
                         verbose=False)
    doc = prof.to_dict()
    doc["metadata"].pop("timings_s")
    return doc


def _profiles(folder: str | None) -> dict:
    return {"rank": dist.world(),
            "profiles": {f: _profile(f, None if folder is None else f"{folder}/{f}.json") for f in FAMILIES}}


def test_two_processes_give_the_single_process_profile(tmp_path):
    torch.set_num_threads(1)
    single = _profiles(None)["profiles"]
    out = dist.spawn(_profiles, 2, str(tmp_path))
    assert [o["rank"] for o in out] == [(0, 2), (1, 2)]
    assert out[0]["profiles"] == out[1]["profiles"], "every process returns the same profile"
    for family in FAMILIES:
        assert out[0]["profiles"][family] == single[family], f"{family}: merged profile differs from one process's"
        ckpt = tmp_path / f"{family}.json"
        # rank 0 wrote one merged checkpoint with every layer; the per-process part files are gone
        saved = json.loads(ckpt.read_text())
        assert len(saved["done"]) == len(single[family]["layers"])
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(family)) == [f"{family}.json"]
        np.testing.assert_array_equal(  # the checkpoint keeps raw damages; the profile stores negatives as 0
            np.maximum(np.array([saved["act"][layer["name"]] for layer in single[family]["layers"]]), 0.0),
            np.array(single[family]["act_sensitivity"]))
