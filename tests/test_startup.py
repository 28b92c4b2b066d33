"""Start-up: the entry points import without open_clip and torchvision (seconds each; they are imported where they
are used), answer --help and argument mistakes without importing torch, and the CLIP constants stated here instead
are open_clip's."""
from __future__ import annotations

import subprocess
import sys

import open_clip.constants
import open_clip.tokenizer
import pytest

from tests.cli_checks import REPO
from utils.images import CLIP_MEAN, CLIP_STD
from utils.tokenizer import DEFAULT_CONTEXT_LENGTH

ENTRY_POINTS = ["train", "demo", "tools.search", "tools.visualize_test", "tools.export_open_clip", "tools.count_params",
                "tools.check_dataset", "tools.extract_phrases", "tools.make_toy_dataset", "tools.plot_curves",
                "tools.summarize_runs", "tools.compare_runs"]
# Each command line without arguments is a mistake argparse finds, but count_params's (it counts base.yaml) and the
# demo's (it runs the demo): those are given a mistake of their own.
COMMAND_LINES = (sorted(str(p.relative_to(REPO)) for p in (REPO / "tools").glob("*.py"))
                 + ["train.py", "test.py", "demo.py"])
MISTAKES = {"tools/count_params.py": ["--help"], "demo.py": ["--config_file"]}


def test_clip_constants_are_open_clip_s():
    assert CLIP_MEAN == open_clip.constants.OPENAI_DATASET_MEAN
    assert CLIP_STD == open_clip.constants.OPENAI_DATASET_STD
    assert DEFAULT_CONTEXT_LENGTH == open_clip.tokenizer.DEFAULT_CONTEXT_LENGTH


@pytest.mark.slow
def test_entry_points_import_without_open_clip_or_torchvision():
    code = ("import importlib, runpy, sys\n"
            f"for name in {ENTRY_POINTS!r}:\n"
            "    importlib.import_module(name)\n"
            "runpy.run_path('test.py', run_name='not_main')\n"  # test.py: the name 'test' is a standard package
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('open_clip', 'torchvision')))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_help_and_argument_mistakes_answer_before_torch_is_imported():
    code = ("import contextlib, io, runpy, sys\n"
            f"for path in {COMMAND_LINES!r}:\n"
            f"    for argv in (['--help'], {MISTAKES!r}.get(path, [])):\n"
            "        sys.argv = [path, *argv]\n"
            "        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            "            try:\n"
            "                runpy.run_path(path, run_name='__main__')\n"
            "            except SystemExit as exc:\n"
            "                assert exc.code in (0, 2), (path, argv, exc.code)\n"
            "            else:\n"
            "                raise AssertionError(f'{path} {argv}: did not exit')\n"
            "        assert 'torch' not in sys.modules, (path, argv)\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
