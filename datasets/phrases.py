"""Attribute noun phrases of a caption ("green coat", "short black hair"), offline (method §6.1).

Default backend: TextBlob's bundled pattern part-of-speech tagger (no download) and an NLTK chunk
grammar (pure code). Optional backend: spaCy noun chunks, when spaCy and an English model are installed.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import metadata
from typing import Callable

from nltk.chunk import RegexpParser
from textblob.en.taggers import PatternTagger

from utils.errors import UserError

# A phrase is optional modifiers (adjectives, participles, nouns) ending in a noun. Determiners,
# possessives and verbs fall outside the chunk, so they never start or end a phrase.
CHUNK_GRAMMAR = "NP: {<JJ.*|VBN|NN.*>*<NN.*>}"
# Nouns that name the person or the picture rather than an attribute of the person.
NON_ATTRIBUTE_NOUNS = frozenset(
    "man men woman women person people lady ladies girl girls boy boys guy gentleman pedestrian "
    "child kid individual someone she he her his pair picture image photo front side color colour".split())
# Clothing words the pattern lexicon tags as adjectives or verbs ("a white top", "a black watch").
CLOTHING_NOUNS = frozenset(
    "top tops t-shirt t-shirts tshirt tee watch tote flip flops flip-flops heels vest cap hoodie sweatpants "
    "leggings tights jeans shorts sneakers sandals slippers boots overalls dress".split())
SPACY_MODEL = "en_core_web_sm"
# Bump when the extraction changes in a way the inputs hashed by extractor_version() do not show.
EXTRACTOR_REVISION = 1
# The packages whose versions decide each backend's output.
BACKEND_PACKAGES = {"pattern": ("textblob", "nltk"), "spacy": ("spacy", SPACY_MODEL.replace("_", "-"))}
# Determiners, pronouns and possessives are not part of an attribute phrase.
SPACY_SKIP_TAGS = frozenset({"DT", "PDT", "PRP", "PRP$", "POS", "WP$"})


@lru_cache(maxsize=1)
def _pattern_tools() -> tuple[PatternTagger, RegexpParser]:
    return PatternTagger(), RegexpParser(CHUNK_GRAMMAR)


def _attribute(words: list[str]) -> str | None:
    """The phrase of a noun chunk, or None when its head noun names the person or the picture."""
    if not words or words[-1].lower() in NON_ATTRIBUTE_NOUNS:
        return None
    return " ".join(words)


def _pattern_phrases(caption: str) -> list[str]:
    tagger, parser = _pattern_tools()
    tagged = [(w, "NN" if w.lower() in CLOTHING_NOUNS else tag) for w, tag in tagger.tag(caption)]
    if not tagged:
        return []
    chunks = parser.parse(tagged).subtrees(lambda t: t.label() == "NP")
    phrases = (_attribute([w for w, _ in chunk.leaves()]) for chunk in chunks)
    return [p for p in phrases if p]


class PhraseBackendError(UserError, RuntimeError):
    """The configured phrase backend cannot run here."""


@lru_cache(maxsize=1)
def _spacy_model():
    try:
        import spacy
    except ImportError as exc:
        raise PhraseBackendError("phrase_backend 'spacy' needs spaCy: pip install spacy, then "
                           f"python -m spacy download {SPACY_MODEL}; or use phrase_backend 'pattern'") from exc
    try:
        return spacy.load(SPACY_MODEL, disable=["ner", "lemmatizer"])
    except OSError as exc:
        raise PhraseBackendError(f"phrase_backend 'spacy' needs the model {SPACY_MODEL}: "
                           f"python -m spacy download {SPACY_MODEL}") from exc


def _spacy_phrases(caption: str) -> list[str]:
    phrases = []
    for chunk in _spacy_model()(caption).noun_chunks:
        phrase = _attribute([t.text for t in chunk if t.tag_ not in SPACY_SKIP_TAGS])
        if phrase:
            phrases.append(phrase)
    return phrases


BACKENDS: dict[str, Callable[[str], list[str]]] = {"pattern": _pattern_phrases, "spacy": _spacy_phrases}


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise PhraseBackendError(f"phrase_backend = {backend!r} is not valid; choose one of {sorted(BACKENDS)}")


def check_backend(backend: str) -> None:
    """Raise PhraseBackendError now, before any work, when ``backend`` cannot run here (spaCy or its model missing)."""
    _check_backend(backend)
    if backend == "spacy":
        _spacy_model()


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def extractor_version(backend: str) -> str:
    """What a phrase copy's phrases depend on besides the captions: the backend, its rules and package versions."""
    _check_backend(backend)
    parts = [backend, str(EXTRACTOR_REVISION), CHUNK_GRAMMAR, " ".join(sorted(NON_ATTRIBUTE_NOUNS)),
             " ".join(sorted(CLOTHING_NOUNS)), *(f"{p}=={_package_version(p)}" for p in BACKEND_PACKAGES[backend])]
    return f"{backend}-{hashlib.sha256(chr(10).join(parts).encode()).hexdigest()[:16]}"


def extract_phrases(caption: str, backend: str = "pattern") -> list[str]:
    """Attribute noun phrases of ``caption`` in reading order, without determiners or possessives."""
    _check_backend(backend)
    return BACKENDS[backend](caption)
