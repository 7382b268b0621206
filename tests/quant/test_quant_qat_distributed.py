"""QAT under DistributedDataParallel (2 gloo processes on CPU, as torchrun runs it): the same
loss curve and the same trained model as one process with the same global batch."""
from __future__ import annotations

import torch

from quant import QATConfig, QuantConfig, dist, qat
from quant_helpers import build_tiny

# W3A3 QAT turns float-summation differences (DDP's split batches) into rounding flips, and how
# far a 6-step run drifts depends on its PTQ start (up to 3% of the logits from some configs); the
# start is pinned to the former default, with which the runs agree (the DDP mechanics are the same).
CONFIG = QATConfig(epochs=2, batch_size=8, lr=3e-3, kd_weight=0.5, seed=3, quant=QuantConfig.preset("v1"))


def _task(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(4, 1, 32, 32, generator=g)
    y = torch.arange(n) % 4
    return protos[y] + 0.5 * torch.randn(n, 1, 32, 32, generator=g), y


def _train(kind: str) -> dict:
    images, labels = _task()
    qmodel, history = qat(build_tiny(kind), "W3A3", (images, labels), config=CONFIG, verbose=False)
    params = {name: p.detach().clone() for name, p in qmodel.named_parameters()}
    return {"history": history, "params": params, "world": dist.world()}


def test_two_process_ddp_follows_the_single_process_run():
    torch.set_num_threads(1)
    single = _train("deit")
    out = dist.spawn(_train, 2, "deit")
    assert [o["world"] for o in out] == [(0, 2), (1, 2)]
    assert [r["steps"] for r in out[0]["history"]] == [3, 3]
    for rank in out:
        for mine, ref in zip(rank["history"], single["history"]):
            for key in ("loss", "ce", "kd", "train_acc"):
                assert abs(mine[key] - ref[key]) <= 1e-4 * max(1.0, abs(ref[key])), (key, mine[key], ref[key])
        # 6 AdamW steps on split batches: the same weights and step sizes up to float summation
        # order, within 2% relative L2 per tensor (a missing gradient average would be ~100%).
        # Not the logits: through a 3-bit grid a 1e-7 change flips a rounding, and other BLAS
        # kernels moved them by 3% (measured with ATEN_CPU_CAPABILITY=avx2).
        assert rank["params"].keys() == single["params"].keys()
        for name, value in rank["params"].items():
            ref = single["params"][name]
            err = float((value - ref).norm() / ref.norm().clamp_min(1e-12))
            assert err <= 2e-2, (name, err)  # measured: <= 1.1e-3 here, 6.2e-3 with AVX2 kernels
    assert single["history"][1]["loss"] < single["history"][0]["loss"]
