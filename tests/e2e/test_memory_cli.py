"""End to end, on 2 ranks: a job too large for memory is refused in one line before anything is allocated,
and a QSGD bucket larger than the model is capped with a note (issue 15, item 3)."""

from __future__ import annotations

import pytest

from cli import mpidecent

TINY = """
[run]
steps = 20
log_every = 10

[topology]
kind = "complete"

[algorithm]
name = "quantized_push_sum"

[compression]
name = "qsgd"

[data]
name = "synthetic_logistic"
samples = 200
features = 5
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.mark.timeout(180)
def test_a_data_set_too_large_for_memory_ends_every_rank_with_one_line(tiny, tmp_path):
    out = tmp_path / "big.h5"
    result = mpidecent("run", str(tiny), "--set", "data.samples=1000000000", "--out", str(out), ranks=2,
                       timeout=120)
    assert result.returncode == 2, result.stderr
    mine = [line for line in result.stderr.splitlines() if line.startswith("mpidecent:")]
    assert len(mine) == 1 and mine[0].startswith("mpidecent: error: [data] samples = 1000000000 needs about ")
    assert "GiB per rank (data " in mine[0] and "available)" in mine[0]
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    assert not out.exists()


@pytest.mark.timeout(180)
def test_a_bucket_larger_than_the_model_is_capped_with_a_note(tiny, tmp_path):
    out = tmp_path / "capped.h5"
    result = mpidecent("run", str(tiny), "--set", "compression.bucket=100000", "--out", str(out), ranks=2)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("note: [compression] bucket = 100000 is larger than the model (d = 6): capped to "
                               "one bucket of 6 entries") == 1
    assert "tiny (completed, 20/20 steps)" in result.stdout and out.exists()
