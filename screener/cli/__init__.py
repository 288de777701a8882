"""The ``screener`` command: a thin shell over the library (no SQL and no policy here).

Exit codes: 0 success; 1 unexpected failure (a bug: please report it); 2 bad input or usage;
3 bad configuration; 4 database unusable; 5 Asterisk (AMI) unreachable; 6 AMI login refused;
7 a notification channel failed; 8 the shared list's PostgreSQL unusable.

One module per command group: ``root`` (the ``screener`` group and its error mapping),
``common`` (what the commands share), ``lists`` (``list``), ``history`` (``check``, ``calls``),
``agent`` (``init``, ``run``, ``doctor``), ``notify``, ``users`` (``user``), ``webconsole``
(``web``), ``prompts``, ``shared`` (``shared``, ``sync``). Importing this package registers
every command on :func:`main`, the console script's entry point.
"""

from screener.cli import (  # noqa: F401  # imported for their commands, which join main
    agent,
    history,
    lists,
    notify,
    prompts,
    shared,
    users,
    webconsole,
)
from screener.cli.root import main

__all__ = ["main"]
