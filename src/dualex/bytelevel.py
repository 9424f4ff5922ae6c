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
