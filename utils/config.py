"""Configuration: declared defaults (configs/base.yaml) < leaf YAML < command-line overrides.

A leaf YAML names its parent with ``_base_`` (a path relative to the leaf) and states only the keys
that differ. Overrides are ``--key value`` pairs, nested keys joined by dots (``--sgiha.filter res``);
values are parsed as YAML (``--img_size "[256, 128]"``). Unknown keys and bad values raise ``ConfigError``
in one line: an unknown key names the closest valid key and where every key is listed (configs/base.yaml).
A top-level section of one entry point (ENTRY_SECTIONS: the demo's ``demo:``, declared in
configs/demo_base.yaml) is read by that entry point only.
"""
from __future__ import annotations

import contextlib
import copy
import difflib
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from utils.config_rules import ConfigError, check_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
BASE_CONFIG = CONFIG_DIR / "base.yaml"
KEYS_LISTED_IN = BASE_CONFIG.relative_to(CONFIG_DIR.parent).as_posix()  # where every key is documented

LOSSES = ("sdm", "id", "mlm", "aqa")
# Enumerated keys and the values they accept.
CHOICES: dict[str, tuple] = {
    "dataset_name": ("CUHK-PEDES", "ICFG-PEDES", "RSTPReid", "custom"),
    "amp": ("auto", "fp16", "bf16", "none"),
    "sampler": ("random", "identity"),
    "phrase_backend": ("pattern", "spacy"),
    "pretrain_choice": ("ViT-B/16", "ViT-B/32", "ViT-L/14", "file", "none"),
    "sgiha.filter": ("dot", "res", "none"),
    "optimizer": ("Adam", "AdamW", "SGD"),
    "lrscheduler": ("cosine", "step"),
    "select_on": ("val", "test"),
    "compile": (False, True, "reduce-overhead"),
}
SPLITS = ("train", "val", "test")
logger = logging.getLogger(__name__)

# Top-level sections that belong to one entry point, declared in their own file: load_config(entry=name) reads
# them; every other entry point leaves them alone, so a demo config is also a training config.
ENTRY_SECTIONS = {"demo": CONFIG_DIR / "demo_base.yaml"}
ENTRY_COMMANDS = {"demo": "the demo (bash run_demo.sh --config_file ...)"}
# Sections earlier versions wrote into run folders' configs.yaml: read and ignored, with what replaced them.
RETIRED_SECTIONS = {"toy": "the demo's demo.toy (configs/demo_base.yaml): train.py no longer generates data",
                    "pretrain_build": "the demo's demo.pretrain_build (configs/demo_base.yaml): train.py no longer "
                                      "builds weights"}
# Keys that may be null (besides their values): no weights file, no build of it, no early stop, no custom annotation,
# no toy data.
NULLABLE = ("pretrain_path", "demo.pretrain_build.config_file", "early_stop_epoch", "annotation_file",
            "demo.toy.generate_in")
# Keys that hold paths: relative ones are made absolute (against the working directory) by absolute_paths.
PATH_KEYS = ("root_dir", "output_dir", "pretrain_path", "demo.pretrain_build.config_file", "demo.toy.generate_in")


class Config(dict):
    """A dict whose keys are also attributes; nested dicts are Configs too."""

    def __init__(self, data: dict | None = None):
        super().__init__()
        for key, value in (data or {}).items():
            self[key] = Config(value) if isinstance(value, dict) else value

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as exc:
            raise AttributeError(key) from exc

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = Config(value) if isinstance(value, dict) else value

    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, Config) else copy.deepcopy(v) for k, v in self.items()}

    @property
    def losses(self) -> tuple[str, ...]:
        """The loss names of ``loss_names`` as a tuple, e.g. ('sdm', 'id', 'aqa')."""
        return tuple(n for n in self["loss_names"].split("+") if n)


def _yaml_error(path: Path, text: str, exc: yaml.YAMLError) -> str:
    """What is wrong and where, with the text of the lines concerned: the one yaml stopped at, and the one where
    the construct it was reading began (a missing ':' is found only on the line after the typo)."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f"{path}: not valid YAML: {exc}"
    lines = text.splitlines() or [""]
    context = getattr(exc, "context_mark", None)
    shown = sorted({min(m.line, len(lines) - 1) for m in (context, mark) if m is not None})  # end of file: last line
    where = (f"at line {mark.line + 1}, column {mark.column + 1}" if mark.line < len(lines)
             else "at the end of the file")
    reading = ""
    if exc.context:
        begun = f" begun on line {min(context.line, len(lines) - 1) + 1}" if context is not None else ""
        reading = f" ({exc.context}{begun})"
    text_of = ", ".join(f"line {n + 1}: {lines[n]!r}" for n in shown)
    return f"{path}: not valid YAML: {exc.problem} {where}{reading}; {text_of}"


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(path, text, exc)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def _load_chain(path: Path) -> list[tuple[Path, dict]]:
    """The YAML files from the root base down to ``path``."""
    chain: list[tuple[Path, dict]] = []
    seen: set[Path] = set()
    while path is not None:
        path = path.resolve()
        if path in seen:
            raise ConfigError(f"{path}: _base_ chain loops")
        seen.add(path)
        data = _read_yaml(path)
        base = data.pop("_base_", None)
        chain.insert(0, (path, data))
        path = (path.parent / base) if base else None
    return chain


def _flatten(data: dict, prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def _valid_keys(defaults: dict) -> list[str]:
    return sorted(k for k, _ in _flatten(defaults))


def _closest_key(key: str, defaults: dict) -> str:
    """" (did you mean 'k'?)" naming the valid key most like ``key`` (case aside), or "" when none is close."""
    by_lower = {k.lower(): k for k in _valid_keys(defaults)}
    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1)
    return f" (did you mean '{by_lower[close[0]]}'?)" if close else ""


def _check_type(key: str, value: Any, default: Any, source: str) -> Any:
    """Coerce ``value`` to the type of the declared default, or raise. A null default allows null or a string."""
    if key in CHOICES:
        if not any(value is choice or (isinstance(choice, str) and value == choice) for choice in CHOICES[key]):
            raise ConfigError(f"{source}: {key} = {value!r} is not valid; choose one of {list(CHOICES[key])}")
        return value
    if value is None:
        if key not in NULLABLE:
            raise ConfigError(f"{source}: {key} = null is not allowed; give a value like {default!r}")
        return value
    if default is None:  # a path key whose default is null
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{source}: {key} = {value!r} must be a path (a non-empty string) or null")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} = {value!r} must be true or false")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, str):  # YAML 1.1 reads '2e-5' (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key} = {value!r} must be a number")
        if isinstance(default, float):
            return float(value)
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{source}: {key} = {value!r} must be a whole number")
        return int(value)
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} = {value!r} must be a list like {default}")
        return value
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{source}: {key} = {value!r} must be a string")
    return value


def _set(tree: dict, key: str, value: Any, defaults: dict, source: str) -> None:
    parts = key.split(".")
    if parts[0] in RETIRED_SECTIONS:
        logger.warning("%s: ignoring %s, an earlier version's section; see %s", source, key, RETIRED_SECTIONS[parts[0]])
        return
    if parts[0] in ENTRY_SECTIONS and parts[0] not in defaults:
        raise ConfigError(f"{source}: {key} is a key of {ENTRY_COMMANDS[parts[0]]}, which reads it; this command "
                          f"trains or evaluates the config without it")
    node, dnode = tree, defaults
    for i, part in enumerate(parts):
        if not isinstance(dnode, dict) or part not in dnode:
            raise ConfigError(f"{source}: unknown key '{key}'{_closest_key(key, defaults)}; "
                              f"the valid keys and their defaults are listed in {KEYS_LISTED_IN}")
        if i == len(parts) - 1:
            if isinstance(dnode[part], dict) and dnode[part]:
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: {key} is a section; set its keys ({key}.<name>)")
                for sub, subval in value.items():
                    _set(tree, f"{key}.{sub}", subval, defaults, source)
            else:
                node[part] = _check_type(key, value, dnode[part], source)
        else:
            if node.get(part) is None:
                node[part] = {}
            node, dnode = node[part], dnode[part]


def _validate(cfg: Config) -> None:
    unknown = [n for n in cfg.losses if n not in LOSSES]
    if unknown or not cfg.losses:
        raise ConfigError(f"loss_names = {cfg.loss_names!r}: use '+'-joined names from {list(LOSSES)}")
    check_config(cfg, dict(_flatten(cfg)))


def _declared(entry: str | None) -> dict:
    """The declared defaults: configs/base.yaml's training keys, plus ``entry``'s own section (ENTRY_SECTIONS)."""
    defaults = _read_yaml(BASE_CONFIG)
    if entry is not None:
        defaults[entry] = _read_yaml(ENTRY_SECTIONS[entry])[entry]
    return defaults


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] | dict | None = None,
                entry: str | None = None) -> Config:
    """Declared defaults, then the YAML chain ending at ``path``, then ``overrides``.

    ``overrides`` is either ``['--key', 'value', ...]`` from the command line or a ``{key: value}`` dict.
    ``entry`` (a name of ENTRY_SECTIONS) also reads that entry point's section; without it the section is skipped
    in files and refused on the command line.
    """
    defaults = _declared(entry)
    tree = copy.deepcopy(defaults)
    if path is not None:
        for file, data in _load_chain(Path(path)):
            if file == BASE_CONFIG.resolve():
                continue
            for key, value in data.items():
                if key in ENTRY_SECTIONS and key != entry:
                    continue  # another entry point's keys: checked when that entry point reads this file
                _set(tree, key, value, defaults, str(file))
    for key, value in _parse_overrides(overrides).items():
        _set(tree, key, value, defaults, "command line")
    cfg = Config(tree)
    _validate(cfg)
    return cfg


def _parse_overrides(overrides: Sequence[str] | dict | None) -> dict:
    if overrides is None:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    result: dict[str, Any] = {}
    items = list(overrides)
    i = 0
    while i < len(items):
        key = items[i]
        if not key.startswith("--"):
            raise ConfigError(f"command line: expected --key value, got {key!r}")
        key = key[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        elif i + 1 < len(items):
            raw = items[i + 1]
            i += 2
        else:
            raise ConfigError(f"command line: --{key} needs a value")
        try:
            result[key] = yaml.safe_load(raw) if raw.strip() else raw  # YAML reads '' as null; keep it text
        except yaml.YAMLError as exc:
            raise ConfigError(f"command line: --{key} {raw!r} is not a valid value: {exc}") from exc
    return result


def absolute_paths(cfg: Config) -> Config:
    """``cfg`` with the relative paths of PATH_KEYS made absolute against the working directory.

    A run's configs.yaml then works from any directory (test.py, the tools).
    """
    for key in PATH_KEYS:
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node.get(part, {})  # an entry point's section is absent for the others
        if node.get(leaf) is not None:
            node[leaf] = str(Path(node[leaf]).expanduser().absolute())
    return cfg


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved configuration as YAML (atomically), loadable by ``load_config``."""
    from utils.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
