import logging
import pathlib
import subprocess
import sys
from typing import Callable, Iterator

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repository root

import pytest  # noqa: E402
import torch  # noqa: E402

from datasets.toy import make_toy_dataset  # noqa: E402
from tests.cli_checks import REPO, EntryPoint, run_in_process  # noqa: E402
from tests.tiny_run import DEMO_BACKBONE, make_tiny_toy, tiny_args  # noqa: E402
from utils.distributed import cleanup_distributed  # noqa: E402
from utils.logger import setup_logger  # noqa: E402
from utils.seed import get_rng_states, set_rng_states  # noqa: E402
from utils.tokenizer import get_tokenizer  # noqa: E402


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: subprocess or long-running test")


TOY_SIZES = dict(num_train_ids=12, num_val_ids=4, num_test_ids=5, images_per_id=2, image_size=[32, 16], seed=3)


@pytest.fixture(scope="session")
def tokenizer():
    return get_tokenizer()


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory) -> pathlib.Path:
    """A small toy dataset of each benchmark under one root (read-only for tests: copy before changing)."""
    root = tmp_path_factory.mktemp("toy")
    for name in ("CUHK-PEDES", "ICFG-PEDES", "RSTPReid"):
        make_toy_dataset(root, name, **TOY_SIZES)
    return root


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> pathlib.Path:
    """The run folder of a 1-epoch IRRA + SG-IHA run with the demo's backbone on a tiny toy set (read-only)."""
    import train

    toy = make_tiny_toy(tmp_path_factory.mktemp("demo_toy"))
    return train.main(tiny_args(toy, tmp_path_factory.mktemp("demo_runs"), *DEMO_BACKBONE, "--num_epoch", "1"))


@pytest.fixture(scope="session")
def tiny_toy(tmp_path_factory) -> pathlib.Path:
    """tests.tiny_run's toy set (read-only: copy before changing)."""
    return make_tiny_toy(tmp_path_factory.mktemp("tiny_toy"))


@pytest.fixture(scope="session")
def tiny_run(tiny_toy: pathlib.Path, tmp_path_factory) -> pathlib.Path:
    """The run folder of a finished run with tests.tiny_run's settings (2 epochs of 2) on ``tiny_toy``
    (read-only: copy it before changing it or watching the files around it)."""
    import train

    run = train.main(tiny_args(tiny_toy, tmp_path_factory.mktemp("tiny_runs")))
    setup_logger(None)  # close the run's train.log
    return run


@pytest.fixture
def entry_point(monkeypatch, capsys) -> Iterator[Callable[[str, EntryPoint, list[str]], subprocess.CompletedProcess]]:
    """``run(script, main, argv)``: ``python script *argv`` run in this process from the repository folder
    (tests.cli_checks.run_in_process). What a run changes for the whole process (working folder, sys.argv, the
    root logger's handlers and level, random states, torch threads, a process group) is put back afterwards, so
    one case cannot leak into the next."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    rng, threads = get_rng_states(), torch.get_num_threads()
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    yield lambda script, main, argv: run_in_process(script, main, argv, capsys)
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    for handler in [h for h in handlers if h not in root.handlers]:
        root.addHandler(handler)
    root.setLevel(level)
    set_rng_states(rng)
    torch.set_num_threads(threads)
    cleanup_distributed()
