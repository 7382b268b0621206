"""Profile and LayerInfo: construction, JSON round trip, atomic save, and one test per defect.

Each malformed-input test checks that the error is a `ProfileError` and that its message names
the offending field, so a user reading it knows what to fix.
"""
from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
from hypothesis import given

from allocator import FORMAT_VERSION, LayerInfo, Profile, ProfileError
from allocator_helpers import profiles, quick, tiny_profile


@pytest.fixture
def good() -> dict:
    return tiny_profile().to_dict()


def load_dict(tmp_path, data) -> Profile:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    return Profile.load(path)


def expect_defect(tmp_path, data, *fragments) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        load_dict(tmp_path, data)
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in error message:\n{msg}"
    assert "p.json" in msg  # the file is named
    return info.value


# ---- happy path ---------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    p = tiny_profile()
    p.metadata["model"] = "tiny"
    path = p.save(tmp_path / "profile.json")
    q = Profile.load(path)
    assert q == p
    assert q.names == p.names and q.bits == (2, 4, 8)
    np.testing.assert_array_equal(q.act_sensitivity, p.act_sensitivity)
    assert json.loads(path.read_text())["format_version"] == FORMAT_VERSION


@quick
@given(profiles())
def test_random_profiles_round_trip_through_json(tmp_path_factory, profile):
    path = tmp_path_factory.mktemp("rt") / "p.json"
    profile.save(path)
    again = Profile.load(path)
    assert again == profile
    assert again.to_dict() == profile.to_dict()
    assert Profile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile


def test_tables_are_read_only_copies():
    ws = tiny_profile().weight_sensitivity.copy()
    p = Profile(tiny_profile().layers, (2, 4, 8), weight_sensitivity=ws)
    ws[1, 0] = 123.0
    assert p.weight_sensitivity[1, 0] != 123.0
    with pytest.raises(ValueError):
        p.weight_sensitivity[1, 0] = 5.0


def test_profile_attributes_and_index():
    p = tiny_profile()
    assert len(p) == 5 and p.index("blk.fc") == 3
    assert p.total_params == 300 + 900 + 1200 + 100
    assert p.has_act_choices and not tiny_profile(act=False).has_act_choices
    with pytest.raises(KeyError, match="did you mean"):
        p.index("blk.fcc")


def test_cost_tables_accept_weight_only_and_pair_shapes():
    base = tiny_profile()
    L = len(base.layers)
    p = Profile(base.layers, base.bits, cost_tables={"latency": np.ones((L, 3)), "energy": np.ones((L, 9))})
    assert p.cost_tables["latency"].shape == (L, 3) and p.cost_tables["energy"].shape == (L, 9)


# ---- atomic save ----------------------------------------------------------------------------

def test_save_failure_leaves_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "profile.json"
    tiny_profile(seed=1).save(path)
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        tiny_profile(seed=2).save(path)
    assert path.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["profile.json"]


def test_save_never_writes_partial_file_when_serialisation_fails(tmp_path):
    p = tiny_profile()
    p.metadata["bad"] = float("nan")  # bypasses validation after construction
    path = tmp_path / "profile.json"
    with pytest.raises(ValueError, match="non-finite"):
        p.save(path)
    assert list(tmp_path.iterdir()) == []


def test_saved_file_gets_normal_permissions(tmp_path):
    path = tiny_profile().save(tmp_path / "p.json")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# ---- one test per defect --------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(ProfileError, match="cannot read"):
        Profile.load(tmp_path / "absent.json")


def test_invalid_json_syntax(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"format_version": 1,')
    with pytest.raises(ProfileError, match="not valid JSON"):
        Profile.load(path)


def test_not_an_object(tmp_path):
    expect_defect(tmp_path, [1, 2], "JSON object")


def test_missing_format_version(tmp_path, good):
    del good["format_version"]
    expect_defect(tmp_path, good, "missing field 'format_version'")


def test_unknown_format_version(tmp_path, good):
    good["format_version"] = 99
    expect_defect(tmp_path, good, "unknown format_version 99", "reads format_version 1")


def test_missing_top_level_field(tmp_path, good):
    del good["bits"]
    expect_defect(tmp_path, good, "missing field 'bits'")


def test_unknown_top_level_field(tmp_path, good):
    good["weight_sensitivty"] = good["weight_sensitivity"]
    expect_defect(tmp_path, good, "unknown field(s) ['weight_sensitivty']", "known fields")


def test_missing_layer_field(tmp_path, good):
    del good["layers"][1]["macs"]
    expect_defect(tmp_path, good, "layers[1] ('blk.qkv')", "missing field(s) ['macs']")


def test_unknown_kind(tmp_path, good):
    good["layers"][1]["kind"] = "attention"
    expect_defect(tmp_path, good, "unknown kind 'attention'", "'linear', 'conv', 'matmul'")


def test_duplicate_layer_names(tmp_path, good):
    good["layers"][3]["name"] = "blk.qkv"
    expect_defect(tmp_path, good, "duplicate layer name 'blk.qkv'", "layers[1]", "layers[3]")


def test_negative_params(tmp_path, good):
    good["layers"][1]["params"] = -5
    expect_defect(tmp_path, good, "params must be >= 0, got -5")


def test_non_integer_macs(tmp_path, good):
    good["layers"][1]["macs"] = 10.5
    expect_defect(tmp_path, good, "macs must be an integer count, got 10.5")


def test_matmul_with_params(tmp_path, good):
    good["layers"][2]["params"] = 10
    expect_defect(tmp_path, good, "matmul layer has no weights, so params must be 0")


@pytest.mark.parametrize("bad", [0, -2, 2.5, "4", True])
def test_bits_not_positive_ints(tmp_path, good, bad):
    good["bits"] = [bad, 8]
    expect_defect(tmp_path, good, "bits[0]")


def test_bits_not_increasing(tmp_path, good):
    good["bits"] = [4, 2, 8]
    expect_defect(tmp_path, good, "strictly increasing", "[4, 2, 8]")


def test_bits_empty(tmp_path, good):
    good["bits"] = []
    expect_defect(tmp_path, good, "bits must be a non-empty list")


@pytest.mark.parametrize("bad", [0, 33, 4.0, "8"])
def test_fixed_bits_out_of_range(tmp_path, good, bad):
    good["layers"][0]["fixed_bits"] = bad
    expect_defect(tmp_path, good, "layers[0] ('embed'): fixed_bits")


def test_sensitivity_wrong_shape(tmp_path, good):
    good["weight_sensitivity"] = [row[:2] for row in good["weight_sensitivity"]]
    expect_defect(tmp_path, good, "weight_sensitivity has shape (5, 2), expected (5, 3)")


def test_sensitivity_ragged(tmp_path, good):
    good["act_sensitivity"][1] = good["act_sensitivity"][1][:1]
    expect_defect(tmp_path, good, "act_sensitivity is ragged")


def test_importance_wrong_length(tmp_path, good):
    good["importance"] = good["importance"][:-1]
    expect_defect(tmp_path, good, "importance has shape (4,), expected (5,)")


def test_nan_entry(tmp_path, good):
    good["weight_sensitivity"][3][1] = float("nan")  # json writes NaN, which Python's json reads
    expect_defect(tmp_path, good, "weight_sensitivity has 1 NaN entry", "[3, 1]", "'blk.fc'", "4 bits")


def test_infinite_entry(tmp_path, good):
    good["act_sensitivity"][0][0] = float("inf")
    expect_defect(tmp_path, good, "act_sensitivity has 1 infinite entry", "'embed'")


def test_negative_entry(tmp_path, good):
    good["importance"][4] = -0.5
    expect_defect(tmp_path, good, "importance has 1 negative entry", "'head'")


def test_string_entry(tmp_path, good):
    good["act_sensitivity"][1][0] = "0.5"
    expect_defect(tmp_path, good, "act_sensitivity must be a list of lists of numbers")


def test_null_entry(tmp_path, good):
    good["importance"][0] = None
    expect_defect(tmp_path, good, "importance must be a list of numbers")


def test_importance_all_zero(tmp_path, good):
    good["importance"] = [0.0] * 5
    expect_defect(tmp_path, good, "importance is all zero")


def test_matmul_weight_row_not_zero(tmp_path, good):
    good["weight_sensitivity"][2] = [0.1, 0.0, 0.0]
    expect_defect(tmp_path, good, "weight_sensitivity row of matmul layer 'blk.matmul_qk' must be 0")


def test_cost_table_wrong_shape(tmp_path, good):
    good["cost_tables"] = {"latency": [[1.0, 2.0]] * 5}
    expect_defect(tmp_path, good, "cost_tables['latency'] has shape (5, 2), expected (5, 3) or (5, 9)")


def test_cost_table_negative(tmp_path, good):
    good["cost_tables"] = {"latency": [[1.0, 2.0, -3.0]] * 5}
    expect_defect(tmp_path, good, "cost_tables['latency'] has 5 negative entries")


def test_cost_table_reserved_name(tmp_path, good):
    good["cost_tables"] = {"bops": [[1.0, 2.0, 3.0]] * 5}
    expect_defect(tmp_path, good, "cost table name 'bops' is reserved")


def test_group_mixing_matmul_and_linear(tmp_path, good):
    good["layers"][1]["group"] = "g"
    good["layers"][2]["group"] = "g"
    expect_defect(tmp_path, good, "group 'g' mixes matmul and weighted layers")


def test_group_with_conflicting_pins(tmp_path, good):
    good["layers"][0]["group"] = "g"
    good["layers"][4]["group"] = "g"
    good["layers"][4]["fixed_bits"] = 4
    expect_defect(tmp_path, good, "group 'g' pins its layers to different bits [4, 8]")


def test_metadata_not_an_object(tmp_path, good):
    good["metadata"] = [1]
    expect_defect(tmp_path, good, "metadata must be a JSON object")


def test_every_defect_reported_at_once(tmp_path, good):
    bad = copy.deepcopy(good)
    bad["weight_sensitivity"][1][0] = -1.0
    bad["act_sensitivity"][1][0] = float("nan")
    bad["baseline_bits"] = 0
    err = expect_defect(tmp_path, bad, "3 defects", "weight_sensitivity", "act_sensitivity", "baseline_bits")
    assert len(err.defects) == 3


def test_layerinfo_validates_on_construction():
    with pytest.raises(ProfileError, match="unknown kind 'dense'"):
        LayerInfo("x", "dense", 10, 10)
    with pytest.raises(ProfileError, match="fixed_bits must be between 2 and 16"):
        LayerInfo("x", "linear", 10, 10, fixed_bits=64)


def test_profile_constructor_reports_defects_like_loader():
    layers = tiny_profile().layers
    with pytest.raises(ProfileError, match="weight_sensitivity has shape"):
        Profile(layers, (2, 4, 8), weight_sensitivity=np.zeros((4, 3)))
    with pytest.raises(ProfileError, match="layers is empty"):
        Profile([], (4, 8))
