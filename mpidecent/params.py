"""Declarative job-file keys.

Every job section and every plug-in (topology kind, compressor, algorithm, data set, model) declares
its keys as a tuple of ``Param``. ``resolve`` checks a TOML table against such a tuple and returns
the values with defaults filled in, raising ``JobError`` with one line that names the key:

    [compression] levels must be ≥ 1, got 0
    [algorithm] unknown key 'gama' for quantized_push_sum (did you mean 'gamma'?; valid keys: ...)

The same declarations generate the job-file reference, so documentation cannot drift from the code.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mpidecent.errors import JobError


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

_TYPE_WORDS: dict[type, str] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
}


def _type_word(kinds: tuple[type, ...]) -> str:
    return " or ".join(_TYPE_WORDS[k] for k in kinds)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class Param:
    """One job-file key.

    ``kind`` lists the accepted TOML value types (an ``int`` is accepted where ``float`` is, and is
    converted; a ``bool`` is never accepted as a number). ``minimum``/``maximum`` bound numbers
    (``exclusive_minimum`` makes the lower bound strict); ``choices`` restricts strings; ``check``
    returns a problem phrase such as ``"must be a power of 2"`` or ``None``.
    """

    name: str
    kind: type | tuple[type, ...]
    default: Any = REQUIRED
    doc: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    check: Callable[[Any], str | None] | None = None

    @property
    def kinds(self) -> tuple[type, ...]:
        return self.kind if isinstance(self.kind, tuple) else (self.kind,)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def coerce(self, section: str, value: Any) -> Any:
        """Return ``value`` converted to this key's type, or raise ``JobError`` naming the key."""
        where = f"[{section}] {self.name}"
        kinds = self.kinds
        if isinstance(value, bool):
            ok = bool in kinds
        elif isinstance(value, int):
            ok = int in kinds or float in kinds
            if ok and int not in kinds:
                value = float(value)
        elif isinstance(value, float):
            ok = float in kinds
            if ok and not math.isfinite(value):
                raise JobError(f"{where} must be a finite number, got {value}")
        else:
            ok = isinstance(value, kinds)
        if not ok:
            raise JobError(
                f"{where} must be {_type_word(kinds)}, got {_show(value)} ({type(value).__name__})"
            )
        if self.choices is not None and value not in self.choices:
            options = ", ".join(_show(c) for c in self.choices)
            hint = ""
            if isinstance(value, str):
                close = difflib.get_close_matches(value, [str(c) for c in self.choices], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise JobError(f"{where} must be one of {options}; got {_show(value)}{hint}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.minimum is not None:
                if self.exclusive_minimum and not value > self.minimum:
                    raise JobError(f"{where} must be > {_show(self.minimum)}, got {_show(value)}")
                if not self.exclusive_minimum and not value >= self.minimum:
                    raise JobError(f"{where} must be ≥ {_show(self.minimum)}, got {_show(value)}")
            if self.maximum is not None and not value <= self.maximum:
                raise JobError(f"{where} must be ≤ {_show(self.maximum)}, got {_show(value)}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise JobError(f"{where} {problem}, got {_show(value)}")
        return value

    def describe(self) -> str:
        """One line for the job-file reference: type, default, bounds, doc."""
        parts = [_type_word(self.kinds)]
        if self.choices is not None:
            parts.append("one of " + ", ".join(_show(c) for c in self.choices))
        if self.minimum is not None:
            parts.append(("> " if self.exclusive_minimum else "≥ ") + _show(self.minimum))
        if self.maximum is not None:
            parts.append("≤ " + _show(self.maximum))
        parts.append("required" if self.required else f"default {_show(self.default)}")
        return f"{self.name} ({'; '.join(parts)}): {self.doc}"


def resolve(
    section: str,
    specs: Iterable[Param],
    table: Mapping[str, Any],
    owner: str = "",
    ignore: Iterable[str] = (),
) -> dict[str, Any]:
    """Validate ``table`` against ``specs``; return ``{name: value}`` with defaults filled in.

    ``owner`` names the plug-in whose keys these are (``"for qsgd"`` in messages). Keys in
    ``ignore`` are handled by the caller (for example the ``name`` key that selected the plug-in).
    """
    specs = tuple(specs)
    known = {p.name: p for p in specs}
    ignore = set(ignore)
    for key in table:
        if key not in known and key not in ignore:
            valid = sorted(set(known) | ignore)
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {close[0]!r}?; " if close else ""
            for_owner = f" for {owner}" if owner else ""
            listed = (
                f"valid keys: {', '.join(valid)}"
                if valid
                else f"{owner or 'it'} has no keys of its own"
            )
            raise JobError(f"[{section}] unknown key {key!r}{for_owner} ({hint}{listed})")
    values: dict[str, Any] = {}
    for p in specs:
        if p.name in table:
            values[p.name] = p.coerce(section, table[p.name])
        elif p.required:
            for_owner = f" for {owner}" if owner else ""
            raise JobError(f"[{section}] missing required key {p.name!r}{for_owner}: {p.doc}")
        else:
            values[p.name] = p.default
    return values


def toml_value(value: Any) -> str:
    """``value`` written as a TOML literal (what a job file would say)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            repr(value)
            if math.isfinite(value)
            else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
        )
    if isinstance(value, str):
        escaped = (
            value.replace("\\", "\\\\")
            .replace('"', '\\"')
            .replace("\n", "\\n")
            .replace("\t", "\\t")
        )
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return (
            "{ "
            + ", ".join(f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items())
            + " }"
        )
    if value is None:
        raise ValueError("TOML has no null")
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
