"""``mpidecent info`` measures whether passive-target RMA progresses without the target (async gossip)."""

import pytest

from cli import mpidecent


@pytest.mark.timeout(120)
def test_info_reports_passive_target_progress():
    result = mpidecent("info", ranks=2)
    assert result.returncode == 0, result.stderr
    line = next(l for l in result.stdout.splitlines() if l.startswith("passive-target progress"))
    verdict = line.split()[2]
    assert verdict in ("yes", "NO") and "while the target sleeps 200 ms outside MPI" in line
