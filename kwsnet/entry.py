"""The ``kwsnet`` console script: ``kwsnet --help``, an unknown command and every command of
``kwsnet.commands`` run without importing Lightning (``kwsnet.dispatch``); ``kwsnet.cli``, and
with it Lightning and torch, is imported only for ``fit``/``validate``/``test``/``predict``.
"""

from __future__ import annotations

import sys

from kwsnet import dispatch

__all__ = ["main"]


def _run_lightning(argv: list[str] | None) -> None:
    from kwsnet.cli import run_lightning  # Lightning and torch: only for its commands

    run_lightning(argv)


def main() -> int:
    """Run the command line in ``sys.argv`` (``kwsnet.dispatch.console``) and exit with its
    status when it is not 0."""
    status = dispatch.console(sys.argv[1:], _run_lightning)
    if status:
        sys.exit(status)
    return 0


if __name__ == "__main__":
    main()
