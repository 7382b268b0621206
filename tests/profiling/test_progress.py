"""quant.progress: periodic lines with an ETA when the stream is not a terminal."""
from __future__ import annotations

import io
import re

from quant.progress import Progress, format_seconds


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_log_lines_every_interval_and_fraction_with_eta():
    out, clock = io.StringIO(), Clock()
    with Progress(100, "sensitivity", "pairs", every_s=30, every_frac=0.25, stream=out, clock=clock) as p:
        for _ in range(100):
            clock.t += 1.0  # one second per pair
            p.update(1)
    lines = out.getvalue().splitlines()
    # every 25% (25 s < 30 s), the last one at 100% without an ETA
    assert [re.match(r"sensitivity: (\d+)/100 pairs", ln).group(1) for ln in lines] == ["25", "50", "75", "100"]
    assert "ETA 1m15s" in lines[0] and "25s elapsed" in lines[0]
    assert "ETA" not in lines[-1]


def test_time_interval_triggers_before_the_fraction():
    out, clock = io.StringIO(), Clock()
    p = Progress(1000, "qat", "steps", every_s=30, every_frac=0.5, stream=out, clock=clock)
    for _ in range(40):
        clock.t += 1.0
        p.update(1, loss="0.5")
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qat: 30/1000 steps (3%) 30s elapsed, ETA 16m10s")
    assert lines[0].endswith("loss=0.5")


def test_disabled_is_silent_and_format():
    out = io.StringIO()
    p = Progress(10, "x", enabled=False, stream=out)
    p.update(10)
    assert out.getvalue() == "" and p.n == 10
    assert [format_seconds(s) for s in (5, 192, 7500)] == ["5s", "3m12s", "2h05m"]
