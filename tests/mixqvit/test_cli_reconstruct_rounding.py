"""`mixqvit export --reconstruct-rounding`: the learned rounding reaches the packed file."""
from __future__ import annotations

import pytest
import torch
from mixqvit_test_helpers import ARCH, MODEL_ARGS, TINY, write_image_folder

import quant
from mixqvit.cli import main
from mixqvit.datasets import load_calibration, load_check
from mixqvit.loading import load_model


@pytest.mark.parametrize("options", [{}, {"rounding_loss": "fisher-mean"}, {"rounding_drop": 0.5}])
def test_learned_rounding_reaches_the_exported_file(options, tmp_path):
    """--reconstruct-rounding alone (no check) is quant.reconstruct(steps=0, rounding_steps=N)
    (with --rounding-loss / --rounding-drop, that rounding_loss / rounding_drop): the packed file
    reloads to exactly that model, which differs from the GPTQ-rounded one."""
    from quant.reconstruct import reconstruct

    data = write_image_folder(tmp_path / "data", per_class=4)
    flag = [x for k, v in options.items() for x in ("--" + k.replace("_", "-"), str(v))]
    assert main(["export", *MODEL_ARGS, "--data", str(data), "--plan", "W3A3", "--calib", "6",
                 "--reconstruct-rounding", "20", *flag, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    loaded = load_model(ARCH, model_kwargs=TINY)
    calib = load_calibration(loaded, str(data), 6)[0]
    reference = quant.quantize(loaded.model, "W3A3", calib)
    plain = quant.quantize(loaded.model, "W3A3", calib)
    report = []
    reconstruct(reference, loaded.model, calib, steps=0, rounding_steps=20, seed=0, report=report, **options)
    images = torch.randn(3, 3, TINY["img_size"], TINY["img_size"])
    with torch.no_grad():
        exported = quant.load_packed(tmp_path / "out" / f"{ARCH}.safetensors")(images)
        assert torch.equal(exported, reference(images))
        assert any(f.flipped > 0 for f in report)
        assert not torch.equal(exported, plain(images)), "the learned rounding changed the weights"


@pytest.mark.parametrize("check", ["8", "18"])
def test_the_held_out_check_decides_what_reaches_the_file(check, tmp_path, capsys):
    """With --reconstruct-check N (up to all 18 images the folder has left) the file is
    quant.reconstruct with check_data = the pool's images outside the calibration set, drawn as
    mixqvit.datasets.load_check draws them; the command says what the check decided."""
    from quant.reconstruct import reconstruct

    data = write_image_folder(tmp_path / "data", per_class=8)
    assert main(["export", *MODEL_ARGS, "--data", str(data), "--plan", "W3A3", "--calib", "6",
                 "--reconstruct-rounding", "20", "--reconstruct-check", check, "--out", str(tmp_path / "out")]) == 0
    loaded = load_model(ARCH, model_kwargs=TINY)
    calib = load_calibration(loaded, str(data), 6)[0]
    held_out = load_check(loaded, str(data), int(check), 6)[0]
    assert len(held_out) == int(check)
    reference, report = quant.quantize(loaded.model, "W3A3", calib), []
    reconstruct(reference, loaded.model, calib, steps=0, rounding_steps=20, seed=0, report=report, check_data=held_out)
    verdict = report[-1]
    said = capsys.readouterr().out
    assert (f"reconstruction {'kept' if verdict.kept else 'put back'}" in said
            and f"on {len(held_out)} held-out images {verdict.kl_before:.4f} -> {verdict.kl_after:.4f}" in said)
    images = torch.randn(3, 3, TINY["img_size"], TINY["img_size"])
    with torch.no_grad():
        assert torch.equal(quant.load_packed(tmp_path / "out" / f"{ARCH}.safetensors")(images), reference(images))


def test_more_check_images_than_left_are_refused(tmp_path, capsys):
    data = write_image_folder(tmp_path / "data", per_class=4)
    status = main(["export", *MODEL_ARGS, "--data", str(data), "--plan", "W3A3", "--calib", "6",
                   "--reconstruct-rounding", "2", "--reconstruct-check", "7", "--out", str(tmp_path / "out")])
    assert status != 0
    assert "--reconstruct-check 7: 7 check images asked for, but only 6 are left after the 6 calibration images; " \
           "ask for fewer" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_zero_rounding_steps_are_refused_before_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export", "--model", "fmnist_vit", "--plan", "W4A4", "--reconstruct-rounding", "0", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "--reconstruct-rounding: expected a positive integer, got 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, message", [
    (["--reconstruct-rounding", "5", "--rounding-loss", "l1"],
     "--rounding-loss: expected one of mse, fisher, fisher-mean, got 'l1'"),
    (["--rounding-loss", "fisher"], "--rounding-loss only applies with learned rounding: add --reconstruct-rounding STEPS"),
    (["--rounding-drop", "0.5", "--rounding-loss", "mse"],
     "--rounding-loss and --rounding-drop only apply with learned rounding: add --reconstruct-rounding"),
    (["--reconstruct-rounding", "5", "--rounding-drop", "1"], "--rounding-drop: expected a number in [0, 1), got 1.0"),
    (["--reconstruct-check", "64"], "--reconstruct-check only applies with a reconstruction: add --reconstruct-rounding"),
    (["--reconstruct-rounding", "5", "--reconstruct-check", "0"],
     "--reconstruct-check: expected a positive integer, got 0"),
])
def test_bad_rounding_options_are_refused_before_work(args, message, tmp_path, capsys):
    try:  # argparse refuses a bad number by exiting, the option checks by returning
        status = main(["export", "--model", "fmnist_vit", "--plan", "W4A4", *args, "--out", str(tmp_path)])
    except SystemExit as exc:
        status = exc.code
    assert status == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
