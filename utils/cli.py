"""Entry-point wrapper: a mistake in the user's input ends with one clear line, not a traceback."""
from __future__ import annotations

import sys
from typing import Callable

from utils.errors import UserError, one_line

USER_ERROR_EXIT = 2  # the exit status of every user error (argparse uses 2 too)
INTERRUPT_EXIT = 130  # the shell's status for a command ended by Ctrl-C (128 + SIGINT)


def run_cli(main: Callable[[], object]) -> None:
    """Run ``main``; a ``UserError`` prints 'error: ...' on one line and exits with status 2, Ctrl-C with 130."""
    try:
        main()
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except KeyboardInterrupt as exc:
        print(f"error: {one_line(exc) or 'interrupted'}", file=sys.stderr)
        sys.exit(INTERRUPT_EXIT)
