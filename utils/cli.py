"""Entry-point wrapper: problems with the user's input end with one clear line, not a traceback."""
from __future__ import annotations

import sys
from typing import Callable

from datasets.bases import DatasetError
from model.pretrained import PretrainedError
from utils.config import ConfigError

USER_ERRORS = (ConfigError, DatasetError, PretrainedError, FileNotFoundError)


def run_cli(main: Callable[[], object]) -> None:
    """Run ``main``; a configuration, dataset, weights or missing-file error prints 'error: ...' and exits 2."""
    try:
        main()
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
