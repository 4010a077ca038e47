"""Import paths in job files: ``[model] name``, ``[data] name`` and ``[model] loss`` may name a
callable.

    name = "mypackage.models:make_net"     # an importable module (on PYTHONPATH or installed)
    name = "nets.py:make_net"              # a .py file, relative to the job file's folder

A job file that names an import path runs that code on every rank, like a script would. Python code
can also hand mpidecent a callable directly (``mpidecent.train(job, model=Net)``): ``register``
gives it an import path that resolves to that very object in this process.

Errors are one line naming the job key (``JobError``): a path that does not parse, a module that
cannot be imported (or raises while importing), a missing attribute, something that is not callable.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from mpidecent.errors import JobError

_REGISTERED: dict[str, Callable[..., Any]] = {}
_ATTRIBUTE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_<>][A-Za-z0-9_<>]*)*")


def is_import_path(name: Any) -> bool:
    """Whether a job value names a callable (``module:attribute``) rather than a built-in."""
    return isinstance(name, str) and ":" in name


def check_syntax(name: str, key: str) -> None:
    """``module:attribute`` with both parts present (pure: imports nothing)."""
    module, _, attribute = name.rpartition(":")
    if not module or not _ATTRIBUTE.fullmatch(attribute):
        raise JobError(
            f'{key} = {name!r} is not an import path: write "package.module:callable" or '
            '"file.py:callable" (a .py file relative to the job file)'
        )


def register(obj: Callable[..., Any]) -> str:
    """An import path for ``obj`` that resolves to this object in this process (its module and
    qualified name, e.g. ``__main__:Net``); returns it."""
    module = getattr(obj, "__module__", None) or "python"
    path = f"{module}:{getattr(obj, '__qualname__', None) or id(obj)}"
    _REGISTERED[path] = obj
    return path


def _exited(err: SystemExit) -> str:
    """The words for a plug-in that ended the process instead of returning (``sys.exit``,
    ``exit()``)."""
    return (
        f"called sys.exit({err.code!r}) (a plug-in must return, not end the process: e.g. a "
        "training script that parses sys.argv when imported)"
    )


@contextlib.contextmanager
def user_code(key: str, name: str) -> Iterator[None]:
    """Around a call into the user's code after set-up (the model's forward and backward, the loss):
    an exit becomes a JobError naming ``key`` (every rank then stops with one line), not a silent
    exit 0 that leaves the other ranks waiting."""
    try:
        yield
    except SystemExit as err:
        raise JobError(f"{key} = {name!r} {_exited(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _module(module: str, key: str, name: str, base_dir: str | None) -> Any:
    if module.endswith(".py"):
        path = os.path.expanduser(module)
        if base_dir is not None and not os.path.isabs(path):
            path = os.path.join(base_dir, path)
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise JobError(
                f"{key} = {name!r}: no file {path!r} (a .py path is read relative to the job file)"
            )
        unique = "mpidecent_user_" + hashlib.sha1(path.encode()).hexdigest()[:12]
        if unique in sys.modules:
            return sys.modules[unique]
        spec = importlib.util.spec_from_file_location(unique, path)
        assert spec is not None and spec.loader is not None  # a .py path gets a source loader
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[unique] = loaded
        try:
            spec.loader.exec_module(loaded)
        except SystemExit as err:
            del sys.modules[unique]
            raise JobError(f"{key} = {name!r}: importing {path!r} {_exited(err)}") from None
        except Exception as err:  # noqa: BLE001 - the user's code: any error becomes one line
            del sys.modules[unique]
            raise JobError(
                f"{key} = {name!r}: importing {path!r} failed ({_first_line(err)})"
            ) from None
        return loaded
    try:
        return importlib.import_module(module)
    except SystemExit as err:
        raise JobError(f"{key} = {name!r}: importing module {module!r} {_exited(err)}") from None
    except Exception as err:  # noqa: BLE001 - ImportError, or anything the user's module raises
        raise JobError(
            f"{key} = {name!r}: cannot import module {module!r} ({_first_line(err)}); is it on "
            "PYTHONPATH, or give a .py file relative to the job file"
        ) from None


def load(name: str, key: str, base_dir: str | None = None) -> Callable[..., Any]:
    """The callable ``name`` names (see the module docstring); ``key`` (e.g. ``[model] name``) goes
    into every error message; ``base_dir`` resolves a relative ``.py`` file."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    check_syntax(name, key)
    module, _, attribute = name.rpartition(":")
    obj: Any = _module(module, key, name, base_dir)
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise JobError(f"{key} = {name!r}: {module!r} has no attribute {attribute!r}") from None
    if not callable(obj):
        raise JobError(f"{key} = {name!r} is a {type(obj).__name__}, not a callable")
    return obj


def call(
    fn: Callable[..., Any], key: str, name: str, kwargs: dict[str, Any], optional: dict[str, Any]
) -> Any:
    """``fn(**kwargs, **those of optional it accepts)`` — optional arguments (e.g. ``input_shape``)
    are passed when the signature names them or takes ``**kwargs``. Any exception becomes one line
    naming ``key``."""
    parameters: Mapping[str, inspect.Parameter]
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        parameters = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    extra = {k: v for k, v in optional.items() if takes_all or k in parameters}
    try:
        return fn(**kwargs, **extra)
    except SystemExit as err:
        raise JobError(
            f"{key} = {name!r} {_exited(err)} when called with ({', '.join([*kwargs, *extra])})"
        ) from None
    except Exception as err:  # noqa: BLE001 - the user's code: any error becomes one line
        shown = ", ".join([*kwargs, *extra])
        raise JobError(
            f"{key} = {name!r} raised {_first_line(err)} when called with ({shown})"
        ) from None


def names_parameters(fn: Callable[..., Any], *names: str) -> bool:
    """Whether ``fn``'s signature names every one of ``names`` explicitly (``**kwargs`` does not
    count)."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return all(n in parameters for n in names)
