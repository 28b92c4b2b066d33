"""Attribute question answering samples (method §6.1): mask one attribute phrase of the caption.

The question is the caption with one occurrence of a phrase replaced by as many ``<|mask|>`` tokens as
the phrase has BPE tokens; the answer is the phrase (after a configurable prefix of mask tokens).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import regex as re
import torch

from utils.tokenizer import MASK_TOKEN, Tokenizer

# Fallback words must not carry sentence punctuation (method §6.1 step 5).
FALLBACK_EXCLUDED = (".", ",")


@dataclass(frozen=True)
class Span:
    """The masked part of a caption: characters [start, end) spelling ``text``."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class AQASample:
    question_ids: torch.LongTensor  # [L]
    question_mask: torch.LongTensor  # [L]: 1 from SOT through EOT, 0 on padding
    answer_ids: torch.LongTensor  # [L]


def is_valid_phrase(phrase: str, min_word_len: int) -> bool:
    """method §6.1 step 2: longer than one character and every word at least ``min_word_len`` long."""
    words = phrase.split()
    return len(phrase) > 1 and bool(words) and all(len(w) >= min_word_len for w in words)


def find_occurrences(caption: str, phrase: str) -> list[Span]:
    """Whole-word, case-insensitive occurrences of ``phrase`` in ``caption`` (method §6.1 step 3)."""
    pattern = r"(?<!\w)" + re.escape(phrase) + r"(?!\w)"
    return [Span(m.start(), m.end(), m.group(0)) for m in re.finditer(pattern, caption, flags=re.IGNORECASE)]


def fallback_span(caption: str, rng: random.Random, fallback_min_len: int) -> Span:
    """method §6.1 step 5: the first occurrence of a random word (length >= fallback_min_len, no '.' or ',').

    A caption without such a word (the method leaves this open) masks its first longest word instead.
    """
    words = [(m.start(), m.group(0)) for m in re.finditer(r"\S+", caption)]
    # Every word of the caption is one draw: a word that occurs twice is twice as likely (a random caption word).
    candidates = [w for _, w in words if len(w) >= fallback_min_len and not any(c in w for c in FALLBACK_EXCLUDED)]
    word = rng.choice(candidates) if candidates else max((w for _, w in words), key=len)
    start = next(s for s, w in words if w == word)
    return Span(start, start + len(word), word)


def choose_span(caption: str, phrases: Sequence[str], rng: random.Random, min_word_len: int,
                fallback_min_len: int) -> Span:
    """method §6.1 steps 1-3 and 5: the caption span to mask."""
    if phrases:
        phrase = rng.choice(list(phrases))
        if is_valid_phrase(phrase, min_word_len):
            spans = find_occurrences(caption, phrase)
            if spans:
                return rng.choice(spans)
    return fallback_span(caption, rng, fallback_min_len)


def mask_text(k: int) -> str:
    return " ".join([MASK_TOKEN] * k)


def question_and_answer(caption: str, span: Span, tokenizer: Tokenizer, answer_prefix_masks: int) -> tuple[str, str]:
    """method §6.1 step 4: question and answer texts for a chosen span."""
    k = len(tokenizer.encode(span.text))
    question = f"{caption[:span.start]}{mask_text(k)}{caption[span.end:]}"
    answer = f"{mask_text(answer_prefix_masks)} {span.text}" if answer_prefix_masks else span.text
    return question, answer


def attention_mask(sequence_length: int, context_length: int) -> torch.LongTensor:
    """1 from SOT through EOT, 0 on padding (computed from the length: token id 0 is '!', not only padding)."""
    length = min(sequence_length, context_length)
    mask = torch.zeros(context_length, dtype=torch.long)
    mask[:length] = 1
    return mask


def make_aqa_sample(caption: str, phrases: Sequence[str], tokenizer: Tokenizer, rng: random.Random, *,
                    context_length: int, answer_prefix_masks: int, min_word_len: int,
                    fallback_min_len: int) -> AQASample:
    """Question ids, question attention mask and answer ids of one draw of a training caption."""
    span = choose_span(caption, phrases, rng, min_word_len, fallback_min_len)
    question, answer = question_and_answer(caption, span, tokenizer, answer_prefix_masks)
    question_ids = tokenizer.sequence(question)
    return AQASample(tokenizer.fit(question_ids, context_length), attention_mask(len(question_ids), context_length),
                     tokenizer(answer, context_length))
