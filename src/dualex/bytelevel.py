"""Byte-level BPE (GPT-2, CLIP): the bytes behind a token's printable characters.

Byte-level tokenizers spell every byte as a printable character (``"é"`` is the two bytes ``c3 a9``,
spelled ``"Ã©"``). These helpers turn such pieces back into bytes, so that tokens can be aligned with
the caption they came from and shown as the text they cover. No model is needed.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def byte_encoder() -> dict[int, str]:
    """Byte-level BPE's byte -> printable character table (GPT-2, CLIP), in vocabulary order: the bytes
    that print as themselves first, then the others mapped to U+0100 onwards. Read-only (cached)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(keep)
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of `byte_encoder`."""
    return {c: b for b, c in byte_encoder().items()}


def piece_bytes(piece: str) -> bytes | None:
    """The bytes a byte-level BPE piece stands for (``"Ã©"`` -> ``b"\\xc3\\xa9"``, i.e. é), or None."""
    table = _byte_decoder()
    if not piece or any(c not in table for c in piece):
        return None
    return bytes(table[c] for c in piece)


def display_token(token: str) -> str:
    """A token as readable text: byte-level BPE decoded to UTF-8 (partial characters as U+FFFD)."""
    piece = token.replace("</w>", "")
    raw = piece_bytes(piece)
    if raw is None or raw.isascii():
        return token
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # part of a character; Latin-1-only pieces may be real text (SentencePiece)
        return raw.decode("utf-8", errors="replace") if any(ord(c) > 0xFF for c in piece) else token


SENTENCEPIECE_SPACE = "\u2581"
"""SentencePiece's word-start marker (``▁``)."""


def display_piece(piece: str) -> str:
    """A tokenizer piece as the text it stands for, without tokenizer markers.

    CLIP's end-of-word ``</w>`` and WordPiece's ``##`` continuation are dropped, SentencePiece's ``▁`` and
    byte-level BPE's ``Ġ`` (the space byte) become spacing, byte-level pieces are decoded to UTF-8
    (``"cafÃ©"`` -> ``"café"``; part of a character as U+FFFD), and the spacing around the word is trimmed.
    """
    text = piece.replace("</w>", "")
    if text.startswith("##") and len(text) > 2:
        text = text[2:]
    text = text.replace(SENTENCEPIECE_SPACE, " ")
    raw = piece_bytes(text)
    if raw is not None and not raw.isascii():
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # part of a character; Latin-1-only pieces may be real text (SentencePiece)
            if any(ord(c) > 0xFF for c in text):
                text = raw.decode("utf-8", errors="replace")
    elif raw is not None:
        text = raw.decode("ascii")
    stripped = text.strip()
    if stripped:
        return stripped
    return " " if text else piece  # a token that is only spacing


def display_tokens(
    pieces: list[str],
    *,
    text: str,
    offsets: list[tuple[int, int] | None],
    special: list[bool],
) -> list[str]:
    """Display strings of a caption's tokens: the caption text each covers (``offsets``), else the piece
    without markers (`display_piece`); special tokens keep their spelling (``<|startoftext|>``, ``[CLS]``).

    Args:
        pieces: The tokenizer's raw pieces (S).
        text: The caption.
        offsets: Character span of each piece in ``text`` (None where it has none).
        special: Whether each position is a special token.
    """
    out = []
    for i, piece in enumerate(pieces):
        o = offsets[i] if i < len(offsets) else None
        if special[i]:
            out.append(piece)
            continue
        covered = text[o[0] : o[1]].strip() if o is not None else ""
        out.append(covered or display_piece(piece))
    return out

