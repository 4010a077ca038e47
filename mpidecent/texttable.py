"""Every table mpidecent prints on a terminal: aligned columns, and key/value blocks (pure).

    run      status     steps  avg-loss
    -------  ---------  -----  --------
    sgp      completed    500  0.312345

Cells are strings (format numbers before); columns are separated by two spaces; trailing blanks are
removed from every line.
"""

from __future__ import annotations

from collections.abc import Sequence


def grid(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """The lines of an aligned table: the header, a rule of dashes, the rows. The first ``left``
    columns are left-aligned, the others right-aligned (numbers)."""
    widths = [max([len(str(h)), *(len(str(r[i])) for r in rows)]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i < left else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """``grid`` joined into one string (no final newline)."""
    return "\n".join(grid(header, rows, left))


def pairs(items: Sequence[tuple[str, str]], ruled: bool = False) -> str:
    """A key/value block, keys padded to one width; ``ruled`` adds a line of dashes above and
    below."""
    width = max((len(k) for k, _ in items), default=0)
    lines = [f"{k:<{width}}  {v}".rstrip() for k, v in items]
    if not ruled:
        return "\n".join(lines)
    rule = "-" * max((len(line) for line in lines), default=0)
    return "\n".join([rule, *lines, rule])
