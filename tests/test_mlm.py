"""MLM masking statistics and rules (method §5)."""
import torch

from datasets.mlm import mask_tokens

MASK = 49405
KW = dict(mask_id=MASK, prob=0.15, mask_ratio=0.8, random_ratio=0.1)


def caption_ids(n_words: int = 60, length: int = 77) -> torch.Tensor:
    ids = torch.zeros(length, dtype=torch.long)
    ids[0], ids[n_words + 1] = 49406, 49407
    ids[1:n_words + 1] = torch.arange(1000, 1000 + n_words)
    return ids


def test_selection_and_replacement_statistics():
    g = torch.Generator().manual_seed(0)
    ids = caption_ids()
    real = (ids > 0) & (ids < MASK)
    selected = masked_tok = random_tok = kept = 0
    for _ in range(3000):
        masked, labels = mask_tokens(ids, generator=g, **KW)
        sel = labels != 0
        assert torch.equal(labels[sel], ids[sel])
        assert not sel[~real].any()  # SOT, EOT and padding are never selected
        assert torch.equal(masked[~sel], ids[~sel])
        selected += int(sel.sum())
        masked_tok += int((masked[sel] == MASK).sum())
        kept += int((masked[sel] == ids[sel]).sum())
        replaced = sel & (masked != MASK) & (masked != ids)
        random_tok += int(replaced.sum())
        assert ((masked[replaced] >= 1) & (masked[replaced] < MASK)).all()
    total = 3000 * int(real.sum())
    assert abs(selected / total - 0.15) < 0.005
    assert abs(masked_tok / selected - 0.8) < 0.01
    assert abs(random_tok / selected - 0.1) < 0.01  # a random id equal to the original is vanishingly rare
    assert abs(kept / selected - 0.1) < 0.01


def test_nothing_selected_masks_position_one():
    g = torch.Generator().manual_seed(0)
    ids = caption_ids(n_words=3)
    masked, labels = mask_tokens(ids, generator=g, **{**KW, "prob": 0.0})
    assert masked[1] == MASK and labels[1] == ids[1]
    assert (labels != 0).sum() == 1 and torch.equal(masked[2:], ids[2:])


def test_masks_depend_on_the_generator_alone():
    """Per-sample seeding (exact resume, any world size) needs the masks to follow the generator: the global
    torch stream does not change them, another seed does."""
    ids = caption_ids()
    draws = []
    with torch.random.fork_rng():
        for global_seed in (1, 2):
            torch.manual_seed(global_seed)
            draws.append(mask_tokens(ids, generator=torch.Generator().manual_seed(7), **KW))
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
    others = [mask_tokens(ids, generator=torch.Generator().manual_seed(seed), **KW)[1] for seed in range(8, 12)]
    assert not any(torch.equal(labels, draws[0][1]) for labels in others)


def test_every_real_position_is_selected_at_the_same_rate():
    """Selection is independent per token (method §5): each real position on its own is selected 15% of the time."""
    g = torch.Generator().manual_seed(1)
    ids = caption_ids()  # 60 words: the fallback for an empty selection (0.85^60 of draws) is negligible
    draws = 4000
    counts = sum((mask_tokens(ids, generator=g, **KW)[1] != 0).long() for _ in range(draws))
    rates = counts[1:61].float() / draws
    # 4000 draws: the standard error of one rate is 0.006, so 0.035 is about six of them
    assert ((rates - KW["prob"]).abs() < 0.035).all(), rates
