"""Seeding: derived seeds for every random stream, and RNG-state capture for exact resume."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from utils.config_rules import SEED_LIMIT

SEED_BITS = 63  # torch generators take seeds below 2**63


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def derive_seed(seed: int, epoch: int, stream: int, position: int = 0) -> int:
    """A well-mixed seed that is a function of the key (seed, epoch, stream, position) alone.

    The key is always four 32-bit words: SeedSequence pads short entropy with zeros and splits a larger integer
    into several words, so keys of varying length or width would alias ((42, 1, 0) and (42, 1, 0, 0);
    (2**32, 0) and (0, 1)).
    """
    key = (seed, epoch, stream, position)
    if not all(0 <= k < SEED_LIMIT for k in key):
        raise ValueError(f"derive_seed: keys must be whole numbers in [0, {SEED_LIMIT}), got {key}")
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(2, np.uint32)
    return (int(state[0]) << 32 | int(state[1])) >> (64 - SEED_BITS)


def generator(seed: int, epoch: int, stream: int, position: int = 0) -> torch.Generator:
    """A CPU torch generator seeded by ``derive_seed`` of the same key."""
    return torch.Generator().manual_seed(derive_seed(seed, epoch, stream, position))


def get_rng_states() -> dict[str, Any]:
    """Every random stream's state as plain data (numbers, strings, tensors): last.pth loads weights-only."""
    states: dict[str, Any] = {
        "python": random.getstate(),  # (version, 625 ints, gauss or None)
        "numpy": plain_numpy_state(np.random.get_state(legacy=False)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()  # this process's device: a run may resume on fewer GPUs
    return states


def plain_numpy_state(state: tuple | dict[str, Any]) -> dict[str, Any]:
    """numpy's global RNG state (either form ``get_state`` returns) with its key array as an int64 tensor."""
    if isinstance(state, tuple):  # ('MT19937', key, pos, has_gauss, cached_gaussian): the form of older last.pth
        name, key, pos, has_gauss, gauss = state
        state = {"bit_generator": name, "state": {"key": key, "pos": pos}, "has_gauss": has_gauss, "gauss": gauss}
    return {"bit_generator": str(state["bit_generator"]),
            "state": {"key": torch.from_numpy(np.asarray(state["state"]["key"], dtype=np.int64)),
                      "pos": int(state["state"]["pos"])},
            "has_gauss": int(state["has_gauss"]), "gauss": float(state["gauss"])}


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore ``states``; CUDA's when this process has a GPU (older checkpoints hold one state per device)."""
    random.setstate(states["python"])
    numpy = states["numpy"]
    key = numpy["state"]["key"].numpy().astype(np.uint32)  # stored as int64: torch's uint32 tensors are limited
    np.random.set_state({**numpy, "state": {**numpy["state"], "key": key}})
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda")
    if cuda is None or not torch.cuda.is_available():
        return
    if isinstance(cuda, (list, tuple)):  # one state per device of the machine that saved it
        if not cuda:
            return
        cuda = cuda[min(torch.cuda.current_device(), len(cuda) - 1)]
    torch.cuda.set_rng_state(cuda)
