"""Entry-point wrappers: a mistake in the user's input ends with one clear line, not a traceback; --help and a
mistaken argument answer before the heavy imports."""
from __future__ import annotations

import sys
from typing import Callable, Sequence

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


def parse_first(parse_args: Callable[[Sequence[str]], object], module_name: str) -> None:
    """Called by an entry point between its command-line parser and its heavy imports (torch: seconds). Run as a
    script (``module_name`` '__main__'), the command line is parsed here, so that --help and argument mistakes
    answer at once; main() parses it again (parsers only read). Imported (tests, bench), it does nothing."""
    if module_name == "__main__":
        run_cli(lambda: parse_args(sys.argv[1:]))
