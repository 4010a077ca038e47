"""PNG figures of one or more runs (matplotlib's Agg canvas, no pyplot state), and the topology
drawing.

Every figure has a fixed size (``FIGSIZE`` inches at ``DPI``: 800 × 500 pixels; the topology drawing
``TOPOLOGY_FIGSIZE``: 700 × 700), a title, axis labels with units and a legend naming each run. A y
axis is logarithmic when its positive values span at least a decade (never for accuracy); a bits or
modelled-time x axis when the runs' final values differ by a decade (steps stay linear;
accuracy_vs_bits is always log in x); a log axis' minor tick label that would print over another
label is left blank. Each run keeps one colour in every figure. ``write_plots`` returns the files it
wrote; figures whose data no run has are not written.

Files (in the ``--plot`` folder):

    loss_vs_step.png, loss_vs_bits.png, loss_vs_modelled_time.png          average-model loss f(x̄)
    suboptimality_vs_step.png, ..._vs_bits.png, ..._vs_modelled_time.png   f(x̄) − f* (runs with f*)
    accuracy_vs_step.png          test accuracy of x̄ (training accuracy for runs without a test set)
    accuracy_vs_bits.png          the same vs cumulative bits (log x), with the min–max band over
                                  ranks of each node's own test accuracy (per-rank test_accuracy)
                                  where the file has it
    consensus_vs_step.png         (1/n) Σ‖x_i − x̄‖²
    rank_spread.png               local objective F_i(x_i) per rank: min–max band and mean
    extra_<name>.png              an algorithm's per-rank series (push_sum_weight, paper_bits, ...)
    staleness.png                 histogram and per-step mean/max of /metrics/rank/staleness_mean
    stragglers.png                raster of /events/stragglers (step × rank)
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Sequence
from typing import cast

import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import Formatter
from matplotlib.transforms import Bbox

from mpidecent.comm.linkmodel import LinkModel
from mpidecent.io.reader import Run
from mpidecent.report.tables import aggregate_rows

FIGSIZE = (8.0, 5.0)
TOPOLOGY_FIGSIZE = (7.0, 7.0)
DPI = 100
STALENESS = "staleness_mean"
STRAGGLERS = "stragglers"
_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)

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
    _unclutter_log_axes(fig)
    fig.savefig(path, dpi=DPI, format="png")  # no bbox_inches="tight": the pixel size stays fixed
    return path


# Tick labels closer than this (pixels) count as printing over each other.
_LABEL_GAP_PX = 2.0


class _LabelsOnlyAt(Formatter):
    """A minor-tick formatter that writes ``inner``'s label at the ``keep`` tick values only and
    an empty label elsewhere."""

    def __init__(self, inner: Formatter, keep: Sequence[float]) -> None:
        self.inner = inner
        self.keep = np.asarray(keep, dtype=np.float64)

    def set_axis(self, axis) -> None:
        super().set_axis(axis)
        self.inner.set_axis(axis)

    def set_locs(self, locs) -> None:
        super().set_locs(locs)
        self.inner.set_locs(locs)  # a LogFormatter picks which minor labels to write here

    def __call__(self, x: float, pos: int | None = None) -> str:
        if np.any(np.isclose(self.keep, x, rtol=1e-9, atol=0.0)):
            return self.inner(x, pos)
        return ""


def _drawn_labels(axis, renderer, minor: bool) -> list[tuple[float, Bbox]]:
    """(tick value, label extent in pixels) of the axis' labels drawn at the last draw: non-empty,
    inside the view. Called after ``fig.canvas.draw()``, which gave each tick its label."""
    lo, hi = sorted(axis.get_view_interval())
    locs = axis.get_minorticklocs() if minor else axis.get_majorticklocs()
    ticks = axis.get_minor_ticks(len(locs)) if minor else axis.get_major_ticks(len(locs))
    drawn = []
    for loc, tick in zip(locs, ticks, strict=True):
        label = tick.label1
        if lo <= loc <= hi and label.get_visible() and label.get_text():
            drawn.append((float(loc), label.get_window_extent(renderer)))
    return drawn


def _unclutter_log_axes(fig: Figure) -> None:
    """Blank the minor tick labels of log axes that would print over another tick label.

    matplotlib labels a log axis' minor ticks when it spans under about two decades (2, 3, 4, 6 ×
    10^k; on a short axis every tick) without checking that they fit: 3×10⁻³ and 4×10⁻³ overprinted
    on the modelled-time figures. Here the figure is laid out and drawn, every major label is kept,
    and each log axis keeps its minor labels from low to high values while they clear (by
    ``_LABEL_GAP_PX``) every label kept so far, x and y; a few rounds, as fewer labels can change
    the layout. A log axis without a decade in view keeps its first minor label at least."""
    if not any("log" in (ax.get_xscale(), ax.get_yscale()) for ax in fig.axes):
        return
    for _ in range(4):
        canvas = cast(FigureCanvasAgg, fig.canvas)  # _figure's
        canvas.draw()
        render = canvas.get_renderer()
        changed = False
        for ax in fig.axes:
            logs = [a for a in (ax.xaxis, ax.yaxis) if a.get_scale() == "log"]
            if not logs:
                continue
            kept = [box for a in (ax.xaxis, ax.yaxis) for _, box in _drawn_labels(a, render, False)]
            for axis in logs:
                drawn = _drawn_labels(axis, render, True)
                keep = []
                for loc, box in drawn:
                    if not any(box.padded(_LABEL_GAP_PX).overlaps(k) for k in kept):
                        kept.append(box)
                        keep.append(loc)
                if len(keep) < len(drawn):
                    inner = axis.get_minor_formatter()
                    if isinstance(inner, _LabelsOnlyAt):
                        inner = inner.inner
                    axis.set_minor_formatter(_LabelsOnlyAt(inner, keep))
                    changed = True
        if not changed:
            return


def spans_decades(*arrays: np.ndarray | None) -> bool:
    """Do the positive finite values span a factor of 10 or more?"""
    values = [np.asarray(a, dtype=np.float64).ravel() for a in arrays if a is not None]
    if not values:
        return False
    v = np.concatenate(values)
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and v.max() / v.min() >= 10.0


def ends_differ_by_decades(*arrays: np.ndarray | None) -> bool:
    """Do the curves' largest x values differ by a factor of 10 or more (one run would be squeezed
    into a corner of a linear axis)?"""
    ends = []
    for a in arrays:
        v = np.asarray(a, dtype=np.float64).ravel() if a is not None else np.zeros(0)
        v = v[np.isfinite(v) & (v > 0)]
        if v.size:
            ends.append(v.max())
    return len(ends) > 1 and max(ends) / min(ends) >= 10.0


def _color(i: int) -> str:
    return _COLORS[i % len(_COLORS)]


_LINESTYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def _style(i: int, points: int = 0) -> dict:
    """Run i's line style: colour, line style and marker all cycle (at different periods), so runs
    whose curves lie on top of each other stay distinguishable, also in grey; about a dozen markers
    per line."""
    return {
        "color": _color(i),
        "linestyle": _LINESTYLES[i % len(_LINESTYLES)],
        "marker": _MARKERS[i % len(_MARKERS)],
        "markersize": 4,
        "markevery": max(1, points // 12) if points else 1,
        "linewidth": 1.4,
    }


def informative(*arrays: np.ndarray | None) -> bool:
    """Is there anything to see: at least one finite value, and not one value everywhere (all zero,
    a constant)?"""
    values = [np.asarray(a, dtype=np.float64).ravel() for a in arrays if a is not None]
    v = np.concatenate(values) if values else np.zeros(0)
    v = v[np.isfinite(v)]
    return v.size > 0 and bool(v.max() > v.min())


def _finish(
    ax,
    title: str,
    xlabel: str,
    ylabel: str,
    ys: list,
    xlog: bool = False,
    legend: bool = True,
    ylog: bool = True,
) -> None:
    """Title, labels, grid, legend; y logarithmic when its values span decades (and ``ylog``), x
    when asked."""
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


# (label, style index, x, y[, (low, high)]): one run, or a group's mean with its min–max band
Curve = tuple


def _line_figure(
    path: str,
    curves: list[Curve],
    title: str,
    xlabel: str,
    ylabel: str,
    x_may_log: bool = False,
    ylog: bool = True,
    xlog_always: bool = False,
) -> str | None:
    """One line per curve (label, style index, x, y, optional (low, high) band); None (no file) when
    there is nothing to draw or nothing to see (no finite value, or one value everywhere: e.g. a
    consensus distance of 0 in every all-reduce run). Steps stay on a linear axis; bits always on a
    log axis (``xlog_always``); with ``x_may_log`` (modelled time) x is logarithmic when the runs'
    ranges differ by decades. A curve with no point on a log axis (no bits sent; y never > 0) is
    named in the legend with the reason."""
    curves = [
        c
        for c in curves
        if c[2] is not None and c[3] is not None and c[2].size and np.any(np.isfinite(c[3]))
    ]
    if not curves or not informative(*(c[3] for c in curves)):
        return None
    fig = _figure()
    ax = fig.add_subplot()
    xlog = xlog_always or (x_may_log and ends_differ_by_decades(*(c[2] for c in curves)))
    ys = [c[3] for c in curves] + [
        b for c in curves if len(c) > 4 and c[4] is not None for b in c[4]
    ]
    ylog = ylog and spans_decades(*ys)
    for curve in curves:
        label, i, x, y = curve[:4]
        band = curve[4] if len(curve) > 4 else None
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        keep = np.isfinite(x) & np.isfinite(y)
        if xlog:  # points at x ≤ 0 (step 0: no bits sent, no time yet) have no place on a log axis
            keep &= x > 0
        if ylog:
            keep &= y > 0
        style = _style(i, int(keep.sum()))
        if not keep.any():
            why = "sent no bits" if xlog and not np.any(x > 0) else "no value > 0"
            ax.plot([], [], **style, label=f"{label} ({why}: not on this log axis)")
            continue
        ax.plot(x[keep], y[keep], label=label, zorder=3, **style)
        if band is not None:
            low, high = (np.asarray(b, dtype=np.float64)[keep] for b in band)
            ax.fill_between(
                x[keep],
                low,
                high,
                color=style["color"],
                alpha=0.15,
                linewidth=0.8,
                edgecolor=style["color"],
                zorder=1,
            )
    if any(len(c) > 4 and c[4] is not None for c in curves):
        title += "\n(line: mean over the runs of a group; band: their min–max)"
    _finish(ax, title, xlabel, ylabel, ys, xlog, ylog=ylog)
    return _save(fig, path)


def _accuracy_label(kinds: set[str]) -> str:
    if kinds == {"test"}:
        return "test accuracy of x̄ [fraction]"
    if kinds == {"training"}:
        return "training accuracy of x̄ [fraction] (no test set)"
    return "accuracy of x̄ [fraction] (test; training where marked)"


def _accuracy_bits_figure(path: str, runs: Sequence[Run]) -> str | None:
    """Average-model accuracy (test, else training) vs cumulative bits on a log axis, one line per
    run, and a band between the min and max over ranks of each node's own test accuracy where the
    file has the per-rank series. Log points with no bits sent yet (step 0) have no place on the
    axis; a run that never sends a bit is named in the legend only. None (no file) when no run has
    an accuracy series."""
    have = []
    for i, run in enumerate(runs):
        values, kind = run.accuracy_series()
        bits = run.glob("cumulative_bits")
        if values is not None and bits is not None and run.rows:
            have.append(
                (
                    i,
                    run,
                    np.asarray(bits, dtype=np.float64),
                    np.asarray(values, dtype=np.float64),
                    kind,
                )
            )
    if not have:
        return None
    kinds = {kind for *_, kind in have}
    mixed = len(kinds) > 1
    nodes = {
        i: run.node_test_series("test_accuracy") if kind == "test" else None
        for i, run, *_, kind in have
    }
    banded = any(v is not None for v in nodes.values())
    fig = _figure()
    ax = fig.add_subplot()
    handles: list[Artist | tuple[Artist, Artist]] = []
    labels: list[str] = []
    for i, run, bits, acc, kind in have:
        label = f"{run.label} (training set)" if mixed and kind == "training" else run.label
        keep = bits > 0
        if not keep.any():
            handles.append(ax.plot([], [], **_style(i))[0])
            labels.append(f"{label}: sent no bits, not on this axis")
            continue
        x = bits[keep]
        line = ax.plot(x, acc[keep], zorder=3, **_style(i, x.size))[0]
        handle: Artist | tuple[Artist, Artist] = line
        node = nodes[i]
        if node is not None:
            with np.errstate(all="ignore"):
                low, high = np.nanmin(node[keep], axis=1), np.nanmax(node[keep], axis=1)
            band = ax.fill_between(
                x,
                low,
                high,
                color=_color(i),
                alpha=0.15,
                linewidth=0.8,
                edgecolor=_color(i),
                zorder=1,
            )
            handle = (band, line)
            label = f"{label} (band: {run.n} nodes)"
        handles.append(handle)
        labels.append(label)
    drawn = any(not isinstance(h, Line2D) or np.asarray(h.get_xdata()).size for h in handles)
    title = "Accuracy of the average model vs bits sent"
    if banded:
        title += (
            "\n(line: average model $\\bar{x}$; band: min–max over ranks of each node's own "
            "model $x_i$)"
        )
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
        return link, f"modelled link: {link.describe()}"
    return None, "modelled on each run's link (see legend)"


def _band_figure(
    path: str, runs: Sequence[Run], name: str, title: str, ylabel: str, skip_flat: bool = False
) -> str | None:
    """Per-rank series ``name``: mean line and min–max band over ranks for each run that has it
    (runs keep their style index). One or two runs share one axis (light bands with edges); three or
    more get one panel each (shared axes), where overlapping bands would blend into one colour.
    ``skip_flat``: no figure when the values carry nothing to see (no finite value, or one value
    everywhere, e.g. a counter that stays 0)."""
    have = [
        (i, r)
        for i, r in enumerate(runs)
        if r.rank(name) is not None
        and r.rows
        and np.any(np.isfinite(np.asarray(r.rank(name), dtype=np.float64)))
    ]
    if not have or (skip_flat and not informative(*(r.rank(name) for _, r in have))):
        return None
    fig = _figure()
    panels = len(have) >= 3
    if panels:
        cols = 2 if len(have) <= 4 else 3
        rows = math.ceil(len(have) / cols)
        grid = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
        axes = list(grid.ravel())
        for ax in axes[len(have) :]:
            ax.set_visible(False)
    else:
        axes = [fig.add_subplot()] * len(have)
    ys = []
    for ax, (i, run) in zip(axes[: len(have)], have, strict=True):  # (a grid may have more axes)
        values = run.need_rank(name).astype(np.float64)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", RuntimeWarning
            )  # all-NaN rows (e.g. the master's column) → NaN
            low, high = np.nanmin(values, axis=1), np.nanmax(values, axis=1)
            mean = np.nanmean(values, axis=1)
        style = _style(i, run.rows)
        ax.fill_between(
            run.steps,
            low,
            high,
            color=style["color"],
            alpha=0.15,
            edgecolor=style["color"],
            linewidth=0.8,
            label=f"{run.label}: min–max over {run.n} ranks" if not panels else None,
        )
        ax.plot(run.steps, mean, label=f"{run.label}: mean" if not panels else None, **style)
        ys += [low, high]
        if panels:
            ax.set_title(run.label, fontsize="small", color=style["color"])
    if panels:
        for ax in axes[: len(have)]:
            _finish(ax, ax.get_title(), "", "", ys, legend=False)
            ax.title.set_fontsize("small")
        for ax in grid[-1]:
            ax.set_xlabel(_STEP, fontsize="small")
        for ax in grid[:, 0]:
            ax.set_ylabel(ylabel, fontsize="small")
        fig.suptitle(
            f"{title}\n(line: mean over ranks; band: min–max over ranks)", fontsize="medium"
        )
    else:
        _finish(axes[0], title, _STEP, ylabel, ys)
    return _save(fig, path)


def _staleness_figure(path: str, runs: Sequence[Run]) -> str | None:
    have = [(i, r) for i, r in enumerate(runs) if r.rank(STALENESS) is not None and r.rows]
    if not have:
        return None
    fig = _figure()
    left, right = fig.subplots(1, 2)
    unit = have[0][1].unit("rank", STALENESS) or "steps"
    for i, run in have:
        values = run.need_rank(STALENESS).astype(np.float64)
        rows = values[1:] if run.rows > 1 else values  # row 0 is before the first step
        finite = rows[np.isfinite(rows)]
        if finite.size:
            left.hist(
                finite,
                bins=min(30, max(5, int(np.sqrt(finite.size)))),
                color=_color(i),
                alpha=0.5,
                label=run.label,
            )
        with np.errstate(all="ignore"):
            right.plot(
                run.steps,
                np.nanmean(values, axis=1),
                label=f"{run.label}: mean",
                **_style(i, run.rows),
            )
            right.plot(
                run.steps,
                np.nanmax(values, axis=1),
                color=_color(i),
                linestyle=":",
                linewidth=1.0,
                label=f"{run.label}: max",
            )
    left.set_title("Staleness of the models used (all ranks, all log points)", fontsize="medium")
    left.set_xlabel(f"staleness per rank, mean since the previous log point [{unit}]")
    left.set_ylabel("count [rank × log point]")
    left.grid(True, alpha=0.3)
    left.legend(loc="best", fontsize="small")
    _finish(
        right,
        "Staleness vs step (over ranks)",
        _STEP,
        f"staleness [{unit}]",
        [r.rank(STALENESS) for _, r in have],
    )
    right.title.set_fontsize("medium")
    fig.suptitle("Staleness (asynchronous runs)")
    return _save(fig, path)


STRAGGLER_BINS = (
    120  # at most this many columns in stragglers.png: longer runs are drawn in bins of steps
)


def _stragglers_figure(path: str, runs: Sequence[Run]) -> str | None:
    """Raster of /events/stragglers (step × worker) per run that has any event; None when no run has
    one. Runs longer than ``STRAGGLER_BINS`` steps are drawn in bins of k steps, shaded by the share
    of the bin's steps at which the worker straggled (a barcode of single steps is unreadable)."""
    have = []
    for i, r in enumerate(runs):
        data = np.asarray(r.events.get(STRAGGLERS, np.zeros((0, 0)))).astype(bool)
        if data.ndim == 2 and data.size:
            have.append((i, r, data))
    if not have or not any(d.any() for *_, d in have):
        return None
    fig = _figure()
    axes = fig.subplots(len(have), 1, squeeze=False)[:, 0]
    longest = max(d.shape[0] for *_, d in have)
    k = max(1, math.ceil(longest / STRAGGLER_BINS))
    image = None
    for ax, (i, run, data) in zip(axes, have, strict=True):
        steps, n = data.shape
        bins = math.ceil(steps / k)
        padded = np.zeros((bins * k, n))
        padded[:steps] = data
        counts = np.full(bins * k, 0.0)
        counts[:steps] = 1.0
        with np.errstate(all="ignore"):
            share = (
                padded.reshape(bins, k, n).sum(axis=1)
                / counts.reshape(bins, k).sum(axis=1)[:, None]
            )
        image = ax.imshow(
            share.T,
            aspect="auto",
            interpolation="nearest",
            cmap="Greys",
            vmin=0,
            vmax=1,
            origin="lower",
            extent=(0, bins * k, -0.5, n - 0.5),
        )
        total = 100.0 * data.sum() / data.size
        ax.set_title(
            f"{run.label}: {int(data.sum())} of {data.size} worker-steps ({total:.1f}%)",
            fontsize="small",
            color=_color(i),
        )
        ax.set_xlim(0, math.ceil(longest / k) * k)  # one step axis for all runs
        ax.set_yticks(range(n))
        ax.tick_params(labelsize="x-small")
        ax.set_ylabel("worker", fontsize="small")
    axes[-1].set_xlabel(_STEP if k == 1 else f"{_STEP}, in bins of {k} steps")
    what = (
        "black: the master went on without that worker at that step"
        if k == 1
        else f"shade: share of the {k} steps of a bin at which the master went on without that "
        "worker"
    )
    fig.suptitle(f"Stragglers (worker w = rank w + 1)\n{what}", fontsize="medium")
    if k > 1 and image is not None:
        fig.colorbar(image, ax=list(axes), label="straggler share", shrink=0.9)
    return _save(fig, path)


# in the --plot folder: the figures the last report wrote there, one a line
MANIFEST = ".mpidecent-figures"


def _clear_previous(directory: str, keep: set[str]) -> None:
    """Remove the figures an earlier report wrote into ``directory`` (listed in its manifest) that
    this one does not write again; no other file is touched."""
    manifest = os.path.join(directory, MANIFEST)
    try:
        with open(manifest, encoding="utf-8") as f:
            listed = [line.strip() for line in f]
    except OSError:
        return
    for name in listed:
        if name and name not in keep and name == os.path.basename(name) and name.endswith(".png"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, name))


def _entities(runs: Sequence[Run], groups: Sequence | None) -> list[tuple[str, int, list[Run]]]:
    """What a line figure draws: each run (label, style index, [run]), or with ``groups`` each
    group."""
    if groups:
        return [
            (
                tex_safe(g.label)
                if len(g.runs) == 1
                else f"{tex_safe(g.label)} ({len(g.runs)} runs)",
                i,
                list(g.runs),
            )
            for i, g in enumerate(groups)
        ]
    return [(r.label, i, [r]) for i, r in enumerate(runs)]


def _curve(label: str, i: int, members: list[Run], x_of, y_of) -> Curve:
    """One run's curve, or a group's: the mean of x and y over its runs and the min–max band of
    y."""
    if len(members) == 1:
        return (label, i, x_of(members[0]), y_of(members[0]))
    xs, ys = aggregate_rows([x_of(r) for r in members]), aggregate_rows([y_of(r) for r in members])
    if xs is None or ys is None:
        return (label, i, None, None)
    return (label, i, xs[0], ys[0], (ys[1], ys[2]))


def tex_safe(text: str) -> str:
    """User text (a run name or label, a group's values) for a figure: ``$`` escaped so matplotlib
    draws it as typed instead of parsing it as mathtext (``$\\frac{a$`` would raise while
    saving)."""
    return str(text).replace("$", r"\$")


def write_plots(runs: Sequence[Run], directory: str, groups: Sequence | None = None) -> list[str]:
    """``_write_plots`` with the runs' labels made safe for matplotlib (``tex_safe``) while it
    draws."""
    saved = [run.label for run in runs]
    try:
        for run in runs:
            run.label = tex_safe(run.label)
        return _write_plots(runs, directory, groups)
    finally:
        for run, label in zip(runs, saved, strict=True):
            run.label = label


def _write_plots(runs: Sequence[Run], directory: str, groups: Sequence | None = None) -> list[str]:
    """Write every figure the runs have something to show for into ``directory`` (created); returns
    the paths. With ``groups`` (``tables.group_runs``, --group-by) the line figures draw each
    group's mean and min–max band. Figures an earlier report wrote there (its manifest) and this one
    does not are removed; the manifest then lists this report's figures."""
    os.makedirs(directory, exist_ok=True)

    def path(name: str) -> str:
        return os.path.join(directory, name)

    entities = _entities(runs, groups)
    written: list[str | None] = []

    def curves(
        y_of, x_of=lambda r: r.steps, only=lambda r: True, label=lambda lab, members: lab
    ) -> list[Curve]:
        out = []
        for lab, i, members in entities:
            members = [r for r in members if only(r)]
            if members:
                out.append(_curve(label(lab, members), i, members, x_of, y_of))
        return out

    def loss(r: Run) -> np.ndarray | None:
        return r.glob("avg_model_loss")

    def sub(r: Run) -> np.ndarray | None:
        return r.glob("suboptimality")

    def bits(r: Run) -> np.ndarray | None:
        return r.glob("cumulative_bits")

    def has_opt(r: Run) -> bool:
        return r.has_optimum()

    written.append(
        _line_figure(
            path("loss_vs_step.png"), curves(loss), "Average-model loss vs step", _STEP, _LOSS
        )
    )
    written.append(
        _line_figure(
            path("suboptimality_vs_step.png"),
            curves(sub, only=has_opt),
            "Suboptimality vs step",
            _STEP,
            _SUB,
        )
    )

    def has_acc(r: Run) -> bool:
        return r.accuracy_series()[0] is not None

    def acc_label(lab: str, members: Sequence[Run]) -> str:
        return f"{lab} ({members[0].accuracy_series()[1]})"

    written.append(
        _line_figure(
            path("accuracy_vs_step.png"),
            curves(lambda r: r.accuracy_series()[0], only=has_acc, label=acc_label),
            "Accuracy of the average model vs step",
            _STEP,
            "accuracy [fraction]",
            ylog=False,
        )
    )
    written.append(
        _line_figure(
            path("loss_vs_bits.png"),
            curves(loss, x_of=bits),
            "Average-model loss vs bits sent",
            _BITS,
            _LOSS,
            xlog_always=True,
        )
    )
    written.append(
        _line_figure(
            path("suboptimality_vs_bits.png"),
            curves(sub, x_of=bits, only=has_opt),
            "Suboptimality vs bits sent",
            _BITS,
            _SUB,
            xlog_always=True,
        )
    )
    written.append(_accuracy_bits_figure(path("accuracy_vs_bits.png"), runs))

    common, link_text = _links(runs)
    modelled_label = (
        (lambda lab, members: lab)
        if common is not None
        else (lambda lab, members: f"{lab} ({members[0].link.describe()})")
    )

    def modelled(r: Run) -> np.ndarray | None:
        return r.modelled_time()

    written.append(
        _line_figure(
            path("loss_vs_modelled_time.png"),
            curves(loss, x_of=modelled, label=modelled_label),
            f"Average-model loss vs modelled time\n({link_text})",
            _MODELLED,
            _LOSS,
            x_may_log=True,
        )
    )
    written.append(
        _line_figure(
            path("suboptimality_vs_modelled_time.png"),
            curves(sub, x_of=modelled, only=has_opt, label=modelled_label),
            f"Suboptimality vs modelled time\n({link_text})",
            _MODELLED,
            _SUB,
            x_may_log=True,
        )
    )

    written.append(
        _line_figure(
            path("consensus_vs_step.png"),
            curves(lambda r: r.glob("consensus_distance")),
            "Consensus distance vs step",
            _STEP,
            r"consensus distance $\frac{1}{n}\sum_i \|x_i - \bar{x}\|^2$",
        )
    )
    spread = (
        "local_objective" if any(r.rank("local_objective") is not None for r in runs) else "loss"
    )
    written.append(
        _band_figure(
            path("rank_spread.png"),
            runs,
            spread,
            r"Per-rank spread: local objective $F_i$ at each rank's model $x_i$"
            if spread == "local_objective"
            else "Per-rank spread: minibatch loss",
            r"local objective $F_i(x_i)$" if spread == "local_objective" else "minibatch loss",
        )
    )
    extras = []
    for r in runs:
        extras += [name for name in r.rank_extras if name not in extras and name != STALENESS]
    for name in extras:
        unit = next((r.unit("rank", name) for r in runs if r.rank(name) is not None), "")
        written.append(
            _band_figure(
                path(f"extra_{name}.png"),
                runs,
                name,
                f"{name} per rank vs step",
                f"{name}{f' [{unit}]' if unit else ''}",
                skip_flat=True,
            )
        )
    written.append(_staleness_figure(path("staleness.png"), runs))
    written.append(_stragglers_figure(path("stragglers.png"), runs))
    files = [w for w in written if w]
    names = [os.path.basename(w) for w in files]
    _clear_previous(directory, set(names))
    with open(path(MANIFEST), "w", encoding="utf-8") as f:
        f.write("".join(f"{name}\n" for name in names))
    return files


# ---- the topology drawing (mpidecent topology --plot) --------------------------------------------


def torus_shape(n: int, edges: np.ndarray) -> tuple[int, int] | None:
    """(rows, cols) when the edges are those of a 2-D torus on n nodes (``topology.graphs.torus``:
    node (r, c) has id r·cols + c), rows and cols ≥ 2; None otherwise."""
    from mpidecent.topology.graphs import torus

    given = {(int(s), int(d)) for s, d in np.asarray(edges).reshape(-1, 2)}
    for rows in range(2, n // 2 + 1):
        if n % rows:
            continue
        try:
            graph = torus(n, rows, n // rows)
        except Exception:  # noqa: BLE001 - a shape the family refuses is not this graph's
            continue
        if {(int(s), int(d)) for s, d in np.asarray(graph.edges).reshape(-1, 2)} == given:
            return rows, n // rows
    return None


def plot_topology(n: int, edges: np.ndarray, directed: bool, path: str, title: str) -> str:
    """Draw a graph: a 2-D torus as its grid (node r·cols + c in row r, column c; the wrap-around
    edges as dashed arcs outside the grid), any other graph on a circle: node i at angle 90° −
    360°·i/n (0 on top, clockwise), arrows src → dst for directed graphs (two opposite edges bend
    apart), plain lines for undirected ones."""
    from matplotlib.patches import FancyArrowPatch

    fig = _figure(TOPOLOGY_FIGSIZE)
    ax = fig.add_subplot()
    shape = torus_shape(n, edges) if n >= 4 else None
    if shape is not None:
        rows, cols = shape
        pos = np.array([[i % cols, -(i // cols)] for i in range(n)], dtype=np.float64)
        pos = pos / max(rows - 1, cols - 1, 1) * 2.0 - np.array([1.0, -1.0])  # grid in [-1, 1]²
        pos[:, 1] += (2.0 - 2.0 * (rows - 1) / max(rows - 1, cols - 1, 1)) / 2 * -1
    else:
        angles = np.pi / 2 - 2 * np.pi * np.arange(n) / max(n, 1)
        pos = np.stack([np.cos(angles), np.sin(angles)], axis=1) if n > 1 else np.zeros((1, 2))
    size = float(np.clip(9000.0 / max(n, 1), 60.0, 500.0))  # marker area, points²
    radius = math.sqrt(size) / 2  # points
    pairs = {(int(s), int(d)) for s, d in np.asarray(edges).reshape(-1, 2)}
    for s, d in sorted(pairs):
        if not directed and s > d:
            continue
        both = (d, s) in pairs
        wrap = shape is not None and (
            abs(s % shape[1] - d % shape[1]) > 1 or abs(s // shape[1] - d // shape[1]) > 1
        )
        bend = 0.12 if directed and both else 0.0
        if wrap:
            # around the torus: an arc bulging out of the grid (up for a row, left for a column)
            assert shape is not None  # (wrap is only true on a torus)
            bend = 0.25 if s % shape[1] == d % shape[1] else -0.25
        patch = FancyArrowPatch(
            pos[s],
            pos[d],
            arrowstyle="-|>" if directed else "-",
            mutation_scale=12 if directed else 1,
            connectionstyle=f"arc3,rad={bend}",
            shrinkA=radius + 1,
            shrinkB=radius + 1,
            color="#999999" if wrap else "#555555",
            linewidth=1.0,
            linestyle="--" if wrap else "-",
            zorder=1,
        )
        ax.add_patch(patch)
    ax.scatter(
        pos[:, 0],
        pos[:, 1],
        s=size,
        color="#cfe3f5",
        edgecolors="#1f77b4",
        linewidths=1.2,
        zorder=2,
    )
    for i, (x, y) in enumerate(pos):
        ax.text(
            x, y, str(i), ha="center", va="center", fontsize=max(6, min(11, int(radius))), zorder=3
        )
    if shape is not None:
        title += f"\n(drawn as its {shape[0]} × {shape[1]} grid; dashed: wrap-around edges)"
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.set_xlim(-1.3, 1.3)
    ax.set_ylim(-1.3, 1.3)
    ax.axis("off")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return _save(fig, path)
