"""What every command shares: one-line errors."""

from __future__ import annotations

import sys

from mpidecent.errors import EXIT_BAD_INPUT


def fail(message: str) -> int:
    """Print ``mpidecent: error: <message>`` and return the bad-input status."""
    sys.stderr.write(f"mpidecent: error: {message}\n")
    return EXIT_BAD_INPUT
