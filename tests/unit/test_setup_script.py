"""scripts/setup.sh: the cheap checks (syntax, knob validation) that need no fresh machine.

A full set-up is what `make test` itself runs first; these only guard the script's own text.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SETUP = Path(__file__).resolve().parents[2] / "scripts" / "setup.sh"


def test_setup_script_parses():
    subprocess.run(["bash", "-n", str(SETUP)], check=True)


def test_unknown_mpi4py_mode_is_refused_before_anything_runs(tmp_path):
    # Validated right after the interpreter check: no venv, cache or apt is touched.
    env = dict(os.environ, MPIDECENT_MPI4PY="wheel", XDG_CACHE_HOME=str(tmp_path / "cache"))
    r = subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "MPIDECENT_MPI4PY=wheel: expected auto, binary or source" in r.stderr
    assert not (tmp_path / "cache").exists()


def test_documented_knobs_are_the_ones_the_script_reads():
    text = SETUP.read_text()
    for knob in ("MPIDECENT_MPI4PY", "MPIDECENT_NO_APT", "MPIDECENT_FORCE", "MPIDECENT_VERBOSE"):
        assert f"#   {knob}=" in text, knob          # in the header
        assert f"${{{knob}:-" in text, knob         # and read with a default
