"""The shipped gradient-coding jobs at 7 ranks (master + 6 workers), end to end through the CLI and the
report's bit-budget query: property 3 of docs/algorithms/gradient-coding.md, and the SGC job."""

import json

import numpy as np
import pytest

from cli import ROOT, mpidecent
from mpidecent.io.reader import read_run

BUDGETS = (5e4, 1e5, 2e5, 3e5)


def _gaps_at_budgets(files) -> dict[str, list[float]]:
    """{run name: suboptimality (loss gap) at each of BUDGETS}, from `mpidecent report --json`."""
    args = [str(f) for f in files] + [a for b in BUDGETS for a in ("--budget", f"{b:g}")] + ["--json"]
    report = mpidecent("report", *args)
    assert report.returncode == 0, report.stderr
    runs = json.loads(report.stdout)["runs"]
    assert all(q["reached"] for r in runs for q in r["budgets"])
    return {r["run"].split("-", 1)[1]: [q["suboptimality"] for q in r["budgets"]] for r in runs}


@pytest.mark.timeout(300)
def test_one_bit_gradient_coding_wins_at_equal_uplink_bits(tmp_path):
    """Property 3: FRC s = 2 with two fixed stragglers per step, at equal uplink bits (all workers):
    1-bit GC reaches a loss gap ≥ 10× smaller than 32-bit GC at budgets ≤ 2e5 bits, and ≥ 3× smaller than
    uncoded 1-bit at every budget ≥ 5e4 bits."""
    out = tmp_path / "gc"
    result = mpidecent("run", str(ROOT / "jobs/gradient_coding.toml"), "--out", str(out), "--quiet", ranks=7,
                       timeout=280)
    assert result.returncode == 0, result.stderr
    gaps = _gaps_at_budgets(sorted(out.glob("*.h5")))
    assert sorted(gaps) == ["gc-1bit", "gc-32bit", "uncoded-1bit", "uncoded-32bit"]
    one_bit, full, uncoded = (np.array(gaps[k]) for k in ("gc-1bit", "gc-32bit", "uncoded-1bit"))
    small = np.array(BUDGETS) <= 2e5
    assert np.all(10 * one_bit[small] <= full[small]), gaps
    assert np.all(3 * one_bit <= uncoded), gaps
    # Both coded runs lost the same two workers every step (the same seeded draws), and the uplink is
    # exactly d + 32 = 53 bits per message for 1-bit and 32·d = 672 for float32.
    one, f32 = read_run(str(out / "gc-1bit.h5")), read_run(str(out / "gc-32bit.h5"))
    stragglers = one.events["stragglers"]
    assert stragglers.shape == (1500, 6) and np.all(stragglers.sum(axis=1) == 2)
    np.testing.assert_array_equal(f32.events["stragglers"], stragglers[:200])
    np.testing.assert_array_equal(one.rank("bits_sent")[-1][1:], (1500 - stragglers.sum(axis=0)) * 53)
    np.testing.assert_array_equal(f32.rank("bits_sent")[-1][1:], (200 - stragglers[:200].sum(axis=0)) * 672)


@pytest.mark.timeout(200)
def test_sgc_with_bernoulli_stragglers_is_unbiased_and_records_who_straggled(tmp_path):
    out = tmp_path / "sgc"
    result = mpidecent("run", str(ROOT / "jobs/sgc_bernoulli.toml"), "--out", str(out), "--quiet",
                       "--set", "run.steps=400", ranks=7, timeout=180)
    assert result.returncode == 0, result.stderr
    run = read_run(str(out / "sgc-1bit.h5"))
    stragglers, gap = run.events["stragglers"], run.glob("suboptimality")
    assert run.status == "completed"
    assert stragglers.shape == (400, 6)
    assert abs(stragglers.mean() - 0.2) < 0.03  # each worker misses a step with probability p = 0.2
    assert stragglers.sum(axis=1).max() > stragglers.sum(axis=1).min()  # a random number each step
    assert gap[-1] < 0.05 * gap[0]  # the unbiased estimate still descends
