"""MLM masking statistics and rules (SPEC 5)."""
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


def test_same_generator_seed_same_masks():
    ids = caption_ids()
    a = mask_tokens(ids, generator=torch.Generator().manual_seed(7), **KW)
    b = mask_tokens(ids, generator=torch.Generator().manual_seed(7), **KW)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
