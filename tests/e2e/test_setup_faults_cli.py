"""End to end under mpirun: bad data found after set-up (NaN features in one rank's rows of an HDF5
file, read in parallel or, by a master/worker code, partition by partition) ends every rank with ONE
line in all and exit status 2, without Open MPI's MPI_ABORT banner."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from cli import mpidecent

JOB = """
[run]
name = "nan"
steps = 4
log_every = 2
[topology]
kind = "ring"
[algorithm]
name = "dpsgd"
lr = 0.1
[data]
name = "hdf5"
path = "nan.h5"
test_features_dataset = "test_features"
test_labels_dataset = "test_labels"
partition = "sorted"
batch_size = 4
task = "binary"
[model]
name = "logistic"
"""

CODED = """
[topology]
kind = "star"
[algorithm]
name = "uncoded"
lr = 0.1
"""


def _write(path):
    """80 training rows sorted by label (class 1 last) with NaN in two rows near the end: in the last
    rank's shard only (sorted partition); a clean test set of its own."""
    rng = np.random.default_rng(0)
    y = (np.arange(80) >= 40).astype(np.int64)
    x = rng.standard_normal((80, 3)) + y[:, None]
    x[[74, 77], 1] = np.nan
    with h5py.File(path, "w") as f:
        f["features"], f["labels"] = x, y
        f["test_features"], f["test_labels"] = rng.standard_normal((8, 3)), np.arange(8) % 2


def _assert_one_line(result, start):
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.startswith("mpidecent:")]
    assert result.returncode == 2, output
    assert len(lines) == 1 and lines[0].startswith(start), output
    assert "MPI_ABORT" not in output and "Traceback" not in output, output


@pytest.mark.timeout(240)
def test_nan_features_in_one_ranks_rows_end_the_run_with_one_line_and_status_2(tmp_path):
    _write(tmp_path / "nan.h5")
    job = tmp_path / "job.toml"
    job.write_text(JOB)
    result = mpidecent("run", str(job), "--out", str(tmp_path / "a.h5"), ranks=4)
    _assert_one_line(result, "mpidecent: error: [data] features_dataset = 'features' in 'nan.h5' holds "
                             "NaN or infinite values (first at sample 74); every feature must be finite")
    # a master/worker code reads its partitions one by one, without a collective read: the same
    coded = tmp_path / "coded.toml"
    coded.write_text(JOB.replace('[topology]\nkind = "ring"\n[algorithm]\nname = "dpsgd"\nlr = 0.1\n', CODED)
                     .replace("batch_size = 4", "batch_size = 0"))
    result = mpidecent("run", str(coded), "--out", str(tmp_path / "b.h5"), ranks=4)
    _assert_one_line(result, "mpidecent: error: [data] features_dataset = 'features' in 'nan.h5' holds "
                             "NaN or infinite values (first at sample 74)")
