"""``python -m mpidecent`` is the same as the ``mpidecent`` console script."""

from mpidecent.cli import main

raise SystemExit(main())
