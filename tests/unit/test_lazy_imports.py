"""A bad job fails before the heavy imports (issue 15, item 4): ``mpidecent run`` validates a job on every
rank without torch, numba, matplotlib or h5py, so that a typo costs well under a second per rank instead
of every rank importing torch first. One subprocess (an MPI singleton, as ``mpidecent run`` without
mpirun) runs the CLI on a series of bad jobs, then reports which heavy modules it had imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "jobs/quickstart.toml")
# h5py too: without --resume and without an HDF5 data file, validation reads no HDF5 file.
HEAVY = ("torch", "numba", "matplotlib", "h5py")

# Each argv through the CLI's main in one process (stderr captured per call), then the heavy modules seen.
PROBE = """
import contextlib, io, json, sys
from mpidecent.cli import main
calls = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as stop:  # argparse's errors
            code = stop.code
    calls.append([code, err.getvalue()])
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2])))
print(json.dumps({"calls": calls, "heavy": heavy}))
"""


def test_bad_jobs_fail_in_one_line_before_torch_numba_matplotlib_and_h5py(tmp_path):
    text = Path(QUICKSTART).read_text()
    syntax = tmp_path / "syntax.toml"
    syntax.write_text(text.replace("[model]", "[model"))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text(text.replace("chords = 4", "chords = 4\nbogus = 1"))
    existing = tmp_path / "existing.h5"
    existing.write_text("an earlier file")
    fresh = str(tmp_path / "fresh.h5")
    cases = [  # (argv after "run", what the one line names)
        ([str(syntax)], "invalid TOML"),
        ([str(unknown)], "unknown key 'bogus'"),
        ([QUICKSTART, "--set", "algorithm.lr=-1", "--out", fresh], "[algorithm] lr must be ≥ 0"),
        ([QUICKSTART, "--set", "nosuch.key=1", "--out", fresh], "unknown section [nosuch]"),
        ([QUICKSTART, "--set", "algorithm.lr", "--out", fresh], "--set 'algorithm.lr'"),
        ([QUICKSTART, "--out", fresh], "this launch has 1 rank"),  # chord_ring needs ≥ 3: the graph vs the ranks
        ([QUICKSTART, "--out", str(existing)], "already exists"),
        ([QUICKSTART, "--resume", "--force"], "give one of them"),
        ([QUICKSTART, "--no-such-flag"], "unrecognized arguments"),
    ]
    argvs = [["run", *argv] for argv, _ in cases]
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argvs), json.dumps(HEAVY)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    for (argv, named), (code, stderr) in zip(cases, found["calls"]):
        lines = stderr.splitlines()
        assert code == 2 and len(lines) == 1, (argv, code, stderr)
        assert lines[0].startswith("mpidecent: error: ") and named in lines[0], (argv, lines[0])
    assert found["heavy"] == [], f"validation imported {found['heavy']}: keep these imports inside the functions " \
                                 "that run after validation (see cli/run.py)"
    assert existing.read_text() == "an earlier file" and not Path(fresh).exists()  # nothing written
