"""Paths behave as users expect: relative to where a command runs, stored absolute, toy data only where promised."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import train as train_script
from datasets import DatasetError
from tests.tiny_run import DEMO, make_tiny_toy, tiny_args
from utils.config import CONFIG_DIR, load_config

REPO = CONFIG_DIR.parent
PLACED = ("--root_dir", "--output_dir", "--config_file")  # what the run scripts set or the test sets itself


def _without(args: list[str], keys: tuple[str, ...]) -> list[str]:
    """``args`` (``--key value`` pairs) without the pairs of ``keys``."""
    pairs = list(zip(args[::2], args[1::2]))
    return [item for key, value in pairs if key not in keys for item in (key, value)]


@pytest.mark.slow
def test_run_script_resolves_paths_against_the_caller_s_directory(tmp_path: Path):
    make_tiny_toy(tmp_path / "mydata")
    tiny = _without(tiny_args(Path("unused"), Path("unused")), PLACED)
    result = subprocess.run(["bash", str(REPO / "run_irra_SG-IHA.sh"), "CUHK-PEDES", "mydata", "--config_file", DEMO,
                             "--num_epoch", "1", *tiny], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = list((tmp_path / "logs" / "CUHK-PEDES").iterdir())  # output_dir 'logs': the caller's
    saved = load_config(run / "configs.yaml")
    assert saved.root_dir == str(tmp_path / "mydata") and saved.output_dir == str(tmp_path / "logs")
    # test.py from another directory finds the data through the stored absolute root_dir
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    evaluated = subprocess.run([sys.executable, str(REPO / "test.py"), "--config_file", str(run / "configs.yaml")],
                               cwd=elsewhere, capture_output=True, text=True)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert (run / "test_results.json").is_file() and not list(elsewhere.iterdir())


def test_the_demo_generates_toy_data_in_its_own_folder_only(tmp_path: Path, monkeypatch):
    import demo

    monkeypatch.chdir(tmp_path)
    tiny = _without(tiny_args(Path("unused"), Path("unused")), PLACED)
    small = ["--demo.toy.num_train_ids", "8", "--demo.toy.num_val_ids", "2", "--demo.toy.num_test_ids", "3",
             "--demo.toy.images_per_id", "2", "--num_epoch", "1"]
    with pytest.raises(DatasetError, match="dataset folder not found"):  # train.py only trains: no data, an error
        train_script.main(["--config_file", DEMO, *tiny, *small[-2:]])
    assert list(tmp_path.iterdir()) == []
    run = demo.main(["--config_file", DEMO, *tiny, *small])  # root_dir data/toy: the demo's own folder
    assert (tmp_path / "data" / "toy" / "CUHK-PEDES" / "reid_raw.json").is_file()
    assert load_config(run / "configs.yaml").root_dir == str(tmp_path / "data" / "toy")
    with pytest.raises(DatasetError, match="holds no CUHK-PEDES dataset, and the demo generates its toy data only in "
                                           f"demo.toy.generate_in \\({tmp_path}/data/toy\\)"):
        demo.main(["--config_file", DEMO, *tiny, *small, "--root_dir", "mine"])  # any other root_dir: no toy data
    assert not (tmp_path / "mine").exists()
