"""``python -m ragops``: the same as the ``ragops`` console script."""

from ragops.cli import main

main()
