"""`dualex.bytelevel` and the byte-aware token alignment of `dualex.models.tokenize.align_offsets`."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from dualex.bytelevel import _byte_decoder, display_token, piece_bytes
from dualex.models.tokenize import align_offsets

ENCODER = {b: c for c, b in _byte_decoder().items()}


def spell(raw: bytes) -> str:
    """How a byte-level BPE tokenizer spells ``raw``."""
    return "".join(ENCODER[b] for b in raw)


def test_table_is_a_bijection_on_bytes():
    assert sorted(_byte_decoder().values()) == list(range(256))
    assert piece_bytes("Ã©") == "é".encode() and piece_bytes("ðŁĲ¶") == "🐶".encode()
    assert piece_bytes("日本") is None  # not byte-level spelling


def test_display_token():
    assert display_token("cafÃ©</w>") == "café"
    assert display_token("dog</w>") == "dog</w>"  # ASCII tokens are left as the tokenizer spells them
    assert display_token("ðŁ") == "\ufffd"  # half an emoji
    assert display_token("é") == "é"  # a SentencePiece piece, not byte-level


ALPHABET = st.sampled_from([*"abcXYZ019 .,!-", "é", "ü", "ß", "日", "本", "🐶", "👍🏽"])


@settings(max_examples=150, deadline=None)
@given(chars=st.lists(ALPHABET, min_size=1, max_size=20), cuts=st.lists(st.integers(0, 400), max_size=12))
def test_byte_level_pieces_map_onto_the_characters_they_touch(chars, cuts):
    """Pieces that split the caption's UTF-8 bytes anywhere (as BPE merges do) get the span of the
    characters their bytes belong to: whole characters exactly, part of a character that character."""
    text = "".join(chars)
    data = text.lower().encode("utf-8")
    char_of = [i for i, ch in enumerate(text.lower()) for _ in ch.encode("utf-8")]
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    spans = [(a, b) for a, b in itertools.pairwise(bounds) if b > a]
    offsets = align_offsets(text, [spell(data[a:b]) for a, b in spans])
    assert offsets == [(char_of[a], char_of[b - 1] + 1) for a, b in spans]
