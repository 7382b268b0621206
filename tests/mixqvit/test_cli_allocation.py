"""The torch-free commands (`solve`, `compare`) and the CLI's error handling.

A synthetic profile stands in for a measured one: the allocation commands only read JSON, so
their behaviour (budget parsing, infeasibility messages, atomic outputs) is tested without a
model.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator import Budget, LayerInfo, Plan, Profile
from mixqvit.argtypes import parse_budget, parse_budget_list
from mixqvit.cli import main
from mixqvit.errors import BudgetParseError

BITS = (2, 3, 4, 6, 8)


def _profile() -> Profile:
    rng = np.random.default_rng(0)
    layers = [LayerInfo("patch_embed.proj", "conv", 1536, 75264, fixed_bits=8)]
    for b in range(2):
        layers += [LayerInfo(f"blocks.{b}.attn.qkv", "linear", 27936, 1396800),
                   LayerInfo(f"blocks.{b}.attn.matmul_qk", "matmul", 0, 240000),
                   LayerInfo(f"blocks.{b}.attn.matmul_av", "matmul", 0, 240000),
                   LayerInfo(f"blocks.{b}.mlp.fc1", "linear", 18624, 931200)]
    layers.append(LayerInfo("head", "linear", 970, 960, fixed_bits=8))
    base = np.array([2.0 ** (-b) for b in BITS])
    ws = rng.uniform(0.5, 2, (len(layers), 1)) * base
    ws[[l.kind == "matmul" for l in layers]] = 0.0
    return Profile(layers, BITS, importance=rng.uniform(0.1, 1, len(layers)), weight_sensitivity=ws,
                   act_sensitivity=rng.uniform(0.5, 2, (len(layers), 1)) * base, metadata={"model": "synthetic"})


@pytest.fixture()
def profile_path(tmp_path):
    return _profile().save(tmp_path / "profile.json")


def _error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_solve_writes_a_plan_within_budget(profile_path, tmp_path, capsys):
    out = tmp_path / "plans" / "plan.json"
    assert main(["solve", str(profile_path), "--budget", "W4A4", "--solver", "scipy", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "blocks.1.mlp.fc1" in stdout and "pinned" in stdout and f"wrote {out}" in stdout
    plan = Plan.load(out)
    profile = Profile.load(profile_path)
    assert plan.names == profile.names
    assert plan.avg_w_bits <= 4 + 1e-9
    uniform_bops = sum(l.macs * 16 for l in profile.layers)
    assert plan.bops <= uniform_bops * (1 + 1e-9)
    assert plan.budget_satisfied is True
    assert plan.w_bits["head"] == 8 and plan.a_bits["patch_embed.proj"] == 8


def test_solve_keyword_budget_split_over_arguments(profile_path, tmp_path):
    out = tmp_path / "plan.json"
    assert main(["solve", str(profile_path), "--budget", "size_mb=0.05", "bops=2e8", "--out", str(out)]) == 0
    plan = Plan.load(out)
    assert plan.size_bytes <= 0.05e6 * (1 + 1e-9) and plan.bops <= 2e8 * (1 + 1e-9)


def test_infeasible_budget_names_constraint_and_minimum(profile_path, tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["solve", str(profile_path), "--budget", "W2A2", "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert "infeasible" in line and "avg_bits" in line and "smallest achievable" in line
    assert not out.exists() and list(tmp_path.iterdir()) == [profile_path]


@pytest.mark.parametrize("budget, expected", [("W4X", "bad budget"), ("-3", "bad budget '-3'"),
                                              ("size_mb=abc", "not a number")])
def test_bad_budget_is_one_line_exit_2(profile_path, capsys, budget, expected):
    assert main(["solve", str(profile_path), "--budget", budget]) == 2
    assert expected in _error_line(capsys)


def test_missing_and_malformed_profile(tmp_path, capsys):
    assert main(["solve", str(tmp_path / "nope.json"), "--budget", "3"]) == 2
    assert "does not exist" in _error_line(capsys)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["compare", str(bad)]) == 2
    assert "not valid JSON" in _error_line(capsys)


def test_compare_table_and_files(profile_path, tmp_path, capsys):
    out = tmp_path / "cmp.json"
    rc = main(["compare", str(profile_path), "--budgets", "3,4", "W6A6", "--solvers", "scipy,greedy", "--out", str(out)])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert stdout.count("scipy") == 3 and "gap" in stdout
    table = json.loads(out.read_text())
    assert [(r["budget"], r["solver"]) for r in table["rows"]] == [
        (b, s) for b in ("W3A3", "W4A4", "W6A6") for s in ("scipy", "greedy")]
    scipy_rows = [r for r in table["rows"] if r["solver"] == "scipy"]
    assert all(r["status"] == "optimal" and r["gap"] == pytest.approx(0, abs=1e-9) for r in scipy_rows)
    assert (tmp_path / "cmp.md").read_text().startswith("### Solvers x budgets")


def test_compare_unknown_solver(profile_path, capsys):
    assert main(["compare", str(profile_path), "--solvers", "scipy,nosuch"]) == 2
    assert "unknown solver 'nosuch'" in _error_line(capsys)


def test_usage_errors_are_one_line(profile_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["solve", str(profile_path)])
    assert exc.value.code == 2
    line = _error_line(capsys)
    assert "--budget" in line and "--help" in line
    with pytest.raises(SystemExit) as exc:
        main(["profile", "--model", "fmnist_vit", "--bits", "2,x"])
    assert exc.value.code == 2 and "bits must be" in _error_line(capsys)
    assert main(["demo", "--bits", "2,4,8", "--budgets", "3,4"]) == 2
    assert "budgets [3] are not among the candidate bits [2, 4, 8]" in _error_line(capsys)


@settings(max_examples=30, deadline=None)
@given(st.floats(0.01, 1e3), st.floats(1e3, 1e12), st.sampled_from([" ", ",", ", "]))
def test_keyword_budget_separators_are_equivalent(size_mb, bops, sep):
    expected = Budget(size_mb=size_mb, bops=bops)
    assert parse_budget([f"size_mb={size_mb!r}", f"bops={bops!r}"]) == expected
    assert parse_budget(f"size_mb={size_mb!r}{sep}bops={bops!r}") == expected


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 16), min_size=1, max_size=5))
def test_budget_list_matches_shorthands(bits):
    parsed = parse_budget_list([",".join(map(str, bits))])
    assert parsed == [Budget.parse(float(b)) for b in bits]


def test_parse_budget_rejects_empty():
    with pytest.raises(BudgetParseError, match="empty budget"):
        parse_budget([" "])


def _run(*args, **kw):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, **kw)


def test_module_entry_point_and_torch_free_solve(profile_path):
    """`python -m mixqvit` works, errors exit 2 without a traceback, and `solve` never loads torch."""
    r = _run("-m", "mixqvit", "solve", str(profile_path.parent / "missing.json"), "--budget", "3")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"mixqvit solve: error: profile file {profile_path.parent / 'missing.json'} does not exist"
    code = ("import sys; from mixqvit.cli import main; "
            f"rc = main(['solve', {str(profile_path)!r}, '--budget', '3']); "
            "print('TORCH', 'torch' in sys.modules, rc)")
    r = _run("-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "TORCH False 0"


def test_help_everywhere(capsys):
    for argv in (["--help"], ["solve", "--help"], ["compare", "--help"], ["profile", "--help"],
                 ["quantize", "--help"], ["qat", "--help"], ["demo", "--help"], ["train", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        assert "usage: mixqvit" in capsys.readouterr().out
