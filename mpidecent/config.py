"""Job files: TOML → a validated, frozen ``Job``.

Pure (no MPI): every rank runs ``load_job`` on its own before the first collective, so a bad job
fails identically everywhere. Each section's keys are declared as ``Param`` tuples, by this module
for the fixed sections ([run]) and by the plug-ins for the variant sections (topology kinds,
algorithms, compressors, data sets, models): an unknown key, a wrong type or an out-of-range value
raises ``JobError`` with one line naming ``[section] key``.

``--set section.key=value`` overrides are applied to the parsed table before validation; the value
is read as a TOML literal (``0.05``, ``true``, ``[1, 2]``, ``"ring"``), and a bare word is taken as
a string. Switching a plug-in with ``--set`` (``--set compression.name=identity``) sets aside the
file's keys that only the replaced plug-in knew (after checking them against it), so runs can be
compared side by side from one job file; ``Job.set_aside`` lists them and the run prints them.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import os
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mpidecent import plugins
from mpidecent.algorithms import ALGORITHMS, AlgorithmSpec
from mpidecent.algorithms.catalog import OUTER_PARAMS, check_outer
from mpidecent.algorithms.lr import OPTIMIZER_KEYS, unused_optimizer_keys
from mpidecent.comm.patterns import MasterWorker
from mpidecent.compression import (
    COMMON_KEYS as COMPRESSION_KEYS,
)
from mpidecent.compression import (
    COMMON_PARAMS as COMPRESSION_COMMON,
)
from mpidecent.compression import COMPRESSORS, contractive_operators, unbiased_operators
from mpidecent.errors import JobError
from mpidecent.learning.models import (
    COMMON_KEYS as MODEL_KEYS,
)
from mpidecent.learning.models import (
    MODELS,
    check_model_task,
    resolve_model,
)
from mpidecent.learning.sources import DATASETS, data_task, resolve_data
from mpidecent.learning.sources import LOADER_KEYS as DATA_KEYS
from mpidecent.params import Param, resolve, toml_value
from mpidecent.topology import KINDS
from mpidecent.topology.section import (
    COMMON_KEYS as TOPOLOGY_KEYS,
)
from mpidecent.topology.section import (
    COMMON_PARAMS as TOPOLOGY_COMMON,
)

SECTIONS = (
    "run",
    "topology",
    "algorithm",
    "compression",
    "data",
    "model",
    "link",
    "stragglers",
    "outer",
)

RUN_PARAMS: tuple[Param, ...] = (
    Param("name", str, "", "run name (default: the job file's name without .toml)"),
    Param(
        "seed", int, 0, "seed of every random choice (minibatches, quantization, ...)", minimum=0
    ),
    Param("steps", int, 100, "number of iterations", minimum=1),
    Param(
        "log_every", int, 10, "log metrics (and print progress) every this many steps", minimum=1
    ),
    Param(
        "eval_every",
        int,
        0,
        "evaluate the network (the average model, its training and test metrics, the consensus "
        "distance, each node's own full-shard and test metrics) only every this many steps, a "
        "multiple of log_every, and at the last step; the log rows in between keep the counters "
        "(bits, bytes, loss, seconds, the algorithm's extras) and NaN for the evaluated metrics "
        "(docs/results-format.md). 0 = at every log point",
        minimum=0,
    ),
    Param(
        "eval",
        str,
        "allreduce",
        "how a log point forms the average model x̄: allreduce = on every rank, from an all-reduce "
        "of a float64 copy of every model (8·d bytes per rank); reduce = on rank 0 only, the "
        "models summed in their own dtype (itemsize·d bytes per rank): rank 0 evaluates x̄ on the "
        "whole test set, the consensus distance comes from norms, and the training-set metrics of "
        "x̄ (avg_model_loss, suboptimality, accuracy) are NaN (docs/results-format.md)",
        choices=("allreduce", "reduce"),
    ),
    Param(
        "checkpoint_every",
        int,
        0,
        "write a checkpoint (<out without .h5>.ckpt.h5) every this many steps; "
        "0 = only when stopped by SIGUSR1/SIGTERM",
        minimum=0,
    ),
    Param("out", str, "", "results file (default: runs/<name>.h5); --out overrides"),
    Param(
        "dtype",
        str,
        "float64",
        "floating-point type of models and messages' state",
        choices=("float64", "float32"),
    ),
    Param(
        "divergence_threshold",
        float,
        1e8,
        "stop the run as diverged when any model entry exceeds this magnitude (checked at log "
        "steps, besides the loss and consensus rules of Run health below)",
        minimum=0.0,
        exclusive_minimum=True,
    ),
    Param(
        "save_model",
        str,
        "average",
        "at the end of a completed run, save the network-average model as a torch state_dict (<out "
        "without .h5>.model.pt); all: also each node's (.node<rank>.model.pt); none",
        choices=("average", "all", "none"),
    ),
    Param(
        "progress",
        str,
        "hooks",
        "how a rank lets MPI move its neighbour exchanges in flight while it computes (a large "
        "message over TCP moves only inside MPI calls): hooks = a non-blocking test of every "
        "exchange in flight after each layer's forward pass and each parameter's gradient; none = "
        "only when the algorithm waits. The numbers are identical either way; only the time "
        "differs (docs/performance.md, the overlap section)",
        choices=("hooks", "none"),
    ),
)

# The network a report models the run on (``mpidecent report``'s modelled time, see
# comm/linkmodel.py); it does not change how the run itself communicates.
LINK_PARAMS: tuple[Param, ...] = (
    Param(
        "bandwidth_bps",
        float,
        10e9,
        "link bandwidth in bits per second for the report's modelled time "
        "(mpidecent report --bandwidth overrides)",
        minimum=0.0,
        exclusive_minimum=True,
    ),
    Param(
        "latency_s",
        float,
        5e-6,
        "per-message latency in seconds for the report's modelled time "
        "(mpidecent report --latency overrides)",
        minimum=0.0,
    ),
    Param(
        "shared",
        bool,
        False,
        "true: all ranks share one link of that bandwidth (nodes behind one slow uplink; "
        "an interval's bytes of all ranks queue on it together), false: a link per rank "
        "(mpidecent report --shared-link overrides)",
    ),
)

# Master/worker algorithms (gradient_coding, uncoded): who straggles (coding/stragglers.py).
STRAGGLER_PARAMS: tuple[Param, ...] = (
    Param(
        "model",
        str,
        "none",
        "none; fixed (exactly count workers skip each step); bernoulli (each skips with "
        "probability p); delay (every worker sleeps delay_shift_s + Exp(delay_mean_s) before "
        "sending)",
        choices=("none", "fixed", "bernoulli", "delay"),
    ),
    Param("count", int, 0, "fixed: stragglers per step", minimum=0),
    Param(
        "p",
        float,
        0.0,
        "bernoulli: probability that a worker straggles in a step",
        minimum=0.0,
        maximum=0.99,
    ),
    Param("delay_shift_s", float, 0.0, "delay: minimum sleep in seconds", minimum=0.0),
    Param(
        "delay_mean_s",
        float,
        0.01,
        "delay: mean of the exponential part of the sleep, seconds",
        minimum=0.0,
    ),
)

ALGORITHM_NAME = Param("name", str, doc="algorithm", choices=tuple(ALGORITHMS))
COMPRESSION_NAME, ERROR_FEEDBACK = COMPRESSION_COMMON
# Keys added after results files and checkpoints existed: written into the stored job only when set,
# so a run made before the key existed is still the same job (``--resume`` compares the stored job
# text).
_WRITTEN_WHEN_SET = {
    ("compression", "error_feedback"): False,
    ("run", "save_model"): "average",
    ("model", "loss"): "auto",
    ("data", "test_features_dataset"): "",
    ("data", "test_labels_dataset"): "",
    ("algorithm", "optimizer"): "sgd",
    ("algorithm", "momentum"): 0.9,
    ("algorithm", "adam_beta1"): 0.9,
    ("algorithm", "adam_beta2"): 0.999,
    ("algorithm", "adam_eps"): 1e-8,
    ("link", "shared"): False,
    ("algorithm", "overlap"): False,
    ("run", "progress"): "hooks",
    ("run", "eval_every"): 0,
    ("run", "eval"): "allreduce",
}


def _written(section: str, key: str, value: Any) -> bool:
    return (section, key) not in _WRITTEN_WHEN_SET or value != _WRITTEN_WHEN_SET[(section, key)]


@dataclass(frozen=True)
class Job:
    """A validated job. Sections are read-only mappings of every key (defaults filled in)."""

    run: Mapping[str, Any]
    topology: Mapping[str, Any]
    algorithm: Mapping[str, Any]
    compression: Mapping[str, Any]
    data: Mapping[str, Any]
    model: Mapping[str, Any]
    link: Mapping[
        str, Any
    ]  # the report's link model (bandwidth_bps, latency_s); the run does not use it
    stragglers: Mapping[str, Any]  # who straggles (master/worker algorithms only)
    source: str  # the job file's text as given
    path: str  # where it came from ("<string>" for text)
    overrides: tuple[str, ...]
    # Keys of the job file that belonged to a plug-in replaced by --set (e.g. compression.levels
    # after --set compression.name=identity); they were valid for it and are not used.
    set_aside: tuple[str, ...] = ()
    # For a variant of a [[sweep]]: its name (the sweep's settings are already applied), and its
    # value of every key the sweep varies, e.g. "levels=4 gamma=0.5" (the sweep table's label).
    variant: str = ""
    label: str = ""
    # [outer]: local steps and an outer optimizer (algorithms/local_steps.py); empty when the job
    # has none
    outer: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    def section(self, name: str) -> Mapping[str, Any]:
        return getattr(self, name)

    def to_toml(self) -> str:
        """The resolved job (every key, defaults included) as TOML; ``load_text`` of it gives this
        job."""
        lines: list[str] = []
        for name in SECTIONS:
            if name == "outer" and not self.outer:
                continue  # a job without local steps reads as it did before [outer] existed
            lines.append(f"[{name}]")
            lines += [
                f"{key} = {toml_value(value)}"
                for key, value in self.section(name).items()
                if _written(name, key, value)
            ]
            lines.append("")
        return "\n".join(lines)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobError(f"job file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise JobError(f"job file {str(path)!r} cannot be read: {err}") from None


def load_job(path: str | Path, overrides: Sequence[str] = ()) -> Job:
    """Read, override and validate a job file without a [[sweep]]; raises ``JobError``."""
    path = Path(path)
    return load_text(_read(path), str(path), overrides, default_name=path.stem)


def load_text(
    text: str, path: str = "<string>", overrides: Sequence[str] = (), default_name: str = "job"
) -> Job:
    jobs = load_text_jobs(text, path, overrides, default_name)
    if len(jobs) != 1:
        raise JobError(f"{path}: has a [[sweep]] of {len(jobs)} variants; load it with load_jobs")
    return jobs[0]


def load_jobs(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> list[Job]:
    """Every job of a job file: one, or one per [[sweep]] variant (see ``load_text_jobs``)."""
    path = Path(path)
    return load_text_jobs(_read(path), str(path), overrides, default_name=path.stem)


_VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_SWEEP_SHAPE = (
    '[[sweep]] must be one or more tables, each with name = "..." and set = { ... }, or a grid = '
    '{ "section.key" = [values] } (see docs/job-file.md)'
)


def load_text_jobs(
    text: str, path: str = "<string>", overrides: Sequence[str] = (), default_name: str = "job"
) -> list[Job]:
    """Parse a job file; with ``[[sweep]]`` entries, one job per variant::

        [[sweep]]
        name = "Q10"
        set = { "algorithm.gossip_rounds" = 10, "compression.fraction" = 0.1 }

        [[sweep]]            # a grid: one variant per combination, named levels4-gamma0.5, ...
        grid = { "compression.levels" = [4, 16], "algorithm.gamma" = [0.5, 1.0] }

    Each variant is the file's job with its ``set`` (and grid values) applied, then the command
    line's ``--set`` overrides. Variant ``v`` of a job named ``base`` is named ``base-v`` and writes
    ``<[run] out folder, default runs/base>/v.h5``. Every variant is validated here, so a bad one
    stops the whole sweep before anything runs."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise JobError(f"{path}: invalid TOML: {err}") from None
    sweep = table.pop("sweep", None)
    if sweep is None:
        for override in overrides:
            _apply_override(table, override)
        return [validate(table, text, path, tuple(overrides), default_name)]
    variants = expand_sweep(sweep)
    run = table.get("run", {})
    base = (
        run.get("name")
        if isinstance(run, dict) and isinstance(run.get("name"), str)
        else default_name
    )
    out = run.get("out") if isinstance(run, dict) else None
    folder = out if isinstance(out, str) and out else f"runs/{base}"
    swept = list(dict.fromkeys(key for _, settings in variants for key in settings))
    jobs = []
    for name, settings in variants:
        variant_table = copy.deepcopy(table)
        for key, value in settings.items():
            _set_key(variant_table, key, value, f"[[sweep]] {name}: set {key!r}")
        for override in overrides:
            _apply_override(variant_table, override)
        variant_run = variant_table.setdefault("run", {})
        if isinstance(variant_run, dict):
            variant_run["name"] = f"{base}-{name}"
            variant_run["out"] = os.path.join(folder, f"{name}.h5")
        try:
            job = validate(variant_table, text, path, tuple(overrides), default_name)
        except JobError as err:
            raise JobError(f"[[sweep]] {name}: {err}") from None
        jobs.append(dataclasses.replace(job, variant=name, label=sweep_label(job, swept, settings)))
    return jobs


def expand_sweep(sweep: Any) -> list[tuple[str, dict[str, Any]]]:
    """The variants of a parsed ``sweep`` value, as (name, {"section.key": value}) in file order: a
    ``[[sweep]]`` entry with ``name`` and ``set`` is one variant; an entry (or a single ``[sweep]``
    table) with ``grid = { "section.key" = [values], ... }`` is one variant per combination (the
    Cartesian product, first key slowest), named from the values (``levels4-gamma0.5``, after the
    entry's ``name`` when given), with the entry's ``set`` applied to each."""
    if isinstance(sweep, dict):
        sweep = [sweep]
    if not isinstance(sweep, list) or not sweep or not all(isinstance(v, dict) for v in sweep):
        raise JobError(_SWEEP_SHAPE)
    variants: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for index, entry in enumerate(sweep):
        where = f"[[sweep]] entry {index + 1}"
        unknown = set(entry) - {"name", "set", "grid"}
        if unknown:
            raise JobError(f"{where}: unknown key {sorted(unknown)[0]!r} (keys: name, set, grid)")
        name, grid = entry.get("name"), entry.get("grid")
        if (grid is None or name is not None) and (
            not isinstance(name, str) or not _VARIANT_NAME.fullmatch(name)
        ):
            raise JobError(
                f"{where}: name must be a string of letters, digits, _ . + -, got {name!r}"
                + (
                    ""
                    if grid is not None
                    else " (or give a grid = { ... } to name variants by value)"
                )
            )
        settings = entry.get("set", {})
        if not isinstance(settings, dict):
            raise JobError(
                f'[[sweep]] {name or where}: set must be a table of "section.key" = value'
            )
        produced: list[tuple[str, dict[str, Any]]]
        if grid is None:
            assert isinstance(name, str)  # checked above: a variant without a grid has a name
            produced = [(name, dict(settings))]
        else:
            if (
                not isinstance(grid, dict)
                or not grid
                or not all(isinstance(v, list) and v for v in grid.values())
            ):
                raise JobError(
                    f'{where}: grid must be a table of "section.key" = [value, ...] lists, each '
                    "with "
                    'at least one value, e.g. grid = { "algorithm.gamma" = [0.5, 1.0] }'
                )
            keys = list(grid)
            shorts = _short_keys(keys)
            produced = []
            for combo in itertools.product(*(grid[k] for k in keys)):
                parts = [
                    _name_part(key, short, value)
                    for key, short, value in zip(keys, shorts, combo, strict=True)
                ]
                produced.append(
                    (
                        "-".join(([name] if name else []) + parts),
                        {**settings, **dict(zip(keys, combo, strict=True))},
                    )
                )
        for variant, values in produced:
            if variant in seen:
                raise JobError(
                    f"[[sweep]] name {variant!r} is used twice"
                    + (" (two grid values give the same name)" if grid is not None else "")
                )
            seen.add(variant)
            variants.append((variant, values))
    return variants


def _short_keys(keys: Sequence[str]) -> list[str]:
    """Each "section.key" by its key alone, unless two of ``keys`` share it (then section.key)."""
    last = [k.rpartition(".")[2] or k for k in keys]
    return [s if last.count(s) == 1 else k for k, s in zip(keys, last, strict=True)]


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "_".join(_value_text(v) for v in value)
    return str(value)


def _name_part(key: str, short: str, value: Any) -> str:
    """A grid value's part of a variant name: ``gamma0.5``; a plug-in's name alone (``topk``)."""
    text = re.sub(r"[^A-Za-z0-9_.+-]", "_", _value_text(value))
    if (
        isinstance(value, str)
        and key.rpartition(".")[2] in ("name", "kind")
        and _VARIANT_NAME.fullmatch(text)
    ):
        return text
    return f"{short}{text}"


def sweep_label(job: Job, swept: Sequence[str], settings: Mapping[str, Any]) -> str:
    """Every swept key's value in this variant, e.g. ``levels=4 gamma=0.5`` (a key the variant does
    not set shows the job's resolved value; ``-`` when the variant's plug-in has no such key)."""
    parts = []
    for key, short in zip(swept, _short_keys(swept), strict=True):
        section, _, name = key.partition(".")
        resolved = job.section(section) if section in SECTIONS else {}
        value = resolved[name] if name in resolved else settings.get(key, "-")
        parts.append(f"{short}={value if isinstance(value, str) else toml_value(value)}")
    return " ".join(parts)


def _apply_override(table: dict[str, Any], override: str) -> None:
    key, sep, raw = override.partition("=")
    if not sep:
        raise JobError(
            f"--set {override!r}: expected section.key=value, e.g. --set algorithm.lr=0.05"
        )
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word such as ring or qsgd
    _set_key(table, key.strip(), value, f"--set {override!r}")


def _set_key(table: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    """Set ``section.key`` in a parsed job table (a --set override or a [[sweep]] setting)."""
    parts = dotted.split(".")
    if len(parts) != 2 or not all(parts):
        raise JobError(f"{where}: expected section.key=value, e.g. --set algorithm.lr=0.05")
    section, name = parts
    if section not in SECTIONS:
        raise JobError(f"{where}: unknown section [{section}]{_did_you_mean(section, SECTIONS)}")
    sub = table.setdefault(section, {})
    if not isinstance(sub, dict):
        raise JobError(f"[{section}] must be a table")
    selector = _SELECTORS.get(section)
    if name == selector and sub.get(name, value) != value:
        # Switching plug-in (e.g. --set compression.name=identity): remember the one the file chose,
        # so its own keys can be set aside instead of being rejected as unknown.
        table.setdefault(_SWITCHED, {}).setdefault(section, sub[name])
    sub[name] = value


_SELECTORS = {
    "topology": "kind",
    "algorithm": "name",
    "compression": "name",
    "data": "name",
    "model": "name",
}
_SWITCHED = (
    "__switched__"  # internal: section → plug-in name the job file chose before a --set switch
)


def _set_aside(
    section: str,
    table: dict[str, Any],
    old_params: tuple[Param, ...] | None,
    new_params: tuple[Param, ...],
    keep: tuple[str, ...],
) -> list[str]:
    """Drop from ``table`` the keys that belong to the plug-in the file chose but not to the new one
    (they are validated against the old plug-in first). Returns the dropped keys."""
    if old_params is None:
        return []
    old_names = {p.name for p in old_params}
    new_names = {p.name for p in new_params} | set(keep)
    dropped = [k for k in table if k in old_names and k not in new_names]
    for key in dropped:
        next(p for p in old_params if p.name == key).coerce(section, table.pop(key))
    return dropped


def _switch_user_plugin(
    table: dict[str, Any],
    old: str | None,
    default: str,
    builtins: Mapping[str, Any],
    common: Collection[str],
) -> list[str]:
    """``--set model.name=...`` (or data.name) switched a plug-in: drop the keys of the one the file
    chose that the new one does not take. An import path's keys are its callable's arguments: every
    key but the common ones belongs to it. Returns the dropped keys."""
    if old is None:
        return []
    own = set(common) | {"name"}
    new = table.get("name", default)
    if plugins.is_import_path(old):
        old_keys = {k for k in table if k not in own}
    else:
        old_keys = {p.name for p in builtins[old].params} if old in builtins else set()
    new_keys = {p.name for p in builtins[new].params} if new in builtins else set()
    if plugins.is_import_path(new) and plugins.is_import_path(old):
        return []  # one user callable for another: the keys are the user's to keep
    dropped = [k for k in table if k in old_keys and k not in new_keys]
    for key in dropped:
        del table[key]
    return dropped


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean [{close[0]}]?)" if close else f" (sections: {', '.join(options)})"


def validate(
    table: Mapping[str, Any],
    source: str = "",
    path: str = "<string>",
    overrides: tuple[str, ...] = (),
    default_name: str = "job",
) -> Job:
    """Validate a parsed job table (see module docstring)."""
    table = {k: (dict(v) if isinstance(v, dict) else v) for k, v in table.items()}
    switched = table.pop(_SWITCHED, {})
    set_aside: list[str] = []
    for name, value in table.items():
        if name not in SECTIONS:
            raise JobError(f"unknown section [{name}]{_did_you_mean(name, SECTIONS)}")
        if not isinstance(value, dict):
            raise JobError(f"[{name}] must be a table (a [{name}] header with key = value lines)")
    if "algorithm" not in table:
        raise JobError(
            f"{path}: missing [algorithm] section (name = one of {', '.join(ALGORITHMS)})"
        )

    run = resolve("run", RUN_PARAMS, table.get("run", {}))
    if run["name"] and not _VARIANT_NAME.fullmatch(run["name"]):
        raise JobError(
            f"[run] name = {run['name']!r}: a run name must be a plain file name of letters, "
            "digits and _ . + - that does not start with a dot (no / or \\); it names "
            "runs/<name>.h5 — set [run] out to choose the folder"
        )
    run["name"] = run["name"] or default_name
    run["out"] = run["out"] or f"runs/{run['name']}.h5"
    if run["eval_every"] % run["log_every"]:
        every, log_every = run["eval_every"], run["log_every"]
        near = max(round(every / log_every), 1) * log_every
        raise JobError(
            f"[run] eval_every = {every} is not a multiple of log_every = {log_every}: set "
            f"eval_every = {near} (evaluations happen at log points), or 0 to evaluate at every "
            "log point"
        )

    algo_table = table["algorithm"]
    if "name" not in algo_table:
        raise JobError(f"[algorithm] missing required key 'name' (one of {', '.join(ALGORITHMS)})")
    algo_name = ALGORITHM_NAME.coerce("algorithm", algo_table["name"])
    spec = ALGORITHMS[algo_name]
    old_algo = ALGORITHMS.get(switched.get("algorithm", ""))
    set_aside += [
        f"algorithm.{k}"
        for k in _set_aside(
            "algorithm",
            algo_table,
            old_algo.params if old_algo is not None else None,
            spec.params,
            ("name",),
        )
    ]
    algorithm = {
        "name": algo_name,
        **resolve("algorithm", spec.params, algo_table, owner=algo_name, ignore=("name",)),
    }
    stray = sorted((unused_optimizer_keys(algorithm) - {"optimizer"}) & set(algo_table))
    if stray:
        raise JobError(
            f"[algorithm] {stray[0]} does not apply to optimizer = {algorithm['optimizer']!r} (it "
            f"reads {', '.join(OPTIMIZER_KEYS[algorithm['optimizer']]) or 'no keys of its own'}); "
            "remove it or choose the optimizer that uses it"
        )

    topo_table = table.get("topology")
    if topo_table is not None and "topology" in switched and topo_table.get("kind") in KINDS:
        old_kind = KINDS.get(switched["topology"])
        set_aside += [
            f"topology.{k}"
            for k in _set_aside(
                "topology",
                topo_table,
                old_kind.params if old_kind is not None else None,
                KINDS[topo_table["kind"]].params,
                TOPOLOGY_KEYS,
            )
        ]
    outer_table = table.get("outer")
    outer = resolve("outer", OUTER_PARAMS, outer_table) if outer_table is not None else {}
    if (
        outer_table is not None  # (else outer is empty)
        and outer.get("pairing") == "random"
        and outer_table.get("optimizer", "heavy_ball") == "heavy_ball"
    ):
        outer["optimizer"] = (
            "heavy_ball"  # NoLoCo's step is of the heavy-ball form (local_steps.py)
        )
    if (
        outer.get("pairing") == "random"
        and (topo_table or {}).get("kind", "random_pairs") == "random_pairs"
    ):
        topology = _pairing_topology(spec, run, outer, topo_table or {})
    else:  # (a [topology] next to pairing = "random" is refused by check_outer, naming both)
        topology = spec.pattern.topology(topo_table, algo_name)

    compression = _validate_compression(
        table.get("compression", {}), switched, spec, set_aside, local_steps=outer_table is not None
    )
    data_table, model_table = dict(table.get("data", {})), dict(table.get("model", {}))
    set_aside += [
        f"data.{k}"
        for k in _switch_user_plugin(
            data_table, switched.get("data"), "synthetic_logistic", DATASETS, DATA_KEYS
        )
    ]
    set_aside += [
        f"model.{k}"
        for k in _switch_user_plugin(
            model_table, switched.get("model"), "logistic", MODELS, MODEL_KEYS
        )
    ]
    data = resolve_data(data_table)
    model = resolve_model(model_table)
    check_model_task(model, data_task(data), data["name"])
    link = resolve("link", LINK_PARAMS, table.get("link", {}))
    stragglers = resolve("stragglers", STRAGGLER_PARAMS, table.get("stragglers", {}))
    master_worker = isinstance(spec.pattern, MasterWorker)
    if stragglers["model"] != "none" and not master_worker:
        raise JobError(
            f"[stragglers] model = {stragglers['model']!r} applies to master/worker algorithms "
            f"(gradient_coding, uncoded), not {algo_name}; remove [stragglers]"
        )
    if master_worker and data["batch_size"] != 0:
        raise JobError(
            f"[data] batch_size = {data['batch_size']}: {algo_name} workers send gradients of "
            "whole partitions; set batch_size = 0"
        )
    job = Job(
        run=MappingProxyType(run),
        topology=MappingProxyType(topology),
        algorithm=MappingProxyType(algorithm),
        compression=MappingProxyType(compression),
        data=MappingProxyType(data),
        model=MappingProxyType(model),
        link=MappingProxyType(link),
        stragglers=MappingProxyType(stragglers),
        source=source,
        path=path,
        overrides=overrides,
        set_aside=tuple(set_aside),
        outer=MappingProxyType(outer),
    )
    if outer_table is not None:
        check_outer(job, outer_table, topo_table)
    return job


PAIRING_PERIOD_LIMIT = (
    4096  # distinct pairings kept (a schedule slot each); rounds beyond reuse them cyclically
)


def _pairing_topology(
    spec: AlgorithmSpec, run: Mapping[str, Any], outer: Mapping[str, Any], table: Mapping[str, Any]
) -> dict[str, Any]:
    """The [topology] of ``[outer] pairing = "random"``: the random_pairs schedule with one slot per
    round of the run (up to PAIRING_PERIOD_LIMIT), seeded by [run] seed; a ``[topology] kind =
    "random_pairs"`` table may set n, period and seed itself (and repeat the derived directed and
    weights)."""
    rounds = -(-run["steps"] // outer["every"])
    directed = bool(getattr(spec.pattern, "directed", False))
    derived = {
        "kind": "random_pairs",
        "n": 0,
        "directed": directed,
        "weights": spec.pattern.default_weights,
        "period": max(1, min(rounds, PAIRING_PERIOD_LIMIT)),
        "seed": run["seed"],
    }
    for key, value in table.items():
        if key in ("n", "period", "seed"):
            derived[key] = value
        elif key not in ("kind", "directed", "weights") or value != derived[key]:
            raise JobError(
                f'[topology] {key} = {toml_value(value)}: [outer] pairing = "random" draws its own '
                'pairs (kind = "random_pairs", n, period and seed may be set); remove it'
            )
    resolve(
        "topology", TOPOLOGY_COMMON, {k: derived[k] for k in ("kind", "n", "directed", "weights")}
    )
    if derived["period"] < 1 or derived["n"] < 0:
        raise JobError("[topology] period must be ≥ 1 and n ≥ 0")
    return derived


def _validate_compression(
    table: Mapping[str, Any],
    switched: Mapping[str, str],
    spec: AlgorithmSpec,
    set_aside: list[str],
    local_steps: bool = False,
) -> dict[str, Any]:
    """The [compression] section for the algorithm ``spec``: an operator it accepts, its keys, and
    error feedback only where the algorithm has a stream it applies to (with ``local_steps``: the
    compressed pseudo-gradient of a "compressed_gossip" round)."""
    table = dict(table)
    name = COMPRESSION_NAME.coerce("compression", table.get("name", "identity"))
    old = COMPRESSORS.get(switched.get("compression", ""))
    set_aside += [
        f"compression.{k}"
        for k in _set_aside(
            "compression",
            table,
            old.params if old is not None else None,
            COMPRESSORS[name].params,
            COMPRESSION_KEYS,
        )
    ]
    if spec.compressors is not None and name not in spec.compressors:
        raise JobError(
            f"[compression] name = {name!r} is not supported by {spec.name} "
            f"(it sends {' or '.join(spec.compressors)} messages; use quantized_push_sum "
            f"for compressed push-sum)"
        )
    feedback = ERROR_FEEDBACK.coerce("compression", table.get("error_feedback", False))
    if (
        feedback
        and not spec.error_feedback
        and not (local_steps and spec.outer == "compressed_gossip")
    ):
        users = ", ".join(s.name for s in ALGORITHMS.values() if s.error_feedback)
        raise JobError(
            f"[compression] error_feedback = true does not apply to {spec.name}: its messages "
            f"carry no compression error forward (error feedback applies to {users}); remove it"
        )
    options = resolve(
        "compression", COMPRESSORS[name].params, table, owner=name, ignore=COMPRESSION_KEYS
    )
    if spec.needs_contractive:
        probe = COMPRESSORS[name](8, "float64", **options)
        if not probe.contractive:
            raise JobError(
                f"[compression] {probe.describe()} is not contractive; {spec.name} needs a "
                f"contractive operator ({contractive_operators()})"
            )
    if spec.needs_unbiased:
        probe = COMPRESSORS[name](8, "float64", **options)
        if not probe.unbiased:
            raise JobError(
                f"[compression] {probe.describe()} is biased; {spec.name} needs an unbiased "
                f"operator ({unbiased_operators()})"
            )
    return {"name": name, **options, "error_feedback": feedback}


def table_to_toml(table: Mapping[str, Any]) -> str:
    """A job given as a dict of sections (and an optional "sweep" list of variant tables) as TOML
    text."""
    lines: list[str] = []
    for name, section in table.items():
        if name == "sweep" and isinstance(section, (list, tuple)):
            for variant in section:
                lines += [
                    "[[sweep]]",
                    *(f"{k} = {toml_value(v)}" for k, v in dict(variant).items()),
                    "",
                ]
        elif isinstance(section, Mapping):
            lines += [f"[{name}]", *(f"{k} = {toml_value(v)}" for k, v in section.items()), ""]
        else:
            raise JobError(
                f"[{name}] must be a table of keys (a dict), got {type(section).__name__}"
            )
    return "\n".join(lines)


# ---- the job-file reference, generated from the declarations above -------------------------------


def _row(p: Param) -> str:
    kinds = " or ".join(
        {bool: "bool", int: "int", float: "float", str: "string", list: "list"}[k] for k in p.kinds
    )
    bounds = []
    if p.choices is not None:
        bounds.append(" \\| ".join(toml_value(c) for c in p.choices))
    if p.minimum is not None:
        bounds.append(("> " if p.exclusive_minimum else "≥ ") + f"{p.minimum:g}")
    if p.maximum is not None:
        bounds.append(f"≤ {p.maximum:g}")
    default = (
        "required"
        if p.required
        else ("(depends)" if p.default is None else f"`{toml_value(p.default)}`")
    )
    return f"| `{p.name}` | {kinds} | {default} | {'; '.join(bounds)} | {p.doc} |"


def _table(params: Sequence[Param]) -> list[str]:
    if not params:
        return ["(no keys of its own)", ""]
    return [
        "| key | type | default | allowed | meaning |",
        "|---|---|---|---|---|",
        *map(_row, params),
        "",
    ]


SWEEP_REFERENCE: list[str] = [
    "## [[sweep]]",
    "",
    "A job file may hold variants of its job: `mpidecent run` validates every variant first (one",
    "bad variant refuses the whole launch, before anything runs), then runs them one after another",
    "in the same launch. Variant `v` of a job named `base` is named `base-v` and writes `<[run]",
    "out folder, default runs/base>/v.h5` (`--out DIR` puts the files in DIR). Command-line",
    "`--set` options apply to every variant, after the variant's own settings. Each entry is one",
    "of:",
    "",
    "| key | type | meaning |",
    "|---|---|---|",
    "| `name` | string | the variant's name (letters, digits, `_ . + -`); with `grid`, a prefix of "
    "the generated names |",
    '| `set` | table | `"section.key" = value` settings of this variant (with `grid`: applied to '
    "every combination) |",
    '| `grid` | table of lists | `"section.key" = [values]`: one variant per combination (the '
    "Cartesian product, first key slowest) |",
    "",
    "```toml",
    "[[sweep]]",
    'name = "Q10"',
    'set = { "algorithm.gossip_rounds" = 10, "compression.fraction" = 0.1 }',
    "",
    "[[sweep]]                       # 4 variants: levels4-gamma0.5, levels4-gamma1,",
    'levels16-gamma0.5, levels16-gamma1 grid = { "compression.levels" = [4, 16], "algorithm.gamma"',
    "= [0.5, 1.0] }",
    "```",
    "",
    "A grid variant's name joins `<key><value>` for each key (the key without its section, unless",
    "two keys share it; a plug-in's `name`/`kind` shows its value alone, e.g. `topk-gamma0.5`),",
    "characters other than letters, digits and `_ . + -` becoming `_`. A single `[sweep]` table",
    "with a `grid` works too. Two variants with the same name are an error.",
    "",
    "After the runs, rank 0 prints a table with one line per variant: its status, final numbers",
    "and its `settings`, the value of every key any variant sets (`levels=4 gamma=0.5`). A variant",
    "that diverges (or fails its health check) is recorded as `diverged` in its results file and",
    "the table, and the others still run; the launch's exit status is 0 only when every variant",
    "completed, else the worst (3 diverged, 4 stopped by a signal: the launch ends there and",
    "`--resume` continues it). An internal error aborts the launch (1).",
    "",
    "`mpidecent run JOB --variant NAME_OR_INDEX` runs one variant only (by name, or by 0-based",
    "index in file order, e.g. a Slurm array task's `$SLURM_ARRAY_TASK_ID`:",
    "`slurm/sweep-array.sbatch`); it writes the same results file as a whole-sweep run. Every",
    "variant is still validated first.",
    "",
    "`mpidecent simulate-gossip JOB -n 8,64` replaces the job's `[topology] n`: variants that",
    "differ only in `n` count once.",
    "",
    "## Run health",
    "",
    "At every log point a run is stopped as `diverged` (exit status 3, the results so far kept)",
    "when the average model's loss is non-finite or above 1000 × max(its step-0 value, 1), when",
    "the consensus distance is non-finite or above 10⁶ × max(its first nonzero logged value, 1),",
    "or when a model entry exceeds `[run] divergence_threshold`; the message names the quantity,",
    "the step and a hint for the algorithm and compressor. At the start, rank 0 warns (`mpidecent:",
    "warning: ...`) about known-unstable combinations: quantized_push_sum, multi_gossip or",
    "choco_sgd with a biased operator (topk, sign, qsgd_contractive, randk with scaled = false)",
    "and gamma = 1.",
    "",
    "## Memory",
    "",
    "Before the data are generated or read, every rank estimates the memory its part of the job",
    "needs and refuses a job that needs more than its share of the machine, in one line naming the",
    "key that dominates (`[data] samples`, `features`, `batch_size`, `[model] hidden`, `channels`,",
    "or a data file's `path`): `[data] samples = 1000000000 needs about 723 GiB per rank (data 525",
    "GiB, model 2.8 KiB, …) but each of the 4 ranks on this machine has about 5.5 GiB (22 GiB",
    "available)` (exit status 2). The share is the memory available now (`MemAvailable`, or the",
    "room under a cgroup limit when smaller, as under Slurm or in a container) divided by the",
    "ranks on this machine (from Open MPI, MPICH or Slurm; else all the ranks). The estimate",
    "counts the data (a generated or built-in set is held whole on every rank while its shard is",
    "cut), the model's parameters with their copies, the algorithm's d-sized vectors, the message",
    "buffers, a step's activations and, for a convex model with `[model] l2` > 0, the exact",
    "optimum's d×d Newton system; it is rough, and not the Python and torch runtime itself. A",
    "user's loader or model is not estimated: running out of memory while building it is one line",
    "naming `[data] name` or `[model] name`. `MPIDECENT_NO_MEMORY_CHECK=1` in the environment",
    "skips the estimate.",
    "",
]


def job_reference() -> str:
    """Markdown reference of every job-file section and key (``docs/job-file.md`` is this text)."""
    from mpidecent.learning.models import COMMON_PARAMS as MODEL_COMMON
    from mpidecent.learning.models import MODELS
    from mpidecent.learning.sources import COMMON_PARAMS as DATA_COMMON
    from mpidecent.learning.sources import DATASETS, LOADER_PARAMS

    out = [
        "# Job file reference",
        "",
        "Generated from the code's declarations by `python -m mpidecent.config >",
        "docs/job-file.md`; a unit test fails when this file and the code disagree. Unknown keys,",
        "wrong types and out-of-range values are errors naming `[section] key`.",
        "",
        "## [run]",
        "",
        *_table(RUN_PARAMS),
        "## [topology]",
        "",
        "Keys of every kind:",
        "",
        *_table(TOPOLOGY_COMMON),
    ]
    for kind in KINDS.values():
        default = "true" if kind.default_directed else "false"
        out += [
            f'### kind = "{kind.name}"',
            "",
            f"{kind.doc} (directed default: {default})",
            "",
            *_table(kind.params),
        ]
    out += ["## [algorithm]", ""]
    for algo in ALGORITHMS.values():
        feedback = "; error feedback available" if algo.error_feedback else ""
        out += [
            f'### name = "{algo.name}"',
            "",
            f"{algo.doc}. Needs {algo.pattern.describe_needs()}; "
            f"compression: {', '.join(algo.compressors) if algo.compressors else 'any'}{feedback}.",
            "",
            *_table(algo.params),
        ]
    out += ["## [compression]", "", "Keys of every operator:", "", *_table(COMPRESSION_COMMON)]
    for comp in COMPRESSORS.values():
        summary = (comp.__doc__ or "").strip().splitlines()[0]
        out += [f'### name = "{comp.name}"', "", summary, "", *_table(comp.params)]
    out += [
        "## [data]",
        "",
        '`name` is a built-in below or a loader by import path, `"package.module:load"` or',
        '`"loader.py:load"` (a file relative to the job file). **A job file that names an import',
        "path runs that code on every rank.** The loader gets the table's other keys as keyword",
        "arguments and returns `(x, y)` or `(x, y, x_test, y_test)` (arrays or tensors, x of any",
        "per-sample shape); a loader whose signature names `rank` and `world_size` returns only",
        "that rank's training shard (and the whole test set). Keys of a loader besides its own:",
        "`task` (`auto` | binary | multiclass | regression; auto: integer labels → multiclass,",
        "others → regression), `test_fraction` (when it returns no test set) and the keys every",
        "data set has:",
        "",
        *_table(LOADER_PARAMS),
        "Keys of every data set:",
        "",
        *_table(DATA_COMMON),
    ]
    for data in DATASETS.values():
        out += [f'### name = "{data.name}"', "", data.doc, "", *_table(data.params)]
    out += [
        "## [model]",
        "",
        '`name` is a built-in below or a factory by import path, `"package.module:make"` or',
        '`"nets.py:Net"` (a file relative to the job file). **A job file that names an import path',
        "runs that code on every rank.** The factory gets the table's other keys as keyword",
        "arguments, plus `input_shape` (one sample's shape) and `classes` (2 binary, C multiclass,",
        "0 regression) when its signature names them, and returns a `torch.nn.Module`: one logit",
        "for binary tasks, `(B, classes)` for multiclass. Its non-trainable buffers (batch norm's",
        "running statistics) stay local to each node and are checkpointed; the saved average model",
        "(`[run] save_model`) holds their mean. Keys of every model:",
        "",
        *_table(MODEL_COMMON),
    ]
    for model in MODELS.values():
        out += [f'### name = "{model.name}"', "", model.doc, "", *_table(model.params)]
    out += [
        "## [stragglers]",
        "",
        "Who straggles in master/worker algorithms (gradient_coding, uncoded).",
        "",
        *_table(STRAGGLER_PARAMS),
    ]
    from mpidecent.algorithms.catalog import outer_algorithms

    out += [
        "## [outer]",
        "",
        "Local steps and an outer optimizer (DiLoCo family;",
        "[docs/algorithms/local-steps.md](algorithms/local-steps.md)): H inner steps with the",
        "`[algorithm]`'s optimizer and no communication, then the round's pseudo-gradient Δ = φ −",
        "θ is aggregated over the algorithm's pattern and the outer optimizer steps",
        f"φ. Accepted by {', '.join(outer_algorithms())}. Without `[outer]` nothing changes.",
        "",
        *_table(OUTER_PARAMS),
    ]
    out += SWEEP_REFERENCE
    out += [
        "## [link]",
        "",
        "The network `mpidecent report` models the run on: modelled time = Σ over log intervals of",
        "the slowest rank's measured compute + 8·bytes sent / bandwidth + messages sent · latency",
        "(see [results-format.md](results-format.md)). It does not change the run.",
        "",
        *_table(LINK_PARAMS),
    ]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(job_reference(), end="")
