"""Rank 0's progress output during a run.

``Progress(name, steps, quiet)``; ``update(step, values)`` at every log point (``values``:
``avg_model_loss``, ``suboptimality``, ``consensus_distance``, ``cumulative_bits``); ``close()`` at
the end.

* stderr is a terminal: one progress bar line on stderr, redrawn in place, with the latest values,
  the speed and an ETA; ``close()`` ends the line. Nothing goes to stdout, so the summary stays
  readable.
* otherwise (a log file under Slurm, a pipe, tests): one plain, compact line per log point on
  stdout, flushed at once (here cut in two)::

      [quickstart] step  50/500  avg-loss 0.366981  subopt 1.651e-02  consensus 9.86e-01
          bits 2.412e+05    88.2 steps/s  ETA   5.1s

* ``quiet``: nothing at all.

Pure (no MPI): the runner calls it on rank 0 only. Speed and ETA are measured from the construction
of the reporter; pass ``first_step`` when a resumed run starts at a later step.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO


def _eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}" if hours else f"{minutes}:{sec:02d}"


class Progress:
    """Progress of one run on rank 0 (see module docstring)."""

    BAR_WIDTH = 24

    def __init__(
        self,
        name: str,
        steps: int,
        quiet: bool,
        *,
        first_step: int = 0,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.name = name
        self.steps = int(steps)
        self.quiet = quiet
        self.first_step = int(first_step)
        self._stdout = stdout
        self._stderr = stderr
        self._clock = clock
        self._start = clock()
        self._bar_drawn = False
        err = self._err
        self.tty = not quiet and bool(getattr(err, "isatty", lambda: False)())

    @property
    def _out(self) -> IO[str]:
        return self._stdout or sys.stdout

    @property
    def _err(self) -> IO[str]:
        return self._stderr or sys.stderr

    def _speed(self, step: int) -> tuple[float, float]:
        """(steps per second, seconds left), NaN when not known yet."""
        elapsed = self._clock() - self._start
        done = step - self.first_step
        rate = done / elapsed if elapsed > 0 and done > 0 else math.nan
        eta = (self.steps - step) / rate if rate > 0 else math.nan
        return rate, eta

    def line(self, step: int, values: Mapping[str, float]) -> str:
        """The plain line of one log point (the format of log files)."""
        rate, eta = self._speed(step)
        speed = f"{rate:6.1f} steps/s  ETA {eta:5.1f}s" if math.isfinite(eta) else ""
        # only what is known: no optimum (subopt), or a row that was not evaluated ([run]
        # eval_every, eval)
        known = "".join(
            f"{label} {values[key]:{form}}  "
            for label, key, form in (
                ("avg-loss", "avg_model_loss", ".6f"),
                ("subopt", "suboptimality", ".3e"),
                ("consensus", "consensus_distance", ".2e"),
            )
            if math.isfinite(values.get(key, math.nan))
        )
        return (
            f"[{self.name}] step {step:>{len(str(self.steps))}}/{self.steps}  {known}"
            f"bits {values['cumulative_bits']:.3e}  {speed}"
        ).rstrip()

    def bar(self, step: int, values: Mapping[str, float], width: int | None = None) -> str:
        """The terminal line: bar, percentage, values, speed, ETA (cut to the terminal width)."""
        rate, eta = self._speed(step)
        frac = min(max(step / self.steps, 0.0), 1.0) if self.steps else 1.0
        filled = round(frac * self.BAR_WIDTH)
        bar = "█" * filled + "░" * (self.BAR_WIDTH - filled)
        sub = values.get("suboptimality", math.nan)
        loss, cons = (
            values.get("avg_model_loss", math.nan),
            values.get("consensus_distance", math.nan),
        )
        # Most important first: a narrow terminal cuts the end of the line.
        text = (
            f"[{self.name}] {bar} {100 * frac:3.0f}%  step {step}/{self.steps}  ETA {_eta(eta)}"
            f"{f'  {rate:.1f} steps/s' if math.isfinite(rate) else ''}"
            f"{f'  loss {loss:.6f}' if math.isfinite(loss) else ''}"
            f"{f'  subopt {sub:.2e}' if math.isfinite(sub) else ''}"
            f"{f'  cons {cons:.2e}' if math.isfinite(cons) else ''}"
            f"  bits {values['cumulative_bits']:.3e}"
        )
        width = width or shutil.get_terminal_size((120, 24)).columns
        return text[: max(width - 1, 10)]

    def update(self, step: int, values: Mapping[str, float]) -> None:
        if self.quiet:
            return
        if self.tty:
            self._err.write("\r" + self.bar(step, values) + "\x1b[K")
            self._err.flush()
            self._bar_drawn = True
        else:
            print(self.line(step, values), file=self._out, flush=True)

    def close(self) -> None:
        """End the bar's line (terminal); nothing to do for plain lines."""
        if self._bar_drawn:
            self._err.write("\n")
            self._err.flush()
            self._bar_drawn = False
