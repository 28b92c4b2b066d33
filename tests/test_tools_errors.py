"""Wrong tool commands: exit status 2, one last 'error: ...' line naming the file or key, no traceback, and no file
created or changed around the run folder and the gallery. Each tool's main runs in this process through run_cli
(what its command line does); the slow tier runs one case of each tool as a real command line."""
from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.cli_checks import REPO, assert_one_error_line
from tests.cli_checks import snapshot as snapshot_under
from utils.runs import run_label


class Case(NamedTuple):
    tool: str            # script under tools/
    args: list[str]      # its arguments; '{name}' stands for the path ``name`` of the world fixture
    names: list[str]     # what the error line must name (key, option, file), with the same placeholders


CASES = {
    "search: gallery folder missing": Case(
        "search.py", ["--config_file", "{run}/configs.yaml", "--gallery", "{root}/no_gallery", "--query", "a hat"],
        ["--gallery", "{root}/no_gallery", "no such folder"]),
    "search: gallery without images": Case(
        "search.py", ["--config_file", "{run}/configs.yaml", "--gallery", "{empty}", "--query", "a hat"],
        ["--gallery", "{empty}", "no image files"]),
    "search: no image of the gallery readable": Case(
        "search.py", ["--config_file", "{run}/configs.yaml", "--gallery", "{broken}", "--query", "a hat"],
        ["--gallery", "{broken}", "none of its 2 image files could be read"]),
    "search: no query": Case(
        "search.py", ["--config_file", "{run}/configs.yaml", "--gallery", "{gallery}"], ["no query", "--query"]),
    "search: query file not UTF-8": Case(
        "search.py", ["--config_file", "{run}/configs.yaml", "--gallery", "{gallery}", "--queries", "{latin1}"],
        ["--queries", "{latin1}", "not UTF-8"]),
    "search: typo in a config key": Case(
        "search.py", ["--config_file", "{run}/configs.yaml", "--gallery", "{gallery}", "--query", "a hat",
                      "--test_batchsize", "4"], ["unknown key 'test_batchsize'"]),
    "search: truncated checkpoint": Case(
        "search.py", ["--config_file", "{run}/configs.yaml", "--checkpoint", "{truncated}", "--gallery", "{gallery}",
                      "--query", "a hat"], ["{truncated}", "not a readable PyTorch checkpoint"]),
    "search: run folder without configs.yaml": Case(
        "search.py", ["--config_file", "{not_a_run}/configs.yaml", "--gallery", "{gallery}", "--query", "a hat"],
        ["config file not found", "{not_a_run}/configs.yaml"]),
    "search: a folder that is not a run": Case(
        "search.py", ["--config_file", "{not_a_run}", "--gallery", "{gallery}", "--query", "a hat"],
        ["--config_file {not_a_run}", "a folder without configs.yaml"]),
    "search: --out under a file": Case(
        "search.py", ["--config_file", "{run}", "--gallery", "{gallery}", "--query", "a hat", "--out",
                      "{latin1}/hats.png"], ["--out {latin1}/hats.png", "{latin1} is a file, not a folder"]),
    "visualize_test: a checkpoint name the run folder lacks": Case(
        "visualize_test.py", ["--config_file", "{run}", "--checkpoint", "nope.pth"],
        ["checkpoint not found", "{run}/nope.pth"]),
    "visualize_test: --out_dir under a file": Case(
        "visualize_test.py", ["--config_file", "{run}", "--out_dir", "{latin1}/pictures"],
        ["--out_dir {latin1}/pictures", "{latin1} is a file, not a folder"]),
    "export_open_clip: --out under a file": Case(
        "export_open_clip.py", ["--config_file", "{run}", "--out", "{latin1}/export"],
        ["--out {latin1}/export", "{latin1} is a file, not a folder"]),
    "visualize_test: typo in a config key": Case(
        "visualize_test.py", ["--config_file", "{run}/configs.yaml", "--num_querys", "3"],
        ["unknown key 'num_querys'"]),
    "visualize_test: dataset missing": Case(
        "visualize_test.py", ["--config_file", "{run}/configs.yaml", "--root_dir", "{root}/no_data"],
        ["{root}/no_data/CUHK-PEDES", "dataset folder not found"]),
    "plot_curves: not a run folder": Case("plot_curves.py", ["{not_a_run}"], ["no usable run folder", "{not_a_run}"]),
    "plot_curves: run without metrics.jsonl": Case(
        "plot_curves.py", ["{unfinished}", "{root}/no_run"], ["no usable run folder", "{unfinished}", "{root}/no_run"]),
    "summarize_runs: no evaluated test epoch": Case(
        "summarize_runs.py", ["{not_evaluated}", "--out", "{root}/summary.md"],
        ["no usable run folder", "{not_evaluated}"]),
    "summarize_runs: corrupt test_results.json": Case(
        "summarize_runs.py", ["{torn_results}", "{not_a_run}"], ["no usable run folder", "{torn_results}"]),
    "compare_runs: a folder missing": Case(
        "compare_runs.py", ["{run}", "{root}/no_run"], ["{root}/no_run", "not a folder"]),
    "compare_runs: a folder that is not a run": Case(
        "compare_runs.py", ["{run}", "{not_a_run}", "--plot", "{root}/curves.png"],
        ["{not_a_run}", "not a run folder"]),
    "check_dataset: a folder that is not a run": Case(
        "check_dataset.py", ["--config_file", "{not_a_run}"], ["--config_file {not_a_run}", "a folder without"]),
    "count_params: typo in a config key": Case("count_params.py", ["--lrr", "1"], ["unknown key 'lrr'"]),
    "make_toy_dataset: root folder is a file": Case(
        "make_toy_dataset.py", ["--root_dir", "{latin1}", "--dataset_name", "RSTPReid"],
        ["--root_dir", "{latin1}", "not a folder"]),
}


# the cases run again as real command lines (slow tier): the first case of each tool
COMMAND_LINE_CASES = list({case.tool: name for name, case in reversed(CASES.items())}.values())


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_toy: Path, tiny_run: Path) -> dict[str, Path]:
    """A tiny trained run and every kind of wrong input next to it, under one folder; the run's data
    (``run_data``, shared with other tests) is watched too."""
    root = tmp_path_factory.mktemp("tool_errors")
    run = root / "logs" / tiny_run.parent.name / tiny_run.name
    shutil.copytree(tiny_run, run)
    paths = {"root": root, "run": run, "run_data": tiny_toy, "gallery": root / "gallery",
             "empty": root / "empty_gallery", "broken": root / "broken_gallery", "latin1": root / "queries_latin1.txt",
             "truncated": root / "truncated.pth", "not_a_run": root / "holiday_photos",
             "unfinished": root / "20240101_000000_unfinished", "not_evaluated": root / "20240101_000000_no_eval",
             "torn_results": root / "20240101_000000_torn_results"}
    for folder in ("gallery", "empty", "broken", "not_a_run", "unfinished", "not_evaluated", "torn_results"):
        paths[folder].mkdir()
    for image in sorted((tiny_toy / "CUHK-PEDES" / "imgs").rglob("*.png"))[:3]:
        (paths["gallery"] / image.name).write_bytes(image.read_bytes())
    (paths["empty"] / "notes.txt").write_text("no picture here")
    (paths["broken"] / "bad.jpg").write_bytes(b"not a JPEG")
    (paths["broken"] / "half.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    paths["latin1"].write_bytes("une señora en café\n".encode("latin-1"))
    best = (run / "best.pth").read_bytes()
    paths["truncated"].write_bytes(best[: len(best) // 2])
    (paths["not_a_run"] / "beach.jpg").write_bytes(b"a picture, not a run")
    config = (run / "configs.yaml").read_text()
    for folder in ("unfinished", "not_evaluated", "torn_results"):
        (paths[folder] / "configs.yaml").write_text(config)
    assert len(list(paths["gallery"].iterdir())) == 3  # a gallery search could use: only the inputs are wrong
    (paths["not_evaluated"] / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "loss": 3.0}) + "\n")
    (paths["torn_results"] / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "loss": 3.0}) + "\n")
    (paths["torn_results"] / "test_results.json").write_text('{"dataset": "CUHK-PEDES", "metrics": {"R1": 5')
    return paths


def snapshot(world: dict[str, Path]) -> dict[str, tuple[int, int] | None]:
    return snapshot_under(world["root"], world["run_data"])


def fill(template: str, world: dict[str, Path]) -> str:
    return template.format(**{k: str(v) for k, v in world.items()})


def run_tool(entry_point, tool: str, args: list[str]) -> subprocess.CompletedProcess:
    """``python tools/<tool> *args``, run in this process."""
    module = importlib.import_module(f"tools.{tool.removesuffix('.py')}")
    return entry_point(f"tools/{tool}", module.main, args)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_wrong_command_ends_with_one_error_line(case: Case, world: dict[str, Path], entry_point):
    before = snapshot(world)
    result = run_tool(entry_point, case.tool, [fill(a, world) for a in case.args])
    assert_one_error_line(result, [fill(name, world) for name in case.names])
    assert snapshot(world) == before


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMAND_LINE_CASES)
def test_wrong_command_line_ends_with_one_error_line(name: str, world: dict[str, Path]):
    case = CASES[name]
    before = snapshot(world)
    command = [sys.executable, f"tools/{case.tool}", *(fill(a, world) for a in case.args)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert_one_error_line(result, [fill(n, world) for n in case.names])
    assert snapshot(world) == before


@pytest.mark.parametrize("tool, extra, usable, skipped", [
    ("summarize_runs.py", [], ["run"], ["not_a_run", "unfinished", "torn_results", "not_evaluated"]),
    ("plot_curves.py", ["--out", "{root}/curves.png"], ["run", "torn_results"], ["not_a_run", "unfinished"]),
])
def test_incomplete_run_folders_are_skipped_with_a_warning(tool: str, extra: list[str], usable: list[str],
                                                            skipped: list[str], world: dict[str, Path], entry_point):
    """Usable runs among incomplete folders: exit 0, a warning line on stderr naming each skipped folder
    (stdout stays the result alone, e.g. for ``> summary.md``)."""
    folders = [str(world[name]) for name in usable + skipped]
    result = run_tool(entry_point, tool, [*folders, *(fill(a, world) for a in extra)])
    assert result.returncode == 0, result.stderr
    warned = [re.match(r"warning: skipping (.+?): ", line) for line in result.stderr.strip().splitlines()]
    assert [m.group(1) if m else None for m in warned] == [str(world[name]) for name in skipped]
    assert "warning" not in result.stdout
    if tool == "summarize_runs.py":
        rows = [line for line in result.stdout.splitlines() if "| metrics.jsonl epoch" in line]  # one per run
        assert len(rows) == 1 and rows[0].startswith(f"| {run_label(world['run'])} ")
    else:
        assert (world["root"] / "curves.png").is_file()
