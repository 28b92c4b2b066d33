"""Shared by the end-to-end tests: the demo config shrunk so that a whole run takes seconds."""
from __future__ import annotations

import importlib.util
import signal
import sys
from pathlib import Path
from types import ModuleType

from datasets.toy import make_toy_dataset
from utils.config import CONFIG_DIR, load_config

DEMO = str(CONFIG_DIR / "demo.yaml")


def make_tiny_toy(root: Path) -> Path:
    make_toy_dataset(root_dir=root, dataset_name="CUHK-PEDES", num_train_ids=16, num_val_ids=4, num_test_ids=6,
                     images_per_id=2, image_size=[64, 32], seed=1)
    return root


def tiny_args(toy_root: Path, out: Path, *extra: str) -> list[str]:
    return ["--config_file", DEMO, "--root_dir", str(toy_root), "--output_dir", str(out),
            "--num_workers", "0", "--batch_size", "8",
            "--test_batch_size", "16", "--img_size", "[32, 16]", "--text_length", "40", "--num_epoch", "2",
            "--eval_period", "1", "--tensorboard", "false", "--warmup_epochs", "0", "--backbone.embed_dim", "32",
            "--backbone.vision_width", "32", "--backbone.text_width", "32", "--backbone.vision_layers", "3",
            "--backbone.text_layers", "3", "--backbone.vision_heads", "2", "--backbone.text_heads", "2",
            "--mlm.heads", "2", "--sgiha.heads", "2", "--sgiha.layers", "[1, 2]", *extra]


# The demo's backbone and input size (configs/demo.yaml), which tiny_args shrinks: for tests of the trained model.
DEMO_BACKBONE = ("--img_size", "[64, 32]", "--backbone.embed_dim", "64", "--backbone.vision_width", "64",
                 "--backbone.text_width", "64", "--backbone.vision_layers", "4", "--backbone.text_layers", "4")


def benchmark_settings() -> tuple[str, ...]:
    """Overrides that put back base.yaml's values where the demo departs from them for training from scratch
    (docs/experiments/demo.md point 8): for tests of a path the benchmark configs take (AQA's gradient into the tapped
    layers, the method's temperatures, the cosine)."""
    base = load_config(None, {})
    return ("--temperature", str(base.temperature), "--sgiha.temperature", str(base.sgiha.temperature),
            "--sgiha.detach_hidden", str(base.sgiha.detach_hidden).lower(), "--lrscheduler", base.lrscheduler)


def with_ctrl_c() -> None:
    """preexec_fn of a child that must see Ctrl-C: a suite started in the background without job control (`cmd &`)
    ignores SIGINT, its children inherit that, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def load_test_script() -> ModuleType:
    """test.py as a module (by path: the name 'test' is also a standard-library package)."""
    name = "sgiha_test_entry"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, CONFIG_DIR.parent / "test.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]
