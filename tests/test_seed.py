"""utils.seed: derived stream seeds never alias, and the config's seed range is the one numpy accepts."""
import itertools

import numpy as np
import pytest

from utils.config_rules import SEED_LIMIT
from utils.seed import derive_seed, get_rng_states, set_rng_states, set_seed


def test_stream_keys_are_fixed_length_and_never_alias():
    keys = list(itertools.product((0, 1, 42), (0, 1, 2), range(4), (0, 1, SEED_LIMIT - 1)))
    assert len({derive_seed(*key) for key in keys}) == len(keys)
    with pytest.raises(TypeError):
        derive_seed(42, 1, 0, 0, 0)  # a fifth key: keys of another length could alias (zero padding)
    for wide in ((SEED_LIMIT, 0, 0), (0, 1, 0, SEED_LIMIT), (0, -1, 0)):  # more than one 32-bit word, or negative
        with pytest.raises(ValueError, match="keys must be whole numbers"):
            derive_seed(*wide)


def test_the_config_seed_limit_is_numpys():
    saved = get_rng_states()
    try:
        set_seed(SEED_LIMIT - 1)  # the largest seed the config accepts works everywhere
        with pytest.raises(ValueError):
            np.random.seed(SEED_LIMIT)  # the first it refuses would crash set_seed
    finally:
        set_rng_states(saved)
