"""Result tables: one in-memory :class:`Table`, three renderings (terminal text, Markdown, JSON).

The CLI prints a table, the demo writes the same table to ``report/`` as JSON (for programs)
and Markdown (for people and the README).  Keeping one table object with three renderers is
what guarantees the printed numbers and the saved ones never disagree.

Cells hold raw values (numbers, strings, ``None``); each :class:`Column` carries the format used
for text and Markdown, while JSON keeps the raw values (NaN/inf become ``null`` so the file is
strict JSON).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from allocator.atomic import write_json, write_text

__all__ = ["Column", "Table", "format_cell", "json_safe"]


@dataclass(frozen=True)
class Column:
    """One column: ``key`` into each row dict, ``header`` shown to people, ``fmt`` a format spec.

    ``fmt`` is applied to numbers only (e.g. ``".2f"``, ``",d"``); ``None`` cells print as ``-``.
    Numeric columns are right-aligned in text output.
    """

    key: str
    header: str
    fmt: str = ""


def format_cell(value: Any, fmt: str = "") -> str:
    """Render one cell for text/Markdown: ``-`` for missing, ``fmt`` for numbers, ``str`` otherwise."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and not math.isfinite(value):
        return "-" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)) and fmt:
        if isinstance(value, float) and fmt.endswith("d"):
            value = int(round(value))
        return format(value, fmt)
    return str(value)


def json_safe(value: Any) -> Any:
    """Convert ``value`` to strict-JSON types: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalar/array
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _is_numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Table:
    """A titled table of rows (dicts keyed by column key) with optional notes under it."""

    title: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        keys = [c.key for c in self.columns]
        if len(set(keys)) != len(keys):
            raise ValueError(f"column keys must be unique, got {keys}")

    # -- renderings ------------------------------------------------------------------------
    def _cells(self) -> list[list[str]]:
        return [[format_cell(row.get(c.key), c.fmt) for c in self.columns] for row in self.rows]

    def _right_aligned(self) -> list[bool]:
        return [
            any(_is_numeric(row.get(c.key)) for row in self.rows)
            and all(_is_numeric(row.get(c.key)) or row.get(c.key) is None for row in self.rows)
            for c in self.columns
        ]

    def to_text(self) -> str:
        """Aligned plain text for a terminal: title, header, rule, rows, notes."""
        headers = [c.header for c in self.columns]
        cells = self._cells()
        widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
        right = self._right_aligned()

        def line(values: Sequence[str]) -> str:
            parts = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)]
            return "  ".join(parts).rstrip()

        out = [self.title, line(headers), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in cells]
        out += self.notes
        return "\n".join(out) + "\n"

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table under a ``###`` title, notes as a list below."""
        def esc(text: str) -> str:
            return text.replace("|", "\\|")

        right = self._right_aligned()
        out = [f"### {esc(self.title)}", ""]
        out.append("| " + " | ".join(esc(c.header) for c in self.columns) + " |")
        out.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
        out += ["| " + " | ".join(esc(v) for v in r) + " |" for r in self._cells()]
        if self.notes:
            out.append("")
            out += [f"- {esc(n)}" for n in self.notes]
        return "\n".join(out) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """Raw values for JSON: title, columns (key, header, fmt), rows, notes."""
        return json_safe({
            "title": self.title,
            "columns": [{"key": c.key, "header": c.header, "fmt": c.fmt} for c in self.columns],
            "rows": [{c.key: row.get(c.key) for c in self.columns} for row in self.rows],
            "notes": list(self.notes),
        })

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Table":
        """Inverse of :meth:`to_dict` (NaN/inf come back as None)."""
        try:
            columns = [Column(c["key"], c["header"], c.get("fmt", "")) for c in d["columns"]]
            return cls(str(d["title"]), columns, [dict(r) for r in d["rows"]], list(d.get("notes", [])))
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"not a table: expected keys 'title', 'columns' (with 'key' and 'header') and 'rows' ({exc!r})"
            ) from None

    # -- files -----------------------------------------------------------------------------
    def write(self, directory: str | os.PathLike, stem: str) -> tuple[Path, Path]:
        """Write ``stem.json`` and ``stem.md`` into ``directory`` (atomically); return both paths."""
        directory = Path(directory)
        json_path = write_json(directory / f"{stem}.json", self.to_dict())
        md_path = write_text(directory / f"{stem}.md", self.to_markdown())
        return json_path, md_path



# -- the tables the CLI and the demo write -----------------------------------------------------
COMPARE_COLUMNS = [
    Column("budget", "budget"), Column("solver", "solver"), Column("objective", "objective", ".6g"),
    Column("gap", "gap", ".3%"), Column("status", "status"), Column("time_s", "time (s)", ".3f"),
    Column("avg_w_bits", "avg W bits", ".3f"), Column("gbops", "GBOPs", ".4g"), Column("error", "error"),
]


def compare_table(rows: Sequence[Mapping[str, Any]], title: str = "Solvers x budgets") -> Table:
    """Table of ``allocator.compare_solvers`` rows (one per budget and solver); BOPs shown in GBOPs."""
    out = []
    for r in rows:
        row = dict(r)
        row["gbops"] = None if r.get("bops") is None else r["bops"] / 1e9
        out.append(row)
    return Table(title, list(COMPARE_COLUMNS), out)


DEMO_COLUMNS = [
    Column("model", "model"), Column("method", "method"), Column("budget", "budget"),
    Column("avg_w_bits", "avg W bits", ".2f"), Column("avg_a_bits", "avg A bits", ".2f"),
    Column("size_mb", "size (MB)", ".4f"), Column("gbops", "GBOPs", ".3f"), Column("top1", "top-1 (%)", ".2f"),
    Column("top1_rounded", "top-1 + rounding (%)", ".2f"),
    Column("calib_kl", "calib KL", ".4f"), Column("plan_source", "plan"),
    Column("solver", "solver"), Column("solve_time_s", "solve (s)", ".3f"),
]


def demo_table(rows: Sequence[Mapping[str, Any]], title: str, notes: Sequence[str] = ()) -> Table:
    """The demo's table: one row per (model, method, budget); ``top1`` and ``top1_rounded`` given as
    fractions, shown in %."""
    out = []
    for r in rows:
        row = dict(r)
        for key in ("top1", "top1_rounded"):
            if row.get(key) is not None:
                row[key] = 100.0 * row[key]
        out.append(row)
    return Table(title, list(DEMO_COLUMNS), out, list(notes))
