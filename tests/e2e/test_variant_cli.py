"""``mpidecent run JOB.toml --variant NAME_OR_INDEX``: one [[sweep]] variant (a Slurm array task's share)."""

from __future__ import annotations

import pytest

from cli import ROOT, mpidecent
from mpidecent.cli.run import select_variant
from mpidecent.config import load_text_jobs
from mpidecent.errors import JobError

QUICKSTART = ROOT / "jobs" / "quickstart.toml"
SWEEP = ('\n[[sweep]]\nname = "quantized"\nset = {}\n\n[[sweep]]\nname = "exact"\n'
         'set = { "algorithm.name" = "push_sum", "compression.name" = "identity" }\n')


def _jobs(sweep: str = SWEEP):
    return load_text_jobs(QUICKSTART.read_text() + sweep, "sweep.toml", default_name="sweep")


@pytest.mark.parametrize("wanted, variant", [("quantized", "quantized"), ("exact", "exact"), ("0", "quantized"),
                                             ("1", "exact")])
def test_a_variant_is_chosen_by_name_or_by_index(wanted, variant):
    job = select_variant(_jobs(), wanted, "sweep.toml")
    assert job.variant == variant and job.run["out"] == f"runs/quickstart/{variant}.h5"


def test_a_name_that_looks_like_an_index_is_a_name_first():
    jobs = _jobs('\n[[sweep]]\nname = "a"\nset = {}\n\n[[sweep]]\nname = "0"\nset = {}\n')
    assert select_variant(jobs, "0", "s.toml").variant == "0"
    assert select_variant(jobs, "1", "s.toml").variant == "0"


@pytest.mark.parametrize("wanted, message", [
    ("2", "--variant 2: index out of range, sweep.toml has 2 [[sweep]] variant(s) "
          "(names: quantized, exact; indexes: 0-1)"),
    ("-1", "--variant -1: index out of range, sweep.toml has 2 [[sweep]] variant(s) "
           "(names: quantized, exact; indexes: 0-1)"),
    ("exakt", "--variant exakt: no [[sweep]] variant of that name in sweep.toml (names: quantized, exact; "
              "indexes: 0-1)"),
])
def test_unknown_variants_name_the_valid_ones(wanted, message):
    with pytest.raises(JobError) as err:
        select_variant(_jobs(), wanted, "sweep.toml")
    assert str(err.value) == message


def test_a_job_without_sweep_has_no_variants():
    with pytest.raises(JobError, match=r"^--variant 0: quickstart.toml has no \[\[sweep\]\] variants \(run it "
                                       r"without --variant\)$"):
        select_variant(load_text_jobs(QUICKSTART.read_text()), "0", "quickstart.toml")


@pytest.mark.timeout(300)
def test_variant_runs_only_that_variant_and_writes_the_sweeps_file(tmp_path):
    job = tmp_path / "sweep.toml"
    job.write_text(QUICKSTART.read_text() + SWEEP)
    out = tmp_path / "res"
    result = mpidecent("run", str(job), "--variant", "1", "--set", "run.steps=20", "--set", "run.log_every=10",
                       "--out", str(out), ranks=4)
    assert result.returncode == 0, result.stderr
    assert {p.name.split(".")[0] for p in out.iterdir()} == {"exact"} and (out / "exact.h5").exists()
    assert "quickstart-exact" in result.stdout and "quickstart-quantized" not in result.stdout

    result = mpidecent("run", str(job), "--variant", "5", "--out", str(tmp_path / "bad"), ranks=4, timeout=120)
    assert result.returncode == 2, result.stderr
    mine = [line for line in result.stderr.splitlines() if line.startswith("mpidecent:")]
    assert mine == [f"mpidecent: error: --variant 5: index out of range, {job} has 2 [[sweep]] variant(s) "
                    "(names: quantized, exact; indexes: 0-1)"], result.stderr
    assert not (tmp_path / "bad").exists()
