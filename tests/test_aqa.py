"""AQA samples, one test per rule of method §6.1."""
import random
import re
from collections import Counter

import torch

from datasets.aqa import (
    choose_span,
    fallback_span,
    find_occurrences,
    is_valid_phrase,
    make_aqa_sample,
    question_and_answer,
)

KW = dict(context_length=77, answer_prefix_masks=3, min_word_len=3, fallback_min_len=4)


def ids_body(ids: torch.Tensor) -> list[int]:
    """Tokens between SOT and EOT."""
    ids = ids.tolist()
    return ids[1:ids.index(49407)]


def test_validity_rule():
    assert is_valid_phrase("red coat", 3)
    assert not is_valid_phrase("a", 3)  # not longer than one character
    assert not is_valid_phrase("a red coat", 3)  # 'a' is shorter than 3
    assert not is_valid_phrase("to", 3)
    assert is_valid_phrase("hat", 3)


def test_whole_word_case_insensitive_occurrences():
    caption = "Red coat, a RED bag and bored red-ish shoes; tired."
    spans = find_occurrences(caption, "red")
    assert [caption[s.start:s.end] for s in spans] == ["Red", "RED", "red"]
    assert [s.start for s in spans] == [0, 12, 30]
    assert find_occurrences("a (red) coat", "red")[0].text == "red"


def test_each_occurrence_and_each_phrase_gets_chosen():
    caption = "a red coat and a red bag and white shoes"
    rng = random.Random(0)
    picks = Counter()
    for _ in range(3000):
        span = choose_span(caption, ["red", "white shoes"], rng, 3, 4)
        picks[(span.text, span.start)] += 1
    assert set(picks) == {("red", 2), ("red", 17), ("white shoes", 29)}
    # phrase choice uniform: half the draws pick 'white shoes'; 'red' splits its half between two occurrences
    assert abs(picks[("white shoes", 29)] / 3000 - 0.5) < 0.05
    assert abs(picks[("red", 2)] / 3000 - 0.25) < 0.05


def test_mask_count_equals_bpe_length_and_question_reconstructs_caption(tokenizer):
    caption = "A woman in a blue t-shirt, jeans and sneakers."
    rng = random.Random(1)
    sample = make_aqa_sample(caption, ["blue t-shirt"], tokenizer, rng, **KW)
    phrase_ids = tokenizer.encode("blue t-shirt")
    q = ids_body(sample.question_ids)
    assert len(phrase_ids) > 2 and q.count(tokenizer.mask_id) == len(phrase_ids)
    start = q.index(tokenizer.mask_id)
    rebuilt = q[:start] + phrase_ids + q[start + len(phrase_ids):]
    assert rebuilt == tokenizer.encode(caption)


def test_answer_prefix_default_and_configurable(tokenizer):
    rng = random.Random(0)
    sample = make_aqa_sample("He wears a black coat.", ["black coat"], tokenizer, rng, **KW)
    assert ids_body(sample.answer_ids) == [49405] * 3 + tokenizer.encode("black coat")
    no_prefix = {**KW, "answer_prefix_masks": 0}
    sample = make_aqa_sample("He wears a black coat.", ["black coat"], tokenizer, rng, **no_prefix)
    assert ids_body(sample.answer_ids) == tokenizer.encode("black coat")


def test_fallback_when_no_valid_phrase_or_no_occurrence():
    caption = "A man, walking slowly. wearing boots, near walking trees"
    allowed = {"walking", "slowly.", "wearing", "boots,", "near", "trees"}
    candidates = {w for w in allowed if len(w) >= 4 and "." not in w and "," not in w}
    rng = random.Random(0)
    seen = set()
    for phrases in (["an"], ["green hat"], [], ["to be"]):  # invalid, absent, none, invalid
        for _ in range(200):
            span = choose_span(caption, phrases, rng, 3, 4)
            assert span.text in candidates
            assert span.start == caption.index(span.text)  # first occurrence
            seen.add(span.text)
    assert seen == candidates


def test_fallback_masks_first_occurrence_with_bpe_count(tokenizer):
    caption = "jacket jacket"
    span = fallback_span(caption, random.Random(0), 4)
    question, answer = question_and_answer(caption, span, tokenizer, 3)
    k = len(tokenizer.encode("jacket"))
    assert question == " ".join(["<|mask|>"] * k) + " jacket"
    assert answer == "<|mask|> <|mask|> <|mask|> jacket"


def test_question_mask_covers_sot_through_eot(tokenizer):
    caption = "Wow! A red coat!"  # '!' has id 0, the padding id
    sample = make_aqa_sample(caption, ["red coat"], tokenizer, random.Random(0), **KW)
    n = len(ids_body(sample.question_ids)) + 2
    assert sample.question_mask.tolist() == [1] * n + [0] * (77 - n)
    assert sample.question_ids.dtype == sample.question_mask.dtype == sample.answer_ids.dtype == torch.long


def test_a_sample_is_drawn_from_the_given_generator_alone(tokenizer):
    """method §6.1 by hand from a twin of the generator: a phrase uniformly, then one of its occurrences uniformly;
    the question masks it with one mask per BPE token, the answer is 3 masks and the phrase. The global random
    stream is reseeded in between: a sample that read it would not follow its twin."""
    caption = "a red coat and a red bag and white shoes"
    phrases = ["red", "white shoes"]
    state = random.getstate()
    try:
        for seed in range(12):
            twin = random.Random(seed)
            phrase = twin.choice(phrases)
            start = twin.choice([m.start() for m in re.finditer(rf"\b{phrase}\b", caption)])
            masks = " ".join(["<|mask|>"] * len(tokenizer.encode(phrase)))
            random.seed(1000 + seed)
            sample = make_aqa_sample(caption, phrases, tokenizer, random.Random(seed), **KW)
            assert torch.equal(sample.question_ids, tokenizer(caption[:start] + masks + caption[start + len(phrase):]))
            assert torch.equal(sample.answer_ids, tokenizer(f"<|mask|> <|mask|> <|mask|> {phrase}"))
    finally:
        random.setstate(state)


def test_a_truncated_question_is_attended_to_its_last_position(tokenizer):
    caption = "The man has short black hair, is dressed in a red coat and walks in black boots."
    kw = {**KW, "context_length": 8}
    sample = make_aqa_sample(caption, ["black boots"], tokenizer, random.Random(0), **kw)
    assert len(tokenizer.encode(caption)) + 2 > 8
    assert sample.question_mask.tolist() == [1] * 8  # no padding left: every position is attended
    assert sample.question_ids[-1].item() == tokenizer.eot_id and sample.answer_ids.shape == (8,)
