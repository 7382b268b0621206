"""A careless user's inputs: every one ends in one line on stderr, exit status 2, no traceback and
no partial output file (issue classes: unwritable outputs, corrupt data, malformed plans and
profiles, out-of-range numbers, empty lists). Also: every command refuses a bad number with the
one-line usage error."""
import gzip
import json
import shutil

import pytest

from allocator.examples import deit_tiny_synthetic
from mixqvit.cli import main
from mixqvit_test_helpers import ARCH, MODEL_ARGS, TINY, write_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("bad_input") / "imgs", per_class=4, size=18)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A valid profile and plan of the allocator's example profile."""
    from allocator import solve

    root = tmp_path_factory.mktemp("docs")
    profile = deit_tiny_synthetic()
    profile_path = profile.save(root / "profile.json")
    plan = solve(profile, budget="W4A4")
    return profile_path, plan.save(root / "plan.json")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("mixqvit"), err
    return lines[0]


def _fails(argv, capsys, *expected: str) -> str:
    assert main([str(a) for a in argv]) == 2
    line = _one_error_line(capsys)
    for text in expected:
        assert text in line, line
    return line


def _no_partial_files(directory):
    assert not [p for p in directory.rglob("*") if p.is_file() and p.name.startswith(".")], "temporary left"


# -- outputs -----------------------------------------------------------------------------------
def _outputs(tmp_path, files, folder):
    profile, plan = files
    return {
        "profile": lambda out: ["profile", *MODEL_ARGS, "--data", folder, "--calib", 6, "--bits", "4,8", "--out", out],
        "solve": lambda out: ["solve", profile, "--budget", "W4A4", "--out", out],
        "compare": lambda out: ["compare", profile, "--budgets", "4", "--solvers", "exact", "--out", out],
        "quantize": lambda out: ["quantize", *MODEL_ARGS, "--data", folder, "--calib", 6, "--plan", "W8A8", "--out", out],
        "demo": lambda out: ["demo", "--out", out],
    }


@pytest.mark.parametrize("command", ["profile", "solve", "compare", "quantize", "demo"])
@pytest.mark.parametrize("where", ["existing directory", "parent is a file", "cannot create"])
def test_unwritable_outputs_are_refused_before_any_work(command, where, tmp_path, files, folder, capsys):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir").mkdir()
    target = {"existing directory": tmp_path / "a_dir", "parent is a file": tmp_path / "a_file" / "out.json",
              "cannot create": "/proc/mixqvit-cannot/out.json"}[where]
    if command == "demo":  # --out is a directory there
        target = {"existing directory": tmp_path / "a_file", "parent is a file": tmp_path / "a_file" / "rep",
                  "cannot create": "/proc/mixqvit-cannot/report"}[where]
    line = _fails(_outputs(tmp_path, files, folder)[command](target), capsys)
    assert str(target).split("/")[-1] in line or "a_file" in line or "proc" in line
    assert (tmp_path / "a_file").read_text() == "x" and not any((tmp_path / "a_dir").iterdir())


# -- corrupt data ------------------------------------------------------------------------------
def test_unreadable_png_in_the_evaluation_folder(folder, tmp_path, capsys):
    data = tmp_path / "imgs"
    shutil.copytree(folder, data)
    (data / "class1" / "broken.png").write_bytes(b"this is not a png")
    line = _fails(["quantize", *MODEL_ARGS, "--data", data, "--calib", 3, "--plan", "W8A8", "--eval"], capsys)
    assert "broken.png" in line


@pytest.mark.parametrize("content", ["garbage", "truncated"])
def test_corrupt_fashion_mnist_gz(content, tmp_path, capsys):
    data = tmp_path / "fmnist"
    data.mkdir()
    header = bytes([0, 0, 8, 3]) + (100).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    good = gzip.compress(header + bytes(100 * 28 * 28))
    labels = gzip.compress(bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + bytes(100))
    for split in ("train", "t10k"):
        images = b"\x1f\x8b not gzip at all" if content == "garbage" else good[: len(good) // 2]
        (data / f"{split}-images-idx3-ubyte.gz").write_bytes(images)
        (data / f"{split}-labels-idx1-ubyte.gz").write_bytes(labels)
    _fails(["quantize", "--model", "fmnist_vit", "--data", data, "--calib", 10, "--plan", "W8A8"], capsys,
           "images-idx3-ubyte.gz")


# -- malformed plans and profiles ---------------------------------------------------------------
def _edited_plan(files, tmp_path, edit) -> str:
    doc = json.loads(files[1].read_text())
    edit(doc)
    path = tmp_path / "edited_plan.json"
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.mark.parametrize("bits", [0, 1, 17, 20, 33])
def test_plan_bits_outside_the_supported_range(bits, files, tmp_path, capsys):
    def edit(doc):
        doc["layers"][3]["w_bits"] = bits
    plan = _edited_plan(files, tmp_path, edit)
    _fails(["quantize", *MODEL_ARGS, "--calib", 3, "--plan", plan], capsys, "between 2 and 16")


@pytest.mark.parametrize("field, value", [("solve_time_s", "fast"), ("totals", [1, 2]), ("totals", "big"),
                                          ("objective", {"a": 1})])
def test_plan_fields_of_the_wrong_type(field, value, files, tmp_path, capsys):
    def edit(doc):
        doc[field] = value
    plan = _edited_plan(files, tmp_path, edit)
    _fails(["quantize", *MODEL_ARGS, "--calib", 3, "--plan", plan], capsys, field)


@pytest.mark.parametrize("spec", ["W1A1", "W99A4", "W4A0"])
def test_uniform_shorthand_outside_the_range(spec, capsys):
    _fails(["quantize", *MODEL_ARGS, "--calib", 3, "--plan", spec], capsys, "2 and 16")


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"[" * 100000 + b"]" * 100000])
def test_profile_that_is_not_utf8_or_too_deep(content, tmp_path, capsys):
    path = tmp_path / "profile.json"
    path.write_bytes(content)
    _fails(["solve", path, "--budget", "4"], capsys, str(path))


def test_bad_image_size_in_a_checkpoint_config(tmp_path, capsys):
    from mixqvit.checkpoints import save_checkpoint
    from mixqvit.loading import load_model

    ckpt = save_checkpoint(load_model(ARCH, model_kwargs=TINY).model, tmp_path / "m.safetensors", ARCH, TINY)
    config = json.loads(ckpt.with_suffix(".json").read_text())
    config["model_kwargs"]["img_size"] = "huge"
    ckpt.with_suffix(".json").write_text(json.dumps(config))
    _fails(["quantize", "--model", ckpt, "--data", tmp_path, "--plan", "W8A8"], capsys, "img_size")


# -- numbers and lists ------------------------------------------------------------------------
def test_seed_beyond_64_bits(files, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["profile", *MODEL_ARGS, "--seed", str(2**64)])
    assert exc.value.code == 2 and "seed" in _one_error_line(capsys)


@pytest.mark.parametrize("command", ["solve", "compare"])
def test_time_limit_zero(command, files, capsys):
    budget = ["--budget", "4"] if command == "solve" else ["--budgets", "4"]
    with pytest.raises(SystemExit) as exc:
        main([command, str(files[0]), *budget, "--time-limit", "0"])
    assert exc.value.code == 2 and "positive number" in _one_error_line(capsys)


def test_compare_with_an_empty_solver_list(files, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(files[0]), "--solvers", ","])
    assert exc.value.code == 2 and "list of names" in _one_error_line(capsys)


BAD_NUMBERS = {
    "profile": ["profile", *MODEL_ARGS, "--calib", "0"],
    "solve": ["solve", "p.json", "--budget", "4", "--alpha", "2"],
    "compare": ["compare", "p.json", "--time-limit", "-1"],
    "quantize": ["quantize", *MODEL_ARGS, "--plan", "W4A4", "--test-limit", "0"],
    "export": ["export", *MODEL_ARGS, "--plan", "W4A4", "--calib", "0", "--out", "d"],
    "qat": ["qat", *MODEL_ARGS, "--plan", "W2A2", "--epochs", "0"],
    "train": ["train", "fmnist_vit", "--epochs", "0"],
    "demo": ["demo", "--calib", "-3"],
}


@pytest.mark.parametrize("command", sorted(BAD_NUMBERS))
def test_every_command_refuses_a_bad_number_in_one_line(command, capsys):
    from mixqvit.commands import COMMANDS

    assert set(BAD_NUMBERS) == set(COMMANDS), "a new command needs a case here"
    with pytest.raises(SystemExit) as exc:
        main(BAD_NUMBERS[command])
    assert exc.value.code == 2
    assert "expected" in _one_error_line(capsys)


def test_nan_calibration_images_are_refused():
    import torch

    from mixqvit.loading import load_model
    from quant import quantize

    model = load_model(ARCH, model_kwargs=TINY).model
    images = torch.randn(4, 3, 16, 16)
    images[2, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite values in 1 of its 4 images"):
        quantize(model, "W4A4", images)
    images[2, 0, 3, 3] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        quantize(model, "W4A4", images)
