"""Tick labels of the report's log axes never print over each other (issue 23: the modelled-time
figures' minor labels, e.g. 3×10⁻³ and 4×10⁻³, overprinted). The figures are rendered for real on
the Agg canvas and the drawn labels' window extents compared."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mpidecent.report import plots


def _drawn_labels(fig) -> list[tuple[str, str, object]]:
    """(axis, text, window extent) of every tick label drawn inside its axis' view, major and
    minor, x and y, of every axes of the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    drawn = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for locs, ticks in (
                (axis.get_majorticklocs(), axis.get_major_ticks),
                (axis.get_minorticklocs(), axis.get_minor_ticks),
            ):
                for loc, tick in zip(locs, ticks(len(locs)), strict=True):
                    label = tick.label1
                    if lo <= loc <= hi and label.get_visible() and label.get_text():
                        box = label.get_window_extent(renderer)
                        drawn.append((axis.axis_name, label.get_text(), box))
    return drawn


def _collisions(fig) -> list[tuple[str, str]]:
    return [
        (f"{a[0]} {a[1]}", f"{b[0]} {b[1]}")
        for a, b in itertools.combinations(_drawn_labels(fig), 2)
        if a[2].overlaps(b[2])
    ]


@pytest.fixture
def saved_figures(monkeypatch) -> list:
    """Every figure the report saves (after ``_save`` has written it), to inspect its labels."""
    figures = []
    save = plots._save

    def keep(fig, path):
        written = save(fig, path)
        figures.append(fig)
        return written

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def _run(x0: float, factor: float, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A run's modelled time: 0 at step 0 (not on a log axis), then log-spaced from x0 to
    factor · x0; and its loss y (y[0] at step 0)."""
    return np.concatenate([[0.0], np.geomspace(x0, factor * x0, y.size - 1)]), y


FALLS = np.geomspace(1.0, 0.01, 13)  # two decades: a log y axis with wide labels
# log y (step 0 is 10×), a tenth of a decade in view
FLAT = np.concatenate([[10.0], np.linspace(0.9, 0.7, 12)])


# Two runs whose modelled times end 10× apart (so x is logarithmic) and span 1.5-1.7 decades, where
# matplotlib labels the minor ticks 2, 3, 4, 6 × 10^k and 3 and 4 collided; the flat loss's y axis
# sees a tenth of a decade and has only minor labels.
@pytest.mark.parametrize(
    ("x0", "factor", "y"),
    [(1.6e-3, 3.4, FALLS), (2.0e-1, 3.0, FALLS), (1.5e-1, 5.0, FLAT)],
    ids=["1.5-decades-ms", "1.5-decades-s", "1.7-decades-flat-loss"],
)
def test_modelled_time_log_axes_do_not_overprint(tmp_path, saved_figures, x0, factor, y):
    fast_x, fast_y = _run(x0, factor, y)
    path = plots._line_figure(
        str(tmp_path / "loss_vs_modelled_time.png"),
        [("fast link", 0, fast_x, fast_y), ("slow link", 1, 10.0 * fast_x, 1.2 * fast_y)],
        "Average-model loss vs modelled time",
        plots._MODELLED,
        plots._LOSS,
        x_may_log=True,
    )
    assert path is not None
    (fig,) = saved_figures
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert _collisions(fig) == []
    # every log axis still names values: at least two labels (decades or, on a short axis, minors)
    for name in ("x", "y"):
        assert len([d for d in _drawn_labels(fig) if d[0] == name]) >= 2, name


def test_the_bits_axis_does_not_overprint(tmp_path, saved_figures):
    """The bits figures are log in x whatever the span: here 1.7 decades."""
    x, y = _run(1.5e3, 50.0, np.linspace(0.9, 0.3, 13))
    plots._line_figure(
        str(tmp_path / "loss_vs_bits.png"),
        [("run", 0, x, y)],
        "Average-model loss vs bits",
        plots._BITS,
        plots._LOSS,
        xlog_always=True,
    )
    (fig,) = saved_figures
    assert fig.axes[0].get_xscale() == "log"
    assert _collisions(fig) == []
