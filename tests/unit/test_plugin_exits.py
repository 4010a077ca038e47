"""A plug-in that ends the process (sys.exit at import, in the factory or loader, in the model's forward)
is an error naming its key, not a silent exit 0 of one rank (tests/e2e/test_user_code_cli.py runs it under
mpirun)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpidecent import plugins
from mpidecent.errors import JobError


def _write(tmp_path, text: str, name: str = "user.py") -> str:
    (tmp_path / name).write_text(text)
    return str(tmp_path)


def test_a_module_that_exits_when_imported_is_refused_in_one_line(tmp_path):
    base = _write(tmp_path, "import sys\nsys.exit(0)  # a script that parses sys.argv\ndef load():\n    pass\n")
    with pytest.raises(JobError) as err:
        plugins.load("user.py:load", "[data] name", base)
    text = str(err.value)
    assert text.startswith("[data] name = 'user.py:load': importing ") and "called sys.exit(0)" in text
    assert "\n" not in text


def test_a_loader_or_factory_that_exits_when_called_is_refused_in_one_line(tmp_path):
    base = _write(tmp_path, "import sys\ndef load(rows):\n    sys.exit('usage: load ROWS')\n")
    fn = plugins.load("user.py:load", "[data] name", base)
    with pytest.raises(JobError) as err:
        plugins.call(fn, "[data] name", "user.py:load", {"rows": 3}, {})
    assert str(err.value) == ("[data] name = 'user.py:load' called sys.exit('usage: load ROWS') (a plug-in must "
                              "return, not end the process: e.g. a training script that parses sys.argv when "
                              "imported) when called with (rows)")


def test_an_exit_inside_user_code_after_set_up_names_the_plug_in():
    """``user_code`` wraps the model's forward, loss and backward in training and evaluation
    (learning/problems.py)."""

    class Quits(torch.nn.Module):
        def forward(self, x):
            raise SystemExit(3)

    with pytest.raises(JobError, match=r"^\[model\] name = 'nets.py:Quits' called sys.exit\(3\)"):
        with plugins.user_code("[model] name", "nets.py:Quits"):
            Quits()(torch.zeros(2, 3))
    with plugins.user_code("[model] name", "fine"):  # no exit: nothing changes
        assert np.isfinite(float(torch.nn.Linear(3, 1)(torch.zeros(1, 3)).sum().detach()))
