"""The comparison table of runs, the bit-budget, target-loss and target-accuracy queries, as text,
CSV or JSON.

Every number comes from the results files (``Run``); ``summarize`` gives one run's final values as a
flat mapping (the CSV/JSON fields), the ``render_*`` functions lay several runs side by side.

Queries:

* budget B bits: the average-model loss (and suboptimality) when the network had sent B bits in
  total, by linear interpolation between the two log points around B in ``cumulative_bits``; "not
  reached" when the run ended before sending B bits.
* target loss T: the first logged step whose average-model loss is ≤ T, with the cumulative bits,
  wall time and modelled time at that log point ("not reached" otherwise). Resolution is
  ``log_every``.
* target accuracy A: the same for the first logged step whose average-model accuracy is ≥ A: the
  test accuracy when the run has a test set, else the training accuracy (the answer says which).

Runs with a test set also hold each node's own model evaluated on it (per-rank ``test_loss`` and
``test_accuracy``); the final values give their min / mean / max over ranks next to the average
model's.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mpidecent.comm.linkmodel import LinkModel
from mpidecent.io.reader import BASE_GLOBAL_SERIES, ReportError, Run
from mpidecent.texttable import grid

MODEL_NOTE = (
    "modelled time is a model, not a measurement: the sum over log intervals of the slowest rank's "
    "measured compute + 8·bytes sent / bandwidth + messages sent · latency (a shared link: the "
    "slowest rank's compute + 8·all ranks' bytes / bandwidth + the most messages · latency)"
)


# ---- one run -------------------------------------------------------------------------------------


def _last(values: np.ndarray | None) -> float | None:
    if values is None or values.shape[0] == 0:
        return None
    value = values[-1]
    return _clean(value.item() if isinstance(value, np.generic) else value)


def _clean(value: Any) -> Any:
    """numpy → Python; NaN/inf → None (JSON has no NaN, CSV leaves the cell empty)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _over_ranks(values: np.ndarray | None) -> tuple[Any, Any, Any]:
    """(min, mean, max) over ranks of the last row of a per-rank series, finite values only (None:
    none)."""
    if values is None or values.shape[0] == 0:
        return None, None, None
    last = np.asarray(values[-1], dtype=np.float64)
    finite = last[np.isfinite(last)]
    if not finite.size:
        return None, None, None
    return _clean(float(finite.min())), _clean(float(finite.mean())), _clean(float(finite.max()))


def topology_text(run: Run) -> str:
    kind = str(run.topology.get("kind") or run.job.get("topology", {}).get("kind", "?"))
    directed = run.topology.get("directed")
    shape = "" if directed is None else (" directed" if directed else " undirected")
    period = int(run.topology.get("period", 1) or 1)
    varying = f", period {period}" if period > 1 else ""
    return f"{kind}{shape}{varying}"


def summarize(run: Run) -> dict[str, Any]:
    """The run's final values (at its last logged step) as a flat mapping of plain values (None
    where the file has no such value)."""
    n, step = run.n, run.last_step
    bits, nbytes = _last(run.glob("cumulative_bits")), _last(run.glob("cumulative_bytes"))
    compute = run.rank("compute_s")
    comm = run.rank("comm_s")
    compute_total = _clean(float(compute[-1].sum())) if compute is not None and run.rows else None
    comm_total = _clean(float(comm[-1].sum())) if comm is not None and run.rows else None
    busy = (compute_total or 0.0) + (comm_total or 0.0)
    accuracy, accuracy_set = run.accuracy_series()
    modelled = run.modelled_time()
    out: dict[str, Any] = {
        "run": run.label,
        "file": run.path,
        "status": run.status,
        "partial": run.partial,
        "partial_reason": run.partial_reason,
        "algorithm": run.algorithm,
        "algorithm_description": str(run.attrs.get("algorithm_description", "")),
        "compressor": run.compressor,
        "compressor_description": str(run.attrs.get("compressor_description", "")),
        "topology": topology_text(run),
        "edges": None if run.edges is None else int(run.edges.shape[0]),
        "n": n,
        "steps": step,
        "steps_requested": run.steps_requested,
        "rows": run.rows,
        "avg_model_loss": _last(run.glob("avg_model_loss")),
        "optimum": _clean(run.optimum),
        "suboptimality": _last(run.glob("suboptimality")) if run.has_optimum() else None,
        "accuracy": _last(accuracy),
        "accuracy_set": accuracy_set or None,
        "test_loss": _last(run.glob("test_loss")),
        "test_accuracy": _last(run.glob("test_accuracy")),
        "consensus_distance": _last(run.glob("consensus_distance")),
        "total_bits": None if bits is None else int(bits),
        "total_bytes": None if nbytes is None else int(nbytes),
        "bits_per_step_per_node": (bits / (n * step)) if bits is not None and n and step else None,
        "wall_s": _last(run.glob("wall_s")),
        "compute_s": compute_total,
        "comm_s": comm_total,
        "compute_share": (compute_total or 0.0) / busy if busy > 0 else None,
        "modelled_s": _last(modelled),
        "link_bandwidth_bps": run.link.bandwidth_bps,
        "link_latency_s": run.link.latency_s,
        "link_shared": run.link.shared,
        "link_source": run.link_source,
        "extras": {},
        "events": {},
    }
    for name in ("test_accuracy", "test_loss"):  # each node's own model on the test set, over ranks
        low, mean, high = _over_ranks(run.node_test_series(name))
        out[f"node_{name}_min"], out[f"node_{name}_mean"], out[f"node_{name}_max"] = low, mean, high
    for name in run.rank_extras:
        values = run.need_rank(name)
        last = values[-1].astype(np.float64) if run.rows else np.zeros(0)
        finite = last[np.isfinite(last)]
        out["extras"][name] = {
            "mean": _clean(float(finite.mean())) if finite.size else None,
            "max": _clean(float(finite.max())) if finite.size else None,
            "unit": run.unit("rank", name),
        }
    for name in run.global_extras:
        out["extras"][name] = {
            "mean": _last(run.glob(name)),
            "max": _last(run.glob(name)),
            "unit": run.unit("global", name),
        }
    for name, data in run.events.items():
        if data.dtype == bool and data.size:
            out["events"][name] = {
                "count": int(data.sum()),
                "of": int(data.size),
                "fraction": float(data.sum() / data.size),
            }
    return out


def _interpolate_at(x: np.ndarray, y: np.ndarray, at: float) -> float | None:
    """y where the nondecreasing x first reaches ``at`` (linear between log points); None beyond
    x."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size == 0 or not at <= x[-1]:
        return None
    i = int(np.argmax(x >= at))
    if x[i] == at or i == 0:
        return float(y[i])
    frac = (at - x[i - 1]) / (x[i] - x[i - 1])
    return float(y[i - 1] + frac * (y[i] - y[i - 1]))


def budget_query(run: Run, bits: float) -> dict[str, Any]:
    """Loss (and suboptimality) when the run had sent ``bits`` in total (see module docstring)."""
    cumulative, loss = run.glob("cumulative_bits"), run.glob("avg_model_loss")
    result: dict[str, Any] = {
        "bits": bits,
        "reached": False,
        "avg_model_loss": None,
        "suboptimality": None,
        "step": None,
    }
    if cumulative is None or loss is None or run.rows == 0:
        return result
    value = _interpolate_at(cumulative, loss, bits)
    if value is None:
        return result
    sub = run.glob("suboptimality")
    result.update(
        reached=True,
        avg_model_loss=_clean(value),
        suboptimality=(
            _clean(_interpolate_at(cumulative, sub, bits))
            if sub is not None and run.has_optimum()  # (an optimum implies the series)
            else None
        ),
        step=_clean(_interpolate_at(cumulative, run.steps, bits)),
    )
    return result


def _first_reached(
    run: Run,
    values: np.ndarray | None,
    reached: np.ndarray | None,
    best_key: str,
    best: Any,
    result: dict[str, Any],
) -> dict[str, Any]:
    """Fill ``result[best_key]`` with ``best`` (np.min or np.max) of the finite values and, at the
    first logged row where ``reached`` holds, its step, cumulative bits, wall and modelled
    seconds."""
    if values is None or run.rows == 0:
        return result
    finite = values[np.isfinite(values)]
    result[best_key] = _clean(float(best(finite))) if finite.size else None
    hits = np.flatnonzero(np.isfinite(values) & reached)
    if hits.size == 0:
        return result
    i = int(hits[0])
    bits, wall, modelled = run.glob("cumulative_bits"), run.glob("wall_s"), run.modelled_time()
    result.update(
        reached=True,
        step=int(run.steps[i]),
        bits=None if bits is None else int(bits[i]),
        wall_s=None if wall is None else _clean(float(wall[i])),
        modelled_s=None if modelled is None else _clean(float(modelled[i])),
    )
    return result


def target_query(run: Run, target: float) -> dict[str, Any]:
    """The first logged step with average-model loss ≤ ``target`` (see module docstring)."""
    loss = run.glob("avg_model_loss")
    result: dict[str, Any] = {
        "target": target,
        "reached": False,
        "step": None,
        "bits": None,
        "wall_s": None,
        "modelled_s": None,
        "best_loss": None,
    }
    return _first_reached(
        run, loss, None if loss is None else loss <= target, "best_loss", np.min, result
    )


def accuracy_target_query(run: Run, target: float) -> dict[str, Any]:
    """The first logged step with average-model accuracy ≥ ``target``: test accuracy when the run
    has a test set, else training accuracy (``accuracy_set``: "test", "training", or None without
    either)."""
    values, kind = run.accuracy_series()
    result: dict[str, Any] = {
        "target": target,
        "accuracy_set": kind or None,
        "reached": False,
        "step": None,
        "bits": None,
        "wall_s": None,
        "modelled_s": None,
        "best_accuracy": None,
    }
    values = None if values is None else np.asarray(values, dtype=np.float64)
    return _first_reached(
        run, values, None if values is None else values >= target, "best_accuracy", np.max, result
    )


# ---- job keys, groups of runs (--group-by), the series CSV (--series) ----------------------------

# Job keys that name a run or its files rather than what it computes: never a reason to keep runs
# apart.
IDENTIFYING_KEYS = ("run.name", "run.out")

# Final values aggregated over the runs of a group: summarize() field → text column heading, format.
GROUP_METRICS: tuple[tuple[str, str, str], ...] = (
    ("avg_model_loss", "avg-loss", ".6f"),
    ("suboptimality", "subopt", ".3e"),
    ("accuracy", "accuracy", ".4f"),
    ("test_loss", "test loss", ".6f"),
    ("consensus_distance", "consensus", ".3e"),
    ("total_bits", "bits", ".4e"),
    ("wall_s", "wall s", ".2f"),
    ("modelled_s", "modelled s", ".4f"),
)


def _cell(value: Any) -> Any:
    """A job value as one CSV cell / hashable: TOML spelling for booleans, compact JSON for arrays
    and tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return value


def job_keys(run: Run) -> dict[str, Any]:
    """The run's resolved job as ``section.key`` → value (one level; arrays and sub-tables as JSON
    text)."""
    out: dict[str, Any] = {}
    for section, table in run.job.items():
        if isinstance(table, dict):
            for key, value in table.items():
                out[f"{section}.{key}"] = _cell(value)
        else:
            out[section] = _cell(table)
    return out


@dataclass
class Group:
    """Runs that differ only in the ``--group-by`` keys (and in their names and files)."""

    label: str
    runs: list[Run]
    keys: list[str]
    values: dict[str, list[Any]] = field(
        default_factory=dict
    )  # group-by key → the members' values, in order


def group_runs(runs: Sequence[Run], keys: Sequence[str]) -> list[Group]:
    """Partition ``runs`` (order kept: a group sits where its first run is) into groups of runs
    whose jobs agree on every key but ``keys`` and ``IDENTIFYING_KEYS``. ``ReportError`` when no
    run's job has a key of ``keys``."""
    flat = [job_keys(r) for r in runs]
    for key in keys:
        if not any(key in f for f in flat):
            known = sorted({k for f in flat for k in f})
            hint = (
                f" (e.g. {', '.join(k for k in known if k.endswith('seed'))})"
                if any(k.endswith("seed") for k in known)
                else ""
            )
            raise ReportError(f"--group-by {key}: no run's job has this key{hint}")
    skip = set(keys) | set(IDENTIFYING_KEYS)
    order: list[tuple] = []
    members: dict[tuple, list[int]] = {}
    for i, (run, f) in enumerate(zip(runs, flat, strict=True)):
        signature = (
            run.algorithm,
            run.compressor,
            run.n,
            tuple(sorted((k, repr(v)) for k, v in f.items() if k not in skip)),
        )
        if signature not in members:
            members[signature] = []
            order.append(signature)
        members[signature].append(i)
    groups = []
    for signature in order:
        idx = members[signature]
        names = list(dict.fromkeys(runs[i].name for i in idx))
        label = names[0] if len(names) == 1 else " + ".join(names)
        groups.append(
            Group(
                label,
                [runs[i] for i in idx],
                list(keys),
                {k: [flat[i].get(k) for i in idx] for k in keys},
            )
        )
    labels = [g.label for g in groups]
    if len(set(labels)) < len(
        labels
    ):  # same name, different settings: name the settings that tell them apart
        sigs = [dict(s[3]) for s in order]
        differ = [
            k
            for k in dict.fromkeys(k for s in sigs for k in s)
            if len({s.get(k) for s in sigs}) > 1
        ]
        for g, sig in zip(groups, sigs, strict=True):
            if labels.count(g.label) > 1:
                g.label += " [" + ", ".join(f"{k}={sig.get(k, '-')}" for k in differ[:3]) + "]"
        for i, g in enumerate(groups):
            if [x.label for x in groups].count(g.label) > 1:
                g.label += f" #{i + 1}"
    return groups


def _stats(values: Sequence[Any]) -> tuple[Any, Any, Any]:
    """(mean, min, max) of the finite numbers among ``values`` (None, None, None without any)."""
    finite = [
        float(v)
        for v in values
        if v is not None and not isinstance(v, bool) and math.isfinite(float(v))
    ]
    if not finite:
        return None, None, None
    return _clean(sum(finite) / len(finite)), _clean(min(finite)), _clean(max(finite))


def group_record(group: Group) -> dict[str, Any]:
    """A group's final values: for each of ``GROUP_METRICS`` its mean, min and max over the runs."""
    recs = [summarize(r) for r in group.runs]
    out: dict[str, Any] = {
        "group": group.label,
        "runs": len(group.runs),
        "partial": sum(r["partial"] for r in recs),
        "files": [r["file"] for r in recs],
        "members": [r["run"] for r in recs],
        "group_by": dict(group.values.items()),
    }
    for name, *_ in GROUP_METRICS:
        mean, low, high = _stats([r[name] for r in recs])
        out[name] = {"mean": mean, "min": low, "max": high}
    return out


def aggregate_rows(
    arrays: Sequence[np.ndarray | None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Row-wise (mean, min, max) over the runs' series of one group, finite values only, over the
    rows every run has (a partial run shortens the group's curve); None when no run has the
    series."""
    have = [np.asarray(a, dtype=np.float64) for a in arrays if a is not None]
    if not have:
        return None
    rows = min(a.shape[0] for a in have)
    stack = np.stack([a[:rows] for a in have])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: NaN, said nothing
        return np.nanmean(stack, axis=0), np.nanmin(stack, axis=0), np.nanmax(stack, axis=0)


def render_series_csv(runs: Sequence[Run], groups: Sequence[Group] | None = None) -> str:
    """The tidy series CSV: one row per run × logged step. Columns: run (label), file, group (with
    ``--group-by``), step, every global series of the files (base ones first, then algorithm
    extras), modelled_s, then every job key as section.key (empty where a run's job lacks it). Empty
    cell: no value (NaN)."""
    names: list[str] = [k for k in BASE_GLOBAL_SERIES if any(k in r.global_series for r in runs)]
    for run in runs:
        names += [k for k in run.global_extras if k not in names]
    flats = [job_keys(r) for r in runs]
    keys: list[str] = list(dict.fromkeys(k for f in flats for k in f))
    group_of = {id(r): g.label for g in groups or () for r in g.runs}
    columns = ["run", "file", *(["group"] if groups else []), "step", *names, "modelled_s", *keys]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for run, flat in zip(runs, flats, strict=True):
        modelled = run.modelled_time()
        series = [run.glob(k) for k in names] + [modelled]
        job = ["" if flat.get(k) is None else flat[k] for k in keys]
        head = [run.label, run.path, *([group_of.get(id(run), "")] if groups else [])]
        for i in range(run.rows):
            values = []
            for s in series:
                v = None if s is None or i >= s.shape[0] else _clean(s[i])
                values.append("" if v is None else v)
            writer.writerow([*head, int(run.steps[i]), *values, *job])
    return buffer.getvalue()


def render_groups_text(groups: Sequence[Group]) -> list[str]:
    keys = groups[0].keys if groups else []
    out = [
        "",
        f"groups: runs that differ only in {', '.join(keys)} — mean [min–max] over the runs, last "
        "logged step",
    ]
    rows = []
    for g in groups:
        rec = group_record(g)
        values = "; ".join(f"{', '.join(str(v) for v in vals)}" for vals in g.values.values())
        partial = f" ({rec['partial']} partial)" if rec["partial"] else ""
        cells = [g.label, f"{rec['runs']}{partial}", values]
        for name, _, spec in GROUP_METRICS:
            st = rec[name]
            if st["mean"] is None:
                cells.append("-")
            elif rec["runs"] == 1 or st["min"] == st["max"]:
                cells.append(_num(st["mean"], spec))
            else:
                cells.append(
                    f"{_num(st['mean'], spec)} [{_num(st['min'], spec)}–{_num(st['max'], spec)}]"
                )
        rows.append(cells)
    used = [i for i in range(len(GROUP_METRICS)) if any(r[3 + i] != "-" for r in rows)]
    heads = ["group", "runs", ", ".join(keys)] + [GROUP_METRICS[i][1] for i in used]
    out += grid(heads, [r[:3] + [r[3 + i] for i in used] for r in rows], left=3)
    return out


def render_groups_csv(groups: Sequence[Group]) -> str:
    """One row per group: group, runs, partial, the group-by keys' values (space-separated),
    members, and for each of ``GROUP_METRICS`` its ``_mean``, ``_min``, ``_max``."""
    recs = [group_record(g) for g in groups]
    keys = groups[0].keys if groups else []
    columns = [
        "group",
        "runs",
        "partial",
        *keys,
        "members",
        *(f"{m}_{s}" for m, *_ in GROUP_METRICS for s in ("mean", "min", "max")),
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for g, rec in zip(groups, recs, strict=True):
        row = [
            rec["group"],
            rec["runs"],
            rec["partial"],
            *(" ".join(str(v) for v in g.values[k]) for k in keys),
            "; ".join(rec["members"]),
        ]
        for m, *_ in GROUP_METRICS:
            row += ["" if rec[m][s] is None else rec[m][s] for s in ("mean", "min", "max")]
        writer.writerow(row)
    return buffer.getvalue()


# ---- several runs --------------------------------------------------------------------------------


def records(
    runs: Sequence[Run],
    budgets: Sequence[float] = (),
    target: float | None = None,
    target_accuracy: float | None = None,
) -> list[dict[str, Any]]:
    """One record per run: ``summarize`` plus the queries (the JSON output)."""
    out = []
    for run in runs:
        rec = summarize(run)
        if budgets:
            rec["budgets"] = [budget_query(run, b) for b in budgets]
        if target is not None:
            rec["target"] = target_query(run, target)
        if target_accuracy is not None:
            rec["target_accuracy"] = accuracy_target_query(run, target_accuracy)
        out.append(rec)
    return out


def render_json(
    runs: Sequence[Run],
    budgets: Sequence[float] = (),
    target: float | None = None,
    target_accuracy: float | None = None,
    groups: Sequence[Group] | None = None,
) -> str:
    document: dict[str, Any] = {
        "note": MODEL_NOTE,
        "runs": records(runs, budgets, target, target_accuracy),
    }
    if groups:
        document["groups"] = [group_record(g) for g in groups]
    return json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _flat(rec: dict[str, Any]) -> dict[str, Any]:
    flat = {
        k: v
        for k, v in rec.items()
        if k not in ("extras", "events", "budgets", "target", "target_accuracy")
    }
    for name, stats in rec["extras"].items():
        flat[f"extra.{name}.mean"] = stats["mean"]
        flat[f"extra.{name}.max"] = stats["max"]
    for name, stats in rec["events"].items():
        flat[f"events.{name}.count"] = stats["count"]
        flat[f"events.{name}.fraction"] = stats["fraction"]
    for query in rec.get("budgets", []):
        key = f"{query['bits']:g}"
        flat[f"loss_at_bits_{key}"] = query["avg_model_loss"]
        flat[f"suboptimality_at_bits_{key}"] = query["suboptimality"]
        flat[f"step_at_bits_{key}"] = query["step"]
    if "target" in rec:
        t = rec["target"]
        for key in ("step", "bits", "wall_s", "modelled_s"):
            flat[f"target_{key}"] = t[key]
        flat["target_loss"] = t["target"]
        flat["target_reached"] = t["reached"]
    if "target_accuracy" in rec:
        t = rec["target_accuracy"]
        flat["target_accuracy"] = t["target"]
        flat["target_accuracy_set"] = t["accuracy_set"]
        flat["target_accuracy_reached"] = t["reached"]
        for key in ("step", "bits", "wall_s", "modelled_s"):
            flat[f"target_accuracy_{key}"] = t[key]
    return flat


def render_csv(
    runs: Sequence[Run],
    budgets: Sequence[float] = (),
    target: float | None = None,
    target_accuracy: float | None = None,
    groups: Sequence[Group] | None = None,
) -> str:
    """One row per run; empty cells where a value does not exist (or a query was not reached). With
    ``groups`` (--group-by): one row per group (``render_groups_csv``)."""
    if groups:
        return render_groups_csv(groups)
    rows = [_flat(r) for r in records(runs, budgets, target, target_accuracy)]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buffer.getvalue()


def _num(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _status(rec: dict[str, Any]) -> str:
    return f"{rec['status']} (partial)" if rec["partial"] else rec["status"]


def render_text(
    runs: Sequence[Run],
    budgets: Sequence[float] = (),
    target: float | None = None,
    target_accuracy: float | None = None,
    groups: Sequence[Group] | None = None,
) -> str:
    """The comparison table (blocks: runs, final values, the test set when a run has per-node test
    metrics, extras), the queries and the notes."""
    recs = records(runs, budgets, target, target_accuracy)
    out = ["runs"]
    out += grid(
        ["run", "status", "algorithm", "compressor", "topology", "n", "steps"],
        [
            [
                r["run"],
                _status(r),
                r["algorithm"],
                r["compressor"],
                r["topology"],
                str(r["n"]),
                f"{r['steps']}/{r['steps_requested'] if r['steps_requested'] is not None else '?'}",
            ]
            for r in recs
        ],
        left=5,
    )
    out += ["", "final values (last logged step)"]
    test_marked = False
    rows = []
    for r in recs:
        acc = _num(r["accuracy"], ".4f")
        if r["accuracy_set"] == "test" and acc != "-":
            acc += " t"
            test_marked = True
        share = r["compute_share"]
        rows.append(
            [
                r["run"],
                _num(r["avg_model_loss"], ".6f"),
                _num(r["suboptimality"], ".3e"),
                acc,
                _num(r["consensus_distance"], ".3e"),
                _num(r["total_bits"], ".4e"),
                _num(r["total_bytes"], "d"),
                _num(r["bits_per_step_per_node"], ".1f"),
                _num(r["wall_s"], ".2f"),
                "-" if share is None else f"{100 * share:.0f}/{100 * (1 - share):.0f}%",
                _num(r["modelled_s"], ".4f"),
            ]
        )
    out += grid(
        [
            "run",
            "avg-loss",
            "subopt",
            "accuracy",
            "consensus",
            "bits",
            "bytes",
            "bits/node/step",
            "wall s",
            "compute/comm",
            "modelled s",
        ],
        rows,
    )
    if any(
        r["node_test_accuracy_mean"] is not None or r["node_test_loss_mean"] is not None
        for r in recs
    ):
        out += [
            "",
            (
                "test set (last logged step): the average model (avg), and each node's own model "
                "(node: min / mean / max over ranks)"
            ),
        ]
        test_rows = [
            [
                r["run"],
                _num(r["test_accuracy"], ".4f"),
                _num(r["node_test_accuracy_min"], ".4f"),
                _num(r["node_test_accuracy_mean"], ".4f"),
                _num(r["node_test_accuracy_max"], ".4f"),
                _num(r["test_loss"], ".6f"),
                _num(r["node_test_loss_min"], ".6f"),
                _num(r["node_test_loss_mean"], ".6f"),
                _num(r["node_test_loss_max"], ".6f"),
            ]
            for r in recs
            if r["test_loss"] is not None or r["node_test_loss_mean"] is not None
        ]
        out += grid(
            [
                "run",
                "avg acc",
                "node acc min",
                "node acc mean",
                "node acc max",
                "avg loss",
                "node loss min",
                "node loss mean",
                "node loss max",
            ],
            test_rows,
        )
    extra_rows = []
    for r in recs:
        for name, stats in r["extras"].items():
            unit = f" [{stats['unit']}]" if stats["unit"] else ""
            extra_rows.append(
                [r["run"], f"{name}{unit}", _num(stats["mean"], ".6g"), _num(stats["max"], ".6g")]
            )
        for name, stats in r["events"].items():
            extra_rows.append(
                [
                    r["run"],
                    f"{name} (events)",
                    f"{stats['count']} of {stats['of']}",
                    f"{100 * stats['fraction']:.2f}%",
                ]
            )
    if groups:
        out += render_groups_text(groups)
    if extra_rows:
        out += [
            "",
            "algorithm extras (last logged value: mean and max over ranks; events: count and "
            "share)",
        ]
        out += grid(["run", "series", "mean / count", "max / share"], extra_rows, left=2)
    if budgets:
        out += [
            "",
            "loss at bit budgets (all ranks' bits; linear interpolation between log points)",
        ]
        qrows = []
        for r in recs:
            for q in r["budgets"]:
                if q["reached"]:
                    qrows.append(
                        [
                            r["run"],
                            f"{q['bits']:.4g}",
                            _num(q["avg_model_loss"], ".6f"),
                            _num(q["suboptimality"], ".3e"),
                            _num(q["step"], ".1f"),
                        ]
                    )
                else:
                    ended = (
                        "(no data)"
                        if r["total_bits"] is None
                        else f"(ended at {r['total_bits']:.4g} bits)"
                    )
                    qrows.append([r["run"], f"{q['bits']:.4g}", "not reached", "-", ended])
        out += grid(["run", "budget bits", "avg-loss", "subopt", "≈ step"], qrows)
    if target is not None:
        out += ["", f"first logged step with avg-model loss ≤ {target:g}"]
        trows = []
        for r in recs:
            t = r["target"]
            if t["reached"]:
                trows.append(
                    [
                        r["run"],
                        str(t["step"]),
                        _num(t["bits"], ".4e"),
                        _num(t["wall_s"], ".2f"),
                        _num(t["modelled_s"], ".4f"),
                    ]
                )
            else:
                trows.append(
                    [r["run"], "not reached", f"(best {_num(t['best_loss'], '.6f')})", "-", "-"]
                )
        out += grid(["run", "step", "bits", "wall s", "modelled s"], trows)
    if target_accuracy is not None:
        out += [
            "",
            (
                f"first logged step with average-model accuracy ≥ {target_accuracy:g} "
                "(test set; the training set for runs without one)"
            ),
        ]
        arows = []
        for r in recs:
            t = r["target_accuracy"]
            kind = t["accuracy_set"] or "-"
            if t["reached"]:
                arows.append(
                    [
                        r["run"],
                        kind,
                        str(t["step"]),
                        _num(t["bits"], ".4e"),
                        _num(t["wall_s"], ".2f"),
                        _num(t["modelled_s"], ".4f"),
                    ]
                )
            elif t["accuracy_set"] is None:
                arows.append([r["run"], kind, "no accuracy", "(regression or no series)", "-", "-"])
            else:
                arows.append(
                    [
                        r["run"],
                        kind,
                        "not reached",
                        f"(best {_num(t['best_accuracy'], '.4f')})",
                        "-",
                        "-",
                    ]
                )
        out += grid(["run", "accuracy on", "step", "bits", "wall s", "modelled s"], arows, left=2)
    notes = []
    if test_marked:
        notes.append("accuracy: on the test set where marked t, else on the training set")
    links = sorted(
        {
            (r["link_bandwidth_bps"], r["link_latency_s"], r["link_shared"], r["link_source"])
            for r in recs
        }
    )
    link_text = "; ".join(f"{LinkModel(b, lat, s).describe()} ({src})" for b, lat, s, src in links)
    notes.append(f"{MODEL_NOTE}; link: {link_text}")
    for r in recs:
        if r["partial"]:
            notes.append(f"{r['run']} is partial: {r['partial_reason']} ({r['file']})")
    out += [""] + [f"note: {n}" for n in notes]
    return "\n".join(out) + "\n"
