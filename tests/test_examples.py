"""The README's Python example and the scripts in examples/ run unchanged, with the current API.

The scripts run in a subprocess exactly as a user would start them (only their command-line
options are chosen small: a few calibration images, a tiny random-init timm model instead of a
download).
"""
import json
import re
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "mixqvit"))
from mixqvit_test_helpers import ARCH, TINY, write_image_folder  # noqa: E402


def _run(args: list[str], cwd: Path) -> str:
    env_python = [sys.executable]
    done = subprocess.run(env_python + args, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_readme_python_blocks_run(tmp_path):
    shutil.copy(files("allocator.examples") / "deit_tiny_synthetic.json", tmp_path / "profile.json")
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks, "the README shows Python usage"
    for block in blocks:
        (tmp_path / "block.py").write_text(block)
        _run([str(tmp_path / "block.py")], tmp_path)


def test_solve_a_profile_example(tmp_path):
    out = _run([str(ROOT / "examples" / "solve_a_profile.py")], tmp_path)
    assert "avg weight bits" in out and "budget" in out


def test_mixed_vs_uniform_example(tmp_path):
    out = _run([str(ROOT / "examples" / "mixed_vs_uniform.py"), "--calib", "16", "--test-limit", "100"], tmp_path)
    rows = re.findall(r"^(uniform|mixed)\s+W4A4-sized: top-1 ([0-9.]+)", out, flags=re.M)
    assert [r[0] for r in rows] == ["uniform", "mixed"] and all(0.5 < float(r[1]) <= 1 for r in rows)


def test_timm_imagefolder_example(tmp_path):
    folder = write_image_folder(tmp_path / "imgs", per_class=6, size=18)
    out = _run([str(ROOT / "examples" / "timm_imagefolder.py"), ARCH, str(folder), "--no-pretrained",
                "--model-kwargs", json.dumps(TINY), "--calib", "9", "--test-limit", "9", "--budget", "7"], tmp_path)
    assert re.search(r"float top-1\s+[0-9.]+", out) and re.search(r"quantized top-1 [0-9.]+", out)
