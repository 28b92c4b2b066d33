"""CLIP byte-level BPE tokenizer with the IRRA ``<|mask|>`` id (method §4).

The vocabulary and the BPE merge code come from open_clip's ``SimpleTokenizer``; this module only
re-assigns id 49405 (the last merge, 'jekyll</w>') to ``<|mask|>`` and builds fixed-length sequences.
"""
from __future__ import annotations

import logging
import textwrap
from functools import lru_cache
from typing import Sequence

import torch

logger = logging.getLogger(__name__)

MASK_TOKEN = "<|mask|>"
DEFAULT_CONTEXT_LENGTH = 77  # CLIP's text context (method §4; open_clip.tokenizer.DEFAULT_CONTEXT_LENGTH)
SPECIAL_TOKENS = 2  # SOT and EOT around a caption's BPE tokens (method §4)
QUERY_PREVIEW_CHARS = 60  # how much of a truncated query its warning quotes


class Tokenizer:
    """CLIP BPE with SOT 49406, EOT 49407 and ``<|mask|>`` 49405 (method §4)."""

    def __init__(self) -> None:
        from open_clip.tokenizer import SimpleTokenizer  # here, not at import: importing open_clip takes seconds

        self._clip = SimpleTokenizer()
        self.sot_id: int = self._clip.sot_token_id
        self.eot_id: int = self._clip.eot_token_id
        self.vocab_size: int = self._clip.vocab_size
        # The last merge gives up its id to <|mask|> (method §4): drop the merge so its word is
        # spelled with earlier merges, and drop its vocabulary entry so nothing else maps to that id.
        last_merge = max(self._clip.bpe_ranks, key=self._clip.bpe_ranks.get)
        merged = "".join(last_merge)
        self.mask_id: int = self._clip.encoder.pop(merged)
        del self._clip.bpe_ranks[last_merge]
        self._clip.decoder[self.mask_id] = MASK_TOKEN

    def clean(self, text: str) -> str:
        """CLIP's cleaning: ftfy, HTML unescape, whitespace collapse, lower case."""
        return self._clip.clean_fn(text)

    def _encode_clean(self, text: str) -> list[int]:
        """BPE ids of already-cleaned text that holds no mask token."""
        clip = self._clip
        ids: list[int] = []
        for word in clip.pat.findall(text):
            word = "".join(clip.byte_encoder[b] for b in word.encode("utf-8"))
            ids.extend(clip.encoder[piece] for piece in clip.bpe(word).split(" "))
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without SOT/EOT; each literal ``<|mask|>`` becomes ``mask_id``."""
        # open_clip's special-token option would join '<|mask|>' into its regex unescaped (the '|'
        # becomes alternation), so the mask token is split out here instead.
        parts = self.clean(text).split(MASK_TOKEN)
        ids = self._encode_clean(parts[0])
        for part in parts[1:]:
            ids.append(self.mask_id)
            ids.extend(self._encode_clean(part))
        return ids

    def sequence_length(self, text: str) -> int:
        """Positions ``text`` needs with SOT and EOT, before any truncation to a context length."""
        return len(self.encode(text)) + 2

    def decode(self, ids: list[int]) -> str:
        """Text of token ids (padding and SOT/EOT excluded by the caller)."""
        return self._clip.decode(ids)

    def sequence(self, text: str) -> list[int]:
        """SOT, the token ids of ``text``, EOT: what ``__call__`` fits into a fixed length."""
        return [self.sot_id] + self.encode(text) + [self.eot_id]

    def fit(self, ids: list[int], context_length: int) -> torch.LongTensor:
        """``[context_length]`` ids: ``ids`` padded with zeros; truncation keeps EOT last (method §4)."""
        if len(ids) > context_length:
            ids = ids[:context_length]
            ids[-1] = self.eot_id
        out = torch.zeros(context_length, dtype=torch.long)
        out[: len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def __call__(self, text: str, context_length: int = DEFAULT_CONTEXT_LENGTH) -> torch.LongTensor:
        """``[context_length]`` ids: SOT, tokens, EOT, zeros; truncation keeps EOT last (method §4)."""
        return self.fit(self.sequence(text), context_length)


@lru_cache(maxsize=1)
def get_tokenizer() -> Tokenizer:
    """The process-wide tokenizer (building one reads the 1.6 MB BPE file)."""
    return Tokenizer()


def tokenize_queries(queries: Sequence[str], context_length: int) -> torch.LongTensor:
    """``[len(queries), context_length]`` ids of texts a user typed; one longer than the model reads is
    truncated with a warning saying so (training captions are truncated silently, as in IRRA)."""
    tokenizer = get_tokenizer()
    rows = []
    for query in queries:
        ids = tokenizer.sequence(query)
        if len(ids) > context_length:
            logger.warning("query truncated: it has %d tokens (start and end marks included), more than the "
                           "%d the model reads (text_length), so its last %d are dropped: %r", len(ids),
                           context_length, len(ids) - context_length,
                           textwrap.shorten(query, QUERY_PREVIEW_CHARS, placeholder=" ..."))
        rows.append(tokenizer.fit(ids, context_length))
    return torch.stack(rows)
