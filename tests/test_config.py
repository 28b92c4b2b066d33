"""Configuration: inheritance, overrides, and clear errors for unknown keys and bad values."""
import logging
from pathlib import Path

import pytest
import yaml

from utils.config import CONFIG_DIR, ConfigError, load_config, save_config
from utils.config_rules import per_process


def test_leaf_config_overrides_only_what_it_states():
    base = load_config(None)
    leaf = load_config(CONFIG_DIR / "ICFG-PEDES" / "clip_finetune_sgiha.yaml")
    assert leaf.dataset_name == "ICFG-PEDES" and leaf.losses == ("sdm", "id", "aqa")
    assert leaf.eval_splits == ["test"]
    assert leaf.lr == base.lr == 1e-5 and leaf.sgiha.layers == [6, 7, 8, 9, 10, 11]


def test_every_shipped_config_loads():
    files = sorted(CONFIG_DIR.rglob("*.yaml"))
    assert len(files) >= 14
    for file in files:
        cfg = load_config(file)
        assert cfg.select_on in cfg.eval_splits


def test_command_line_overrides_nested_keys_and_types():
    cfg = load_config(None, ["--sgiha.filter", "res", "--lr", "2e-5", "--img_size", "[256, 128]",
                             "--sgiha.detach_hidden=true", "--batch_size", "32"])
    assert cfg.sgiha.filter == "res" and cfg.sgiha.detach_hidden is True
    assert cfg.lr == pytest.approx(2e-5) and isinstance(cfg.lr, float)
    assert cfg.img_size == [256, 128] and cfg.batch_size == 32
    assert cfg.sgiha.temperature == 0.04  # untouched siblings keep their defaults


@pytest.mark.parametrize("overrides, message", [
    (["--sgiha.fliter", "res"], "unknown key 'sgiha.fliter'"),
    (["--amp", "fp32"], "choose one of ['auto', 'fp16', 'bf16', 'none']"),
    (["--batch_size", "many"], "must be a number"),
    (["--loss_names", "sdm+itc"], "'+'-joined names"),
    (["--select_on", "val", "--eval_splits", "[test]"], "must be one of eval_splits"),
    (["--img_aug", "3"], "true or false"),
    (["--lr"], "needs a value"),
])
def test_bad_overrides_name_the_problem(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert message in str(info.value)


def test_unknown_key_in_file_lists_valid_keys(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_base_: {CONFIG_DIR / 'base.yaml'}\nbatchsize: 8\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(bad) in str(info.value) and "batch_size" in str(info.value)


def test_invalid_yaml_names_the_file(tmp_path: Path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(bad)


# An unknown key's error: one line of at most this many characters, besides the file it names.
UNKNOWN_KEY_LINE_CHARS = 200


@pytest.mark.parametrize("typo, meant", [
    ("num_epochs", "num_epoch"), ("sgiha.fliter", "sgiha.filter"), ("test_batchsize", "test_batch_size"),
    ("Batch_Size", "batch_size"), ("filter", "sgiha.filter"),
])
def test_unknown_key_names_the_closest_key_and_where_the_keys_are(typo: str, meant: str):
    with pytest.raises(ConfigError) as info:
        load_config(None, {typo: 1})
    message = str(info.value)
    assert message.startswith(f"command line: unknown key '{typo}' (did you mean '{meant}'?); ")
    assert message.endswith("listed in configs/base.yaml")
    assert "\n" not in message and len(message) <= UNKNOWN_KEY_LINE_CHARS
    assert "early_stop_epoch" not in message  # no list of every key


def test_unknown_key_like_no_valid_one_points_at_the_base_config(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sgiha:\n  zzzz: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    message = str(info.value)
    assert message == (f"{bad}: unknown key 'sgiha.zzzz'; the valid keys and their defaults are listed in "
                       "configs/base.yaml")
    assert len(message) - len(str(bad)) <= UNKNOWN_KEY_LINE_CHARS
    assert (CONFIG_DIR.parent / "configs" / "base.yaml").is_file()


# Typos and what the error must show: the text of the line with the typo and of the line yaml stopped at.
YAML_TYPOS = {
    "missing colon": ("name: demo\nnum_epoch 60\nlr: 1.0e-5\n", ["line 2: 'num_epoch 60'", "line 3: 'lr: 1.0e-5'"]),
    "unclosed list": ("name: demo\nimg_size: [384, 128\nlr: 1.0e-5\n",
                      ["line 2: 'img_size: [384, 128'", "line 3: 'lr: 1.0e-5'"]),
    "extra indent": ("sgiha:\n  filter: res\n   layers: [1]\n", ["line 3: '   layers: [1]'"]),
    "tab indent": ("name: demo\n\tlr: 1.0\n", ["line 2: '\\tlr: 1.0'"]),
    "typo on the last line": ("name: demo\nlr 1.0", ["line 2: 'lr 1.0'"]),
    "unclosed quote": ("name: 'demo\nlr: 1.0\n", ["line 1: \"name: 'demo\"", "line 2: 'lr: 1.0'"]),
}


@pytest.mark.parametrize("text, shown", list(YAML_TYPOS.values()), ids=list(YAML_TYPOS))
def test_yaml_syntax_error_shows_the_offending_lines(tmp_path: Path, text: str, shown: list[str]):
    bad = tmp_path / "typo.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: not valid YAML") and "\n" not in message
    for line in shown:
        assert line in message, (line, message)


def test_saved_config_round_trips(tmp_path: Path):
    cfg = load_config(CONFIG_DIR / "demo.yaml", {"sgiha.filter": "none", "seed": 7})
    save_config(cfg, tmp_path / "configs.yaml")
    assert yaml.safe_load((tmp_path / "configs.yaml").read_text())["seed"] == 7
    assert load_config(tmp_path / "configs.yaml") == cfg


def test_a_run_folder_of_an_earlier_version_still_loads(tmp_path, caplog):
    """Earlier versions saved the demo's toy.* and pretrain_build.* in every run's configs.yaml."""
    old = tmp_path / "configs.yaml"
    save_config(load_config(None), old)
    old.write_text(old.read_text() + "toy:\n  generate_if_missing: false\n  seed: 0\npretrain_build:\n"
                   "  config_file: null\n")
    with caplog.at_level(logging.WARNING):
        cfg = load_config(old)
    assert cfg == load_config(None)
    assert "ignoring toy, an earlier version's section" in caplog.text
    assert "ignoring pretrain_build, an earlier version's section" in caplog.text


@pytest.mark.parametrize("override, fragment", [
    ({"num_epoch": 2.5}, "num_epoch = 2.5 must be a whole number"),
    ({"num_epoch": 3.0}, None),  # a whole number written as a float is fine
    ({"batch_size": 1}, "batch_size = 1: must be a whole number >= 2"),
    ({"img_size": [384, 128.5]}, "img_size = [384, 128.5]: must be two whole numbers"),
    ({"img_erase_scale": [0.4, 0.02]}, "img_erase_scale = [0.4, 0.02]"),
    ({"eval_splits": ["test", "test"]}, "eval_splits = ['test', 'test']"),
    ({"eval_splits": []}, "eval_splits = []"),
    ({"mlm.mask_ratio": 0.95}, "mlm.random_ratio = 0.1: plus mlm.mask_ratio (0.95) must be <= 1"),
    ({"backbone.vision_heads": 5}, "backbone.vision_heads = 5: must divide backbone.vision_width = 768"),
    ({"stride_size": 32}, "stride_size = 32: must be at most backbone.patch_size = 16"),
    ({"early_stop_epoch": None}, None),
    ({"early_stop_epoch": 0}, "early_stop_epoch = 0"),
    ({"pretrain_path": 3}, "pretrain_path = 3 must be a path"),
    ({"pretrain_choice": "file"}, "pretrain_choice = 'file': needs pretrain_path"),
    ({"pretrain_choice": "file", "pretrain_path": "weights.safetensors"}, None),
    ({"device": "gpu"}, "device = 'gpu': must be auto, cpu, cuda or cuda:N"),
    ({"seed": 2 ** 32}, "seed = 4294967296: must be a whole number in [0, 4294967295]"),  # np.random.seed's range
    ({"seed": 2 ** 32 - 1}, None),
    ({"loss_names": "sdm+id", "sgiha.layers": [99]}, None),  # SG-IHA's settings matter only when it is trained
])
def test_values_are_checked_when_the_config_loads(override, fragment):
    if fragment is None:
        load_config(None, override)
        return
    with pytest.raises(ConfigError) as info:
        load_config(None, override)
    assert fragment in str(info.value)


def test_a_global_batch_splits_over_processes_or_names_a_size_that_does():
    assert per_process(64, 4, "batch_size") == 16
    with pytest.raises(ConfigError, match=r"^test_batch_size = 63 is the global batch and does not divide over 2 "
                                          r"processes; use a multiple of 2 \(e.g. 62\)$"):
        per_process(63, 2, "test_batch_size")
