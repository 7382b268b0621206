"""benchmarks.ptq_paired: the paired t-test by calibration draw behind the README's significance line."""
from __future__ import annotations

import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from benchmarks.ptq_paired import paired

accuracy = st.floats(0.80, 0.95, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(data=st.data(), draws=st.integers(2, 5), fits=st.integers(1, 3))
def test_paired_is_scipys_related_t_test_on_the_draw_means(data, draws, fits):
    """Methods are paired with the baseline draw by draw, a draw's top-1 being its mean over fit
    seeds; the statistic and p-value are scipy's ttest_rel on those means."""
    base = [data.draw(accuracy) for _ in range(draws)]
    ours = [[data.draw(accuracy) for _ in range(fits)] for _ in range(draws)]
    rows = [{"model": "m", "setting": "all", "bits": 4, "method": "repq", "calib_seed": s, "top1": base[s]}
            for s in range(draws)]
    rows += [{"model": "m", "setting": "all", "bits": 4, "method": "ours", "calib_seed": s, "top1": v}
             for s in range(draws) for v in ours[s]]
    rows.append({"model": "m", "setting": "all", "bits": 4, "method": "ours", "calib_seed": draws, "top1": 0.5})
    [entry] = paired(rows, "repq")  # the unpaired extra draw is left out
    means = [100 * statistics.mean(v) for v in ours]
    assert entry["draws"] == draws
    assert entry["difference"] == pytest.approx(statistics.mean(m - 100 * b for m, b in zip(means, base)), abs=1e-9)
    if statistics.stdev(m - 100 * b for m, b in zip(means, base)) > 1e-6:  # else scipy warns of cancellation
        reference = stats.ttest_rel(means, [100 * b for b in base])
        assert entry["t"] == pytest.approx(reference.statistic, rel=1e-6)
        assert entry["p"] == pytest.approx(reference.pvalue, rel=1e-6, abs=1e-12)
