"""`mixqvit qat` (mixqvit.commands.qat): parse, train, evaluate, write outputs, resume, refuse a
foreign checkpoint with a one-line error. Tiny random-init timm ViT on a synthetic ImageFolder."""
from __future__ import annotations

import argparse
import json

import pytest

from mixqvit.errors import InputFileError
from mixqvit.commands.qat import add_arguments, run
from mixqvit_test_helpers import TINY, write_image_folder



@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("qat_data") / "imgs")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mixqvit qat")
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_qat_command_trains_evaluates_writes_and_resumes(image_folder, tmp_path, capsys):
    common = ["--model", "vit_tiny_patch16_224", "--model-kwargs", json.dumps(TINY), "--data", str(image_folder),
              "--plan", "W2A2", "--train", "24", "--calib", "12", "--batch-size", "8", "--epochs", "2",
              "--checkpoint", str(tmp_path / "qat.ckpt"), "--quiet"]
    args = parse(*common, "--eval", "--float", "--history", str(tmp_path / "h.json"), "--out", str(tmp_path / "q.pt"))
    assert args.kd_weight == 0.5 and args.lr == 5e-4
    assert run(args) == 0
    out = capsys.readouterr().out
    assert "6 steps" in out and "top-1 on ImageFolder" in out and "float" in out
    history = json.loads((tmp_path / "h.json").read_text())
    assert [r["steps"] for r in history["history"]] == [3, 3] and 0.0 <= history["top1"] <= 1.0
    assert (tmp_path / "q.pt").stat().st_size > 0

    assert run(parse(*common)) == 0, "a finished checkpoint is resumed, not refused"
    assert "exists: resuming from it" in capsys.readouterr().out
    with pytest.raises(InputFileError, match="kd_weight: checkpoint 0.5 vs now 0.0"):
        run(parse(*common, "--kd-weight", "0"))


@pytest.mark.parametrize("bad", [["--kd-weight", "2"], ["--lr", "-1"], ["--epochs", "0"]])
def test_bad_options_are_refused_by_the_parser(bad, capsys):
    with pytest.raises(SystemExit):
        parse("--model", "m", "--plan", "W2A2", *bad)
    assert "expected" in capsys.readouterr().err
