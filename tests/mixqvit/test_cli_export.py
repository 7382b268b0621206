"""`mixqvit export`: packed files that reload to the quantized model (a shipped model by its
training record, a timm model by name), and one-line refusals. The ONNX format's own tests are in
tests/quant/test_export_onnx.py; the command only passes --format through."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from mixqvit_test_helpers import ARCH, MODEL_ARGS, TINY, write_image_folder

import quant
from allocator import LayerInfo, Plan, Profile
from mixqvit.cli import main
from mixqvit.datasets import load_calibration, load_test
from mixqvit.loading import load_model


def test_packed_export_of_the_shipped_vit_reloads_to_the_quantized_model(tmp_path, capsys):
    assert main(["export", "--model", "fmnist_vit", "--plan", "W4A4", "--calib", "32", "--out", str(tmp_path),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "fmnist_vit.safetensors"
    assert f"wrote {path}: {path.stat().st_size:,} bytes" in out and "packed weight codes" in out
    loaded = load_model("fmnist_vit")
    reference = quant.quantize(loaded.model, "W4A4", load_calibration(loaded, None, 32)[0])
    images = load_test(loaded, None, limit=64).images
    with torch.no_grad():
        assert torch.equal(quant.load_packed(path)(images), reference(images))


def test_packed_export_of_a_timm_model_rebuilds_it_by_name(tmp_path):
    data = write_image_folder(tmp_path / "data", per_class=4)
    assert main(["export", *MODEL_ARGS, "--data", str(data), "--plan", "W8A8", "--calib", "6",
                 "--out", str(tmp_path / "out"), "--quiet"]) == 0
    loaded = quant.load_packed(tmp_path / "out" / f"{ARCH}.safetensors")
    assert loaded.model_spec == {"arch": ARCH, "model_kwargs": TINY}  # timm.create_model(ARCH, **TINY)
    images = torch.randn(2, 3, TINY["img_size"], TINY["img_size"])
    with torch.no_grad():
        assert loaded(images).shape == (2, TINY["num_classes"])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_a_plan_for_another_model_is_refused(tmp_path, capsys):
    layers = [LayerInfo("patch_embed.proj", "conv", 100, 100), LayerInfo("blocks.0.attn.qkv", "linear", 100, 100),
              LayerInfo("head", "linear", 10, 10)]
    profile = Profile(layers, (4, 8), weight_sensitivity=np.zeros((3, 2)), metadata={"model": "other"})
    plan_path = Plan.uniform(profile, 4, 4).save(tmp_path / "plan.json")
    assert main(["export", "--model", "fmnist_vit", "--plan", str(plan_path), "--calib", "8",
                 "--out", str(tmp_path / "out")]) == 2
    assert "plan does not match the model" in _error_line(capsys)
    assert not any((tmp_path / "out").iterdir())  # nothing written


def test_out_must_be_a_directory(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["export", "--model", "fmnist_vit", "--plan", "W4A4", "--out", str(tmp_path / "file")]) == 2
    assert "is a file; give a directory" in _error_line(capsys)


def test_preset_and_reconstruction_reach_the_exported_file(tmp_path):
    """--preset and --reconstruct are applied as quant.quantize + quant.reconstruct would: the
    packed file reloads to exactly that model (the fitted scales included)."""
    from quant.reconstruct import reconstruct

    data = write_image_folder(tmp_path / "data", per_class=4)
    assert main(["export", *MODEL_ARGS, "--data", str(data), "--plan", "W4A4", "--calib", "6", "--preset", "repq",
                 "--reconstruct", "3", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    loaded = load_model(ARCH, model_kwargs=TINY)
    calib = load_calibration(loaded, str(data), 6)[0]
    reference = quant.quantize(loaded.model, "W4A4", calib, config=quant.QuantConfig.preset("repq"))
    plain = quant.quantize(loaded.model, "W4A4", calib, config=quant.QuantConfig.preset("repq"))
    reconstruct(reference, loaded.model, calib, steps=3, seed=0)
    images = torch.randn(3, 3, TINY["img_size"], TINY["img_size"])
    with torch.no_grad():
        exported = quant.load_packed(tmp_path / "out" / f"{ARCH}.safetensors")(images)
        assert torch.equal(exported, reference(images))
        assert not torch.equal(exported, plain(images)), "the reconstruction changed the scales"


def test_bad_preset_and_reconstruct_steps_are_refused_before_work(tmp_path, capsys):
    assert main(["export", "--model", "fmnist_vit", "--plan", "W4A4", "--preset", "fast", "--out", str(tmp_path)]) == 2
    assert "--preset: unknown QuantConfig preset 'fast'; expected one of" in _error_line(capsys)
    with pytest.raises(SystemExit) as exc:  # argparse's usage error
        main(["export", "--model", "fmnist_vit", "--plan", "W4A4", "--reconstruct", "0", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "--reconstruct: expected a positive integer, got 0" in _error_line(capsys)
    assert not any(tmp_path.iterdir())
