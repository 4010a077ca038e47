"""The set-up check's training step: what training does, once, on a throwaway batch, no trace left.

``check_model`` (``learning/problems.py``, every rank, before any collective) first runs the model
in eval mode; ``check_training_step`` then runs one training step as ``TorchObjective.loss_grad``
does: the model in train mode on a batch of the job's batch size (zero samples, valid input for any
model the eval check accepted), the job's loss and a backward pass. A model that only fails there
(e.g. BatchNorm on a batch of one sample) is a one-line ``JobError`` naming ``[model] name`` (or a
user's ``[model] loss``) at set-up instead of a traceback in the first step.

No trace: the module's parameters, buffers (BatchNorm running statistics, num_batches_tracked),
``.grad`` and train/eval mode, and every random state a step may consume (torch's global generator,
numpy's global generator, Python's ``random``) are restored exactly afterwards. mpidecent's own
draws come from generators built from (seed, rank, step, purpose) (``rng.py``), which hold no state
to restore. Cost: one forward and backward pass of one batch.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from mpidecent.errors import JobError
from mpidecent.plugins import is_import_path

# Full-batch training (batch_size = 0) trains on the whole shard, whose size the set-up check does
# not know: it checks a batch of this many samples (enough for BatchNorm in train mode).
FULL_BATCH_CHECK = 2


@contextlib.contextmanager
def leaves_no_trace(module: torch.nn.Module) -> Iterator[None]:
    """Around a trial step of ``module``: afterwards its parameters, buffers, gradients (a ``.grad``
    that was None is None again; one that was a tensor keeps its storage, e.g. a flat-buffer view)
    and mode are as before, and so are torch's, numpy's and Python's global random states."""
    torch_state, numpy_state, python_state = (
        torch.get_rng_state(),
        # a user's model or loss may draw from numpy's legacy global generator: its state goes back
        np.random.get_state(),  # noqa: NPY002
        random.getstate(),
    )
    tensors = [*module.parameters(), *module.buffers()]
    saved = [t.detach().clone() for t in tensors]
    grads = [p.grad.detach().clone() if p.grad is not None else None for p in module.parameters()]
    modes = [(m, m.training) for m in module.modules()]
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, value in zip(tensors, saved, strict=True):
                tensor.copy_(value)
            for parameter, grad in zip(module.parameters(), grads, strict=True):
                if grad is None:
                    parameter.grad = None
                elif parameter.grad is None:
                    parameter.grad = grad
                else:
                    parameter.grad.copy_(grad)
        for submodule, training in modes:
            submodule.training = training
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)  # noqa: NPY002 - see above
        random.setstate(python_state)


def _words(err: BaseException) -> str:
    if isinstance(err, SystemExit):
        return f"called sys.exit({err.code!r})"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _hint(err: BaseException, batch: int) -> str:
    """The likely fix of a failure that only training shows."""
    if "Expected more than 1 value per channel when training" in str(err):
        return (
            "; BatchNorm needs batch_size >= 2 in training: set [data] batch_size to 2 or more, "
            "or use a normalisation that works per sample (GroupNorm, LayerNorm)"
        )
    return f"; it must train on batches of {batch} (fix the model, or change [data] batch_size)"


def check_training_step(
    module: torch.nn.Module,
    values: Mapping[str, Any],
    input_shape: tuple[int, ...],
    task: str,
    batch_size: int,
    loss_fn: Any,
) -> None:
    """One training step of ``module`` (the job's model, ``values`` its [model] keys) in train mode
    on ``batch_size`` zero samples of ``input_shape`` (``FULL_BATCH_CHECK`` for 0, the whole shard),
    with ``loss_fn`` (outputs, targets) and a backward pass, leaving no trace (see the module
    docstring). Every rank calls it at set-up. Raises a one-line ``JobError`` naming the key."""
    from mpidecent.learning.problems import fit_outputs

    batch = batch_size or FULL_BATCH_CHECK
    parameter = next(module.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.get_default_dtype()
    features = torch.zeros(batch, *input_shape, dtype=dtype)
    targets = torch.zeros(batch, dtype=torch.int64 if task == "multiclass" else dtype)
    name, loss = values["name"], values["loss"]
    shape = tuple(input_shape)
    samples = f"{batch} sample{'s' if batch != 1 else ''}"
    where = f"in a training step (train mode, a batch of {samples} of shape {shape})"
    with leaves_no_trace(module):
        module.train()
        try:
            outputs = fit_outputs(module(features), task)
        except (Exception, SystemExit) as err:  # noqa: BLE001 - the user's model: one line
            raise JobError(
                f"[model] name = {name!r} fails {where} ({_words(err)}){_hint(err, batch)}"
            ) from None
        key, shown = ("[model] loss", loss) if is_import_path(loss) else ("[model] name", name)
        try:
            loss_fn(outputs, targets).backward()
        except (Exception, SystemExit) as err:  # noqa: BLE001 - the user's code: one line
            raise JobError(
                f"{key} = {shown!r} fails {where} in its loss or backward pass ({_words(err)})"
                f"{_hint(err, batch)}"
            ) from None
