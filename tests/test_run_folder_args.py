"""A run folder wherever a run's configs.yaml is expected, and the --checkpoint rule (a file name alone names a file
of the run folder, a path with a folder is read as given), in test.py and the tools that load a run's model."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.tiny_run import load_test_script
from tools import check_dataset, export_open_clip, search, visualize_test
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.config import load_config
from utils.errors import UserError
from utils.runs import BEST_CHECKPOINT, CONFIG_FILE, LAST_CHECKPOINT, TEST_RESULTS_FILE

test_script = load_test_script()
DECOY = b"a file of the working directory that has the name of a run's checkpoint"


@pytest.fixture
def run(demo_run: Path, tmp_path: Path) -> Path:
    """A copy of the demo run (test.py writes into it), seen from another folder that holds a decoy last.pth."""
    copy = Path(shutil.copytree(demo_run, tmp_path / "run"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / LAST_CHECKPOINT).write_bytes(DECOY)
    return copy


def test_test_py_takes_the_run_folder_and_the_name_of_its_checkpoint(run: Path, monkeypatch):
    monkeypatch.chdir(run.parent / "elsewhere")
    by_name = test_script.main(["--config_file", str(run), "--checkpoint", LAST_CHECKPOINT])
    by_path = test_script.main(["--config_file", str(run / CONFIG_FILE), "--checkpoint", str(run / LAST_CHECKPOINT)])
    assert by_name.pop("run_info")["weights"] == by_path.pop("run_info")["weights"]  # the same file, hashed
    assert by_name == by_path and by_name["checkpoint"] == str(run / LAST_CHECKPOINT)
    assert by_name["epoch"] == load_checkpoint(run / LAST_CHECKPOINT)["epoch"]
    own = test_script.main(["--config_file", str(run)])
    assert own["checkpoint"] == str(run / BEST_CHECKPOINT) and (run / TEST_RESULTS_FILE).is_file()
    with pytest.raises(CheckpointError, match=str(run.parent / "elsewhere" / LAST_CHECKPOINT)):
        test_script.main(["--config_file", str(run), "--checkpoint", f"./{LAST_CHECKPOINT}"])  # read as given


def test_a_name_found_only_in_the_working_directory_says_how_to_name_it(run: Path, monkeypatch):
    elsewhere = run.parent / "elsewhere"
    monkeypatch.chdir(elsewhere)
    shutil.copy(run / BEST_CHECKPOINT, elsewhere / "mine.pth")
    with pytest.raises(UserError, match=r"--checkpoint mine\.pth: .*not in the run folder.*\./mine\.pth"):
        test_script.main(["--config_file", str(run), "--checkpoint", "mine.pth"])
    # a config that is not a run's has no run folder: the name is read as given
    shutil.copy(run / CONFIG_FILE, elsewhere / "my.yaml")
    result = test_script.main(["--config_file", "my.yaml", "--checkpoint", "mine.pth", "--out_dir", "eval"])
    assert result["checkpoint"] == str(elsewhere / "mine.pth") and (elsewhere / "eval" / TEST_RESULTS_FILE).is_file()


class Loaded(Exception):
    """Stops a tool once it has chosen its config and checkpoint."""


@pytest.mark.parametrize("tool, extra", [
    (search, ["--gallery", "g", "--query", "a hat"]),
    (visualize_test, []),
    (export_open_clip, ["--out", "export"]),
], ids=["search", "visualize_test", "export_open_clip"])
def test_tools_take_the_run_folder_and_the_name_of_its_checkpoint(tool, extra: list[str], run: Path, monkeypatch):
    monkeypatch.chdir(run.parent / "elsewhere")
    loaded = []

    def load_retrieval_model(cfg, checkpoint, device):
        loaded.append((cfg, Path(checkpoint)))
        raise Loaded

    monkeypatch.setattr(tool, "load_retrieval_model", load_retrieval_model)
    for checkpoint in ([], ["--checkpoint", LAST_CHECKPOINT]):
        with pytest.raises(Loaded):
            tool.main(["--config_file", str(run), *checkpoint, *extra])
    assert [path for _, path in loaded] == [run / BEST_CHECKPOINT, run / LAST_CHECKPOINT]
    assert all(cfg == load_config(run / CONFIG_FILE) for cfg, _ in loaded)


def test_check_dataset_takes_the_run_folder(run: Path, capsys):
    """The dataset the run trained on: the same report as with the run's configs.yaml."""
    reports = []
    for config in (run, run / CONFIG_FILE):
        check_dataset.main(["--config_file", str(config), "--json", "--workers", "1"])
        reports.append(json.loads(capsys.readouterr().out))
    cfg = load_config(run / CONFIG_FILE)
    assert reports[0] == reports[1]
    assert reports[0]["annotation"].startswith(str(Path(cfg.root_dir) / cfg.dataset_name))
