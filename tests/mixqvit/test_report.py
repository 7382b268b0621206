"""Result tables: the text, Markdown and JSON renderings agree, and files are written whole."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator.atomic import atomic_path, write_json
from mixqvit.report import Column, Table, format_cell, json_safe


def _table():
    cols = [Column("method", "method"), Column("bits", "avg bits", ".2f"), Column("acc", "top-1", ".4f")]
    rows = [
        {"method": "float", "bits": 32.0, "acc": 0.9123},
        {"method": "uniform W4A4", "bits": 4.0, "acc": 0.85},
        {"method": "mixed | W4A4", "bits": 3.987, "acc": None},
    ]
    return Table("Demo", cols, rows, notes=["BOPs in GBOPs"])


def test_text_rendering_aligns_and_formats():
    text = _table().to_text()
    lines = text.splitlines()
    assert lines[0] == "Demo"
    assert lines[1].split() == ["method", "avg", "bits", "top-1"]
    assert "32.00" in lines[3] and "0.9123" in lines[3]
    assert lines[5].endswith("-")  # None -> "-"
    # numeric columns are right-aligned: all data lines have the same length up to the last column
    assert len({len(line) for line in lines[3:5]}) == 1
    assert lines[-1] == "BOPs in GBOPs"


def test_markdown_has_header_rule_rows_and_escapes_pipes():
    md = _table().to_markdown()
    lines = md.splitlines()
    assert lines[0] == "### Demo"
    assert lines[2] == "| method | avg bits | top-1 |"
    assert lines[3] == "|---|---:|---:|"
    assert lines[6] == "| mixed \\| W4A4 | 3.99 | - |"
    assert "- BOPs in GBOPs" in lines


def test_write_produces_valid_json_and_markdown(tmp_path):
    json_path, md_path = _table().write(tmp_path / "report", "demo")
    data = json.loads(json_path.read_text())
    assert data["rows"][1] == {"method": "uniform W4A4", "bits": 4.0, "acc": 0.85}
    assert Table.from_dict(data).to_markdown() == md_path.read_text()
    assert not list((tmp_path / "report").glob("*.tmp"))


def test_json_safe_converts_numpy_and_non_finite():
    out = json_safe({"a": np.float32(1.5), "b": np.array([1, 2]), "c": float("nan"), "d": (np.inf,)})
    assert out == {"a": 1.5, "b": [1, 2], "c": None, "d": [None]}
    json.dumps(out, allow_nan=False)


def test_duplicate_column_keys_rejected():
    with pytest.raises(ValueError, match="unique"):
        Table("t", [Column("a", "A"), Column("a", "B")])


def test_from_dict_rejects_non_table():
    with pytest.raises(ValueError, match="not a table"):
        Table.from_dict({"rows": []})


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    # unserialisable content fails before the target is touched
    target.write_text("old")
    with pytest.raises(ValueError):
        write_json(target, {"x": float("nan")})
    assert target.read_text() == "old"


cell_values = st.one_of(
    st.none(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=8),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.fixed_dictionaries({"a": cell_values, "b": cell_values}), max_size=6))
def test_round_trip_and_shape_invariants(rows):
    """Any table renders to one Markdown line per row and survives a JSON round trip."""
    table = Table("t", [Column("a", "A", ".3g"), Column("b", "B")], rows)
    md_lines = table.to_markdown().splitlines()
    assert len(md_lines) == 4 + len(rows)
    assert all(line.startswith("|") and line.endswith("|") for line in md_lines[2:])
    d = json.loads(json.dumps(table.to_dict(), allow_nan=False))
    back = Table.from_dict(d)
    for r_in, r_out in zip(rows, back.rows):
        for k in "ab":
            v = r_in[k]
            if isinstance(v, float) and not math.isfinite(v):
                assert r_out[k] is None
            else:
                assert r_out[k] == v
    assert len(table.to_text().splitlines()) == 3 + len(rows)


def test_format_cell():
    assert format_cell(None) == "-"
    assert format_cell(True) == "yes"
    assert format_cell(3.14159, ".2f") == "3.14"
    assert format_cell(1234567, ",d") == "1,234,567"
    assert format_cell(2.0, "d") == "2"
    assert format_cell(float("nan"), ".2f") == "-"
