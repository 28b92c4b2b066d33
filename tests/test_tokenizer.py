"""Tokenizer: CLIP ids for ordinary text, method §4 special ids, <|mask|> handling, truncation."""
import torch
from open_clip.tokenizer import SimpleTokenizer

from utils.tokenizer import Tokenizer, get_tokenizer

TEXTS = [
    "The man is wearing a green coat and white jeans.",
    "A WOMAN with Long  Brown hair,   carrying a bag!",
    "She wears a t-shirt (size M) & 3 bracelets; caf\u00e9 na\u00efve \u4e2d\u6587 &amp; emoji \U0001F600",
    "def f(x): return x[0] + '\\n' # code fragment in RSTPReid",
]


def test_ordinary_text_matches_open_clip(tokenizer):
    reference = SimpleTokenizer()
    for text in TEXTS:
        assert tokenizer.encode(text) == reference.encode(text)
        assert torch.equal(tokenizer(text), reference(text)[0])


def test_special_ids(tokenizer):
    assert (tokenizer.sot_id, tokenizer.eot_id, tokenizer.mask_id, tokenizer.vocab_size) == (49406, 49407, 49405, 49408)


def test_mask_literal_maps_to_mask_id(tokenizer):
    plain = tokenizer.encode("a red coat")
    ids = tokenizer.encode("a <|mask|> <|mask|>coat")
    assert ids == [plain[0], 49405, 49405, plain[-1]]
    assert tokenizer.encode("<|MASK|>") == [49405]


def test_dropped_merge_still_tokenizes(tokenizer):
    ids = tokenizer.encode("jekyll")
    assert len(ids) > 1 and tokenizer.mask_id not in ids
    assert tokenizer.decode(ids).strip() == "jekyll"
    assert SimpleTokenizer().encode("jekyll") == [49405]  # the id the mask token took over


def test_sequence_layout_and_truncation(tokenizer):
    short = tokenizer("a red coat", context_length=10)
    body = tokenizer.encode("a red coat")
    assert short.dtype == torch.long and short.shape == (10,)
    assert short.tolist() == [49406] + body + [49407] + [0] * (10 - len(body) - 2)
    long_text = " ".join(["red coat"] * 60)
    ids = tokenizer(long_text)
    assert ids.shape == (77,)
    assert ids[0] == 49406 and ids[-1] == 49407
    assert ids[1:-1].tolist() == tokenizer.encode(long_text)[:75]
    # the untruncated length: what fits shows it as its non-padding positions, 120 words are 122 with SOT/EOT
    assert tokenizer.sequence_length("a red coat") == int((short != 0).sum()) == 5
    assert tokenizer.sequence_length(long_text) == 122


def test_get_tokenizer_is_cached():
    assert get_tokenizer() is get_tokenizer()
    assert isinstance(get_tokenizer(), Tokenizer)
