"""``python -m screener`` is the ``screener`` command."""

from screener.cli import main

main()
