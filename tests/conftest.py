import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repository root

import pytest  # noqa: E402

from datasets.toy import make_toy_dataset  # noqa: E402
from tests.tiny_run import DEMO_BACKBONE, make_tiny_toy, tiny_args  # noqa: E402
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
