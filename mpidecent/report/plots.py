"""PNG figures of one or more runs (matplotlib's Agg canvas, no pyplot state), and the topology drawing.

Every figure has a fixed size (``FIGSIZE`` inches at ``DPI``: 800 × 500 pixels; the topology drawing
``TOPOLOGY_FIGSIZE``: 700 × 700), a title, axis labels with units and a legend naming each run. A y axis
is logarithmic when its positive values span at least a decade (never for accuracy); a bits or modelled-time x
axis when the runs' final values differ by a decade (steps stay linear; accuracy_vs_bits is always log in x).
Each run keeps one colour in every figure. ``write_plots`` returns the files it wrote; figures whose data no
run has are not written.

Files (in the ``--plot`` folder):

    loss_vs_step.png, loss_vs_bits.png, loss_vs_modelled_time.png          average-model loss f(x̄)
    suboptimality_vs_step.png, ..._vs_bits.png, ..._vs_modelled_time.png   f(x̄) − f* (runs with f*)
    accuracy_vs_step.png          test accuracy of x̄ (training accuracy for runs without a test set)
    accuracy_vs_bits.png          the same vs cumulative bits (log x), with the min–max band over ranks of
                                  each node's own test accuracy (per-rank test_accuracy) where the file has it
    consensus_vs_step.png         (1/n) Σ‖x_i − x̄‖²
    rank_spread.png               local objective F_i(x_i) per rank: min–max band and mean
    extra_<name>.png              an algorithm's per-rank series (push_sum_weight, paper_bits, ...)
    staleness.png                 histogram and per-step mean/max of /metrics/rank/staleness_mean
    stragglers.png                raster of /events/stragglers (step × rank)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mpidecent.comm.linkmodel import LinkModel
from mpidecent.io.reader import Run

FIGSIZE = (8.0, 5.0)
TOPOLOGY_FIGSIZE = (7.0, 7.0)
DPI = 100
STALENESS = "staleness_mean"
STRAGGLERS = "stragglers"
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")

_LOSS = "average-model loss f(x̄)"
_SUB = "suboptimality f(x̄) − f*"
_STEP = "step (iterations)"
_BITS = "cumulative bits sent, all ranks [bits]"
_MODELLED = "modelled time [s]"


def pixel_size(figsize: tuple[float, float] = FIGSIZE) -> tuple[int, int]:
    """(width, height) in pixels of a figure of this size."""
    return round(figsize[0] * DPI), round(figsize[1] * DPI)


def _figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    """A figure on its own Agg canvas: no pyplot, no global backend switch, no display needed."""
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str) -> str:
    fig.savefig(path, dpi=DPI, format="png")  # no bbox_inches="tight": the pixel size stays fixed
    return path


def spans_decades(*arrays: np.ndarray | None) -> bool:
    """Do the positive finite values span a factor of 10 or more?"""
    values = [np.asarray(a, dtype=np.float64).ravel() for a in arrays if a is not None]
    if not values:
        return False
    v = np.concatenate(values)
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and v.max() / v.min() >= 10.0


def ends_differ_by_decades(*arrays: np.ndarray | None) -> bool:
    """Do the curves' largest x values differ by a factor of 10 or more (one run would be squeezed into
    a corner of a linear axis)?"""
    ends = []
    for a in arrays:
        v = np.asarray(a, dtype=np.float64).ravel() if a is not None else np.zeros(0)
        v = v[np.isfinite(v) & (v > 0)]
        if v.size:
            ends.append(v.max())
    return len(ends) > 1 and max(ends) / min(ends) >= 10.0


def _color(i: int) -> str:
    return _COLORS[i % len(_COLORS)]


def _finish(ax, title: str, xlabel: str, ylabel: str, ys: list, xlog: bool = False, legend: bool = True,
            ylog: bool = True) -> None:
    """Title, labels, grid, legend; y logarithmic when its values span decades (and ``ylog``), x when asked."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xlog:
        ax.set_xscale("log", nonpositive="mask")
    if ylog and spans_decades(*ys):
        ax.set_yscale("log", nonpositive="mask")
    ax.grid(True, which="major", alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")


def _line_figure(path: str, curves: list[tuple[str, str, np.ndarray, np.ndarray]], title: str, xlabel: str,
                 ylabel: str, x_may_log: bool = False, ylog: bool = True) -> str | None:
    """One line per (label, colour, x, y); None (no file) when there is nothing to draw. Steps stay on
    a linear axis; with ``x_may_log`` (bits, modelled time) x is logarithmic when the runs' ranges
    differ by decades."""
    curves = [c for c in curves if c[2] is not None and c[3] is not None and c[2].size and np.any(np.isfinite(c[3]))]
    if not curves:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    xlog = x_may_log and ends_differ_by_decades(*(c[2] for c in curves))
    for label, color, x, y in curves:
        if xlog:  # points at x ≤ 0 (step 0: no bits sent, no time yet) have no place on a log axis
            keep = np.asarray(x, dtype=np.float64) > 0
            x, y = x[keep], y[keep]
        ax.plot(x, y, marker="o" if x.size <= 30 else None, markersize=3, color=color, label=label)
    _finish(ax, title, xlabel, ylabel, [c[3] for c in curves], xlog, ylog=ylog)
    return _save(fig, path)


def _accuracy_label(kinds: set[str]) -> str:
    if kinds == {"test"}:
        return "test accuracy of x̄ [fraction]"
    if kinds == {"training"}:
        return "training accuracy of x̄ [fraction] (no test set)"
    return "accuracy of x̄ [fraction] (test; training where marked)"


def _accuracy_bits_figure(path: str, runs: Sequence[Run]) -> str | None:
    """Average-model accuracy (test, else training) vs cumulative bits on a log axis, one line per run,
    and a band between the min and max over ranks of each node's own test accuracy where the file has the
    per-rank series. Log points with no bits sent yet (step 0) have no place on the axis; a run that never
    sends a bit is named in the legend only. None (no file) when no run has an accuracy series."""
    have = []
    for i, run in enumerate(runs):
        values, kind = run.accuracy_series()
        bits = run.glob("cumulative_bits")
        if values is not None and bits is not None and run.rows:
            have.append((i, run, np.asarray(bits, dtype=np.float64), np.asarray(values, dtype=np.float64), kind))
    if not have:
        return None
    kinds = {kind for *_, kind in have}
    mixed = len(kinds) > 1
    nodes = {i: run.node_test_series("test_accuracy") if kind == "test" else None for i, run, *_, kind in have}
    banded = any(v is not None for v in nodes.values())
    fig = _figure()
    ax = fig.add_subplot()
    handles, labels = [], []
    for i, run, bits, acc, kind in have:
        label = f"{run.label} (training set)" if mixed and kind == "training" else run.label
        keep = bits > 0
        if not keep.any():
            handles.append(ax.plot([], [], color=_color(i))[0])
            labels.append(f"{label}: sent no bits, not on this axis")
            continue
        x = bits[keep]
        line = ax.plot(x, acc[keep], marker="o" if x.size <= 30 else None, markersize=3, color=_color(i),
                       zorder=3)[0]
        handle = line
        if nodes[i] is not None:
            with np.errstate(all="ignore"):
                low, high = np.nanmin(nodes[i][keep], axis=1), np.nanmax(nodes[i][keep], axis=1)
            band = ax.fill_between(x, low, high, color=_color(i), alpha=0.18, linewidth=0, zorder=1)
            handle = (band, line)
            label = f"{label} (band: {run.n} nodes)"
        handles.append(handle)
        labels.append(label)
    drawn = any(not isinstance(h, Line2D) or h.get_xdata().size for h in handles)
    title = "Accuracy of the average model vs bits sent"
    if banded:
        title += "\n(line: average model $\\bar{x}$; band: min–max over ranks of each node's own model $x_i$)"
    ax.set_title(title)
    ax.set_xlabel(_BITS)
    ax.set_ylabel(_accuracy_label(kinds))
    if drawn:
        ax.set_xscale("log", nonpositive="mask")
    ax.grid(True, which="major", alpha=0.3)
    # Accuracy rises to the right: that corner stays empty.
    ax.legend(handles, labels, loc="lower right", fontsize="small")
    return _save(fig, path)


def _links(runs: Sequence[Run]) -> tuple[LinkModel | None, str]:
    """The common link model of the runs (None if they differ) and its title text."""
    links = {(r.link.bandwidth_bps, r.link.latency_s, r.link.shared) for r in runs}
    if len(links) == 1:
        link = runs[0].link
        return link, f"modelled on a {link.describe()} link"
    return None, "modelled on each run's link (see legend)"


def _band_figure(path: str, runs: Sequence[Run], name: str, title: str, ylabel: str) -> str | None:
    """Per-rank series ``name``: mean line and min–max band over ranks for each run that has it."""
    have = [(i, r) for i, r in enumerate(runs) if r.rank(name) is not None and r.rows]
    if not have:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    ys = []
    for i, run in have:
        values = run.rank(name).astype(np.float64)
        with np.errstate(all="ignore"):
            low, high = np.nanmin(values, axis=1), np.nanmax(values, axis=1)
            mean = np.nanmean(values, axis=1)
        ax.fill_between(run.steps, low, high, color=_color(i), alpha=0.2, linewidth=0,
                        label=f"{run.label}: min–max over {run.n} ranks")
        ax.plot(run.steps, mean, color=_color(i), label=f"{run.label}: mean")
        ys += [low, high]
    _finish(ax, title, _STEP, ylabel, ys)
    return _save(fig, path)


def _staleness_figure(path: str, runs: Sequence[Run]) -> str | None:
    have = [(i, r) for i, r in enumerate(runs) if r.rank(STALENESS) is not None and r.rows]
    if not have:
        return None
    fig = _figure()
    left, right = fig.subplots(1, 2)
    unit = have[0][1].unit("rank", STALENESS) or "steps"
    for i, run in have:
        values = run.rank(STALENESS).astype(np.float64)
        rows = values[1:] if run.rows > 1 else values  # row 0 is before the first step
        finite = rows[np.isfinite(rows)]
        if finite.size:
            left.hist(finite, bins=min(30, max(5, int(np.sqrt(finite.size)))), color=_color(i), alpha=0.5,
                      label=run.label)
        with np.errstate(all="ignore"):
            right.plot(run.steps, np.nanmean(values, axis=1), color=_color(i), label=f"{run.label}: mean")
            right.plot(run.steps, np.nanmax(values, axis=1), color=_color(i), linestyle="--",
                       label=f"{run.label}: max")
    left.set_title("Staleness of the models used (all ranks, all log points)", fontsize="medium")
    left.set_xlabel(f"staleness per rank, mean since the previous log point [{unit}]")
    left.set_ylabel("count [rank × log point]")
    left.grid(True, alpha=0.3)
    left.legend(loc="best", fontsize="small")
    _finish(right, "Staleness vs step (over ranks)", _STEP, f"staleness [{unit}]",
            [r.rank(STALENESS) for _, r in have])
    right.title.set_fontsize("medium")
    fig.suptitle("Staleness (asynchronous runs)")
    return _save(fig, path)


def _stragglers_figure(path: str, runs: Sequence[Run]) -> str | None:
    have = [(i, r) for i, r in enumerate(runs)
            if STRAGGLERS in r.events and np.asarray(r.events[STRAGGLERS]).ndim == 2]
    if not have:
        return None
    fig = _figure()
    axes = np.atleast_1d(fig.subplots(len(have), 1, squeeze=False)[:, 0])
    for ax, (i, run) in zip(axes, have):
        data = np.asarray(run.events[STRAGGLERS]).astype(bool)  # (steps, n)
        steps, n = data.shape
        ax.imshow(data.T, aspect="auto", interpolation="nearest", cmap="Greys", vmin=0, vmax=1, origin="lower",
                  extent=(-0.5, steps - 0.5, -0.5, n - 0.5))
        share = 100.0 * data.sum() / data.size if data.size else 0.0
        ax.set_title(f"{run.label}: {int(data.sum())} straggler events of {data.size} worker-steps ({share:.1f}%)",
                     fontsize="medium", color=_color(i))
        ax.set_ylabel("worker (rank − 1)")
        ax.set_xlabel(_STEP)
    fig.suptitle("Stragglers (black: the master went on without that worker at that step)")
    return _save(fig, path)


def write_plots(runs: Sequence[Run], directory: str) -> list[str]:
    """Write every figure the runs have data for into ``directory`` (created); returns the paths."""
    os.makedirs(directory, exist_ok=True)
    path = lambda name: os.path.join(directory, name)  # noqa: E731
    colored = [(run, _color(i)) for i, run in enumerate(runs)]
    written: list[str | None] = []

    loss = [(r.label, c, r.steps, r.glob("avg_model_loss")) for r, c in colored]
    written.append(_line_figure(path("loss_vs_step.png"), loss, "Average-model loss vs step", _STEP, _LOSS))
    with_opt = [(r, c) for r, c in colored if r.has_optimum()]
    sub = [(r.label, c, r.steps, r.glob("suboptimality")) for r, c in with_opt]
    written.append(_line_figure(path("suboptimality_vs_step.png"), sub, "Suboptimality vs step", _STEP, _SUB))
    acc = []
    for r, c in colored:
        values, kind = r.accuracy_series()
        if values is not None:
            acc.append((f"{r.label} ({kind})", c, r.steps, values))
    written.append(_line_figure(path("accuracy_vs_step.png"), acc, "Accuracy of the average model vs step", _STEP,
                                "accuracy [fraction]", ylog=False))

    bits = {r.label: r.glob("cumulative_bits") for r, _ in colored}
    written.append(_line_figure(path("loss_vs_bits.png"),
                                [(r.label, c, bits[r.label], r.glob("avg_model_loss")) for r, c in colored],
                                "Average-model loss vs bits sent", _BITS, _LOSS, x_may_log=True))
    written.append(_line_figure(path("suboptimality_vs_bits.png"),
                                [(r.label, c, bits[r.label], r.glob("suboptimality")) for r, c in with_opt],
                                "Suboptimality vs bits sent", _BITS, _SUB, x_may_log=True))
    written.append(_accuracy_bits_figure(path("accuracy_vs_bits.png"), runs))

    common, link_text = _links(runs)

    def modelled_label(r: Run) -> str:
        return r.label if common is not None else f"{r.label} ({r.link.describe()})"

    modelled = {r.label: r.modelled_time() for r, _ in colored}
    written.append(_line_figure(path("loss_vs_modelled_time.png"),
                                [(modelled_label(r), c, modelled[r.label], r.glob("avg_model_loss"))
                                 for r, c in colored],
                                f"Average-model loss vs modelled time\n({link_text})", _MODELLED, _LOSS,
                                x_may_log=True))
    written.append(_line_figure(path("suboptimality_vs_modelled_time.png"),
                                [(modelled_label(r), c, modelled[r.label], r.glob("suboptimality"))
                                 for r, c in with_opt],
                                f"Suboptimality vs modelled time\n({link_text})", _MODELLED, _SUB,
                                x_may_log=True))

    written.append(_line_figure(path("consensus_vs_step.png"),
                                [(r.label, c, r.steps, r.glob("consensus_distance")) for r, c in colored],
                                "Consensus distance vs step", _STEP, "consensus distance (1/n) Σ‖x_i − x̄‖²"))
    spread = "local_objective" if any(r.rank("local_objective") is not None for r in runs) else "loss"
    written.append(_band_figure(path("rank_spread.png"), runs, spread,
                                "Per-rank spread: local objective F_i at each rank's model" if spread ==
                                "local_objective" else "Per-rank spread: minibatch loss",
                                "local objective F_i(x_i)" if spread == "local_objective" else "minibatch loss"))
    extras = []
    for r in runs:
        extras += [name for name in r.rank_extras if name not in extras and name != STALENESS]
    for name in extras:
        unit = next((r.unit("rank", name) for r in runs if r.rank(name) is not None), "")
        written.append(_band_figure(path(f"extra_{name}.png"), runs, name, f"{name} per rank vs step",
                                    f"{name}{f' [{unit}]' if unit else ''}"))
    written.append(_staleness_figure(path("staleness.png"), runs))
    written.append(_stragglers_figure(path("stragglers.png"), runs))
    return [w for w in written if w]


# ---- the topology drawing (mpidecent topology --plot) -----------------------------------------------------


def plot_topology(n: int, edges: np.ndarray, directed: bool, path: str, title: str) -> str:
    """Draw a graph on a circle: node i at angle 90° − 360°·i/n (0 on top, clockwise), arrows src → dst
    for directed graphs (two opposite edges bend apart), plain lines for undirected ones."""
    from matplotlib.patches import FancyArrowPatch

    fig = _figure(TOPOLOGY_FIGSIZE)
    ax = fig.add_subplot()
    angles = np.pi / 2 - 2 * np.pi * np.arange(n) / max(n, 1)
    pos = np.stack([np.cos(angles), np.sin(angles)], axis=1) if n > 1 else np.zeros((1, 2))
    size = float(np.clip(9000.0 / max(n, 1), 60.0, 500.0))  # marker area, points²
    radius = math.sqrt(size) / 2  # points
    pairs = {(int(s), int(d)) for s, d in np.asarray(edges).reshape(-1, 2)}
    for s, d in sorted(pairs):
        if not directed and s > d:
            continue
        both = (d, s) in pairs
        patch = FancyArrowPatch(pos[s], pos[d], arrowstyle="-|>" if directed else "-",
                                mutation_scale=12 if directed else 1,
                                connectionstyle=f"arc3,rad={0.12 if directed and both else 0.0}",
                                shrinkA=radius + 1, shrinkB=radius + 1, color="#555555", linewidth=1.0, zorder=1)
        ax.add_patch(patch)
    ax.scatter(pos[:, 0], pos[:, 1], s=size, color="#cfe3f5", edgecolors="#1f77b4", linewidths=1.2, zorder=2)
    for i, (x, y) in enumerate(pos):
        ax.text(x, y, str(i), ha="center", va="center", fontsize=max(6, min(11, int(radius))), zorder=3)
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.set_xlim(-1.2, 1.2)
    ax.set_ylim(-1.2, 1.2)
    ax.axis("off")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return _save(fig, path)
