"""Tokenizers behind one small protocol, with character offsets for span lookup.

A `Tokenizer` turns a list of strings into a `Tokenized` batch: ids, attention mask, token strings,
which positions are special, and each token's character span in its string (None for specials).
Offsets let users name caption spans by words (``image_map("red circle")``).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from dualex.bytelevel import piece_bytes
from dualex.errors import InputError

Offsets = list[tuple[int, int] | None]


@dataclass
class Tokenized:
    """A tokenised batch of captions.

    `ids` and `mask` are (B, S) long tensors, `special` a (B, S) bool tensor marking special
    and padding positions, `tokens` the B lists of token strings and `offsets` each token's
    (start, end) character span in its caption (None for special tokens and unfound pieces).
    """
    ids: Tensor  # (B, S) long
    mask: Tensor  # (B, S) long
    tokens: list[list[str]]
    special: Tensor  # (B, S) bool
    offsets: list[Offsets]


class Tokenizer(Protocol):
    """Anything that turns a batch of captions into a `Tokenized`."""
    def __call__(self, texts: Sequence[str]) -> Tokenized: ...


def check_texts(texts: Sequence[str]) -> list[str]:
    """Validate captions: strings, not empty after stripping."""
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"caption {i} must be a string, got {type(t).__name__}")
        if not t.strip():
            raise InputError(f"caption {i} is empty; give at least one word to explain")
        out.append(t)
    if not out:
        raise InputError("no captions given")
    return out


def _lower_keep_length(text: str) -> str:
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def align_offsets(text: str, pieces: Sequence[str | None]) -> Offsets:
    """Character spans of token strings in ``text`` (case-insensitive, left to right).

    ``pieces`` are the visible forms of the tokens (markers such as ``</w>``, ``##`` or ``▁`` removed);
    None marks special tokens. A piece is looked up as text first and then, for byte-level BPE
    tokenizers (CLIP, GPT-2), as the UTF-8 bytes it encodes, so ``"Ã©"`` finds the ``é`` of the caption;
    a token holding part of a character's bytes (emoji are often split) covers that whole character.
    A piece that cannot be found gets None instead of a wrong span.
    """
    low = _lower_keep_length(text)
    data = low.encode("utf-8")
    char_of: list[int] = []  # byte position -> character index
    for i, ch in enumerate(low):
        char_of.extend([i] * len(ch.encode("utf-8")))
    pos = 0
    out: Offsets = []
    for piece in pieces:
        if piece is None or not piece.strip():
            out.append(None)
            continue
        p = piece.strip()
        candidates = [p.lower().encode("utf-8")]
        raw = piece_bytes(p)
        if raw is not None and raw.lower() != candidates[0]:
            candidates.append(raw.lower())
        for cand in candidates:
            j = data.find(cand, pos)
            if j >= 0:
                out.append((char_of[j], char_of[j + len(cand) - 1] + 1))
                pos = j + len(cand)
                break
        else:
            out.append(None)
    return out


def warn_truncated(text: str, offsets: Offsets, context: int) -> None:
    """Warn (one line) that the words of ``text`` after its last token do not fit the model's context."""
    ends = [o[1] for o in offsets if o is not None]
    rest = text[max(ends) :] if ends else text
    words = re.findall(r"\w+", rest)
    if not words:
        return
    shown = " ".join(words[:6]) + (" ..." if len(words) > 6 else "")
    warnings.warn(
        f"caption {_short(text)!r} is longer than the model's {context}-token context: its last {len(words)} "
        f"word(s) ({shown!r}) are cut off and get no attributions",
        UserWarning,
        stacklevel=3,
    )


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def clean_piece(token: str) -> str:
    """Visible text of a sub-word token: strips ``</w>``, leading ``##``, ``▁`` and ``Ġ``."""
    t = token.replace("</w>", "")
    if t.startswith("##"):
        t = t[2:]
    return t.replace("▁", " ").replace("Ġ", " ").strip()


class HFTokenizer:
    """Wrap a transformers tokenizer (fast or slow).

    Args:
        tokenizer: A ``PreTrainedTokenizerBase``.
        padding: ``"longest"`` (CLIP, BERT) or ``"max_length"`` (SigLIP was trained padded to 64).
        max_length: Truncation (and padding) length.
        keep_pad_attention: If True the attention mask is 1 on padding too (SigLIP has no mask).
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        padding: str = "longest",
        max_length: int | None = None,
        keep_pad_attention: bool = False,
    ) -> None:
        self.tok = tokenizer
        self.padding = padding
        length = max_length or getattr(tokenizer, "model_max_length", 77)
        self.max_length: int = 512 if length is None or length > 100_000 else int(length)
        self.keep_pad_attention = keep_pad_attention

    def __call__(self, texts: Sequence[str]) -> Tokenized:
        texts = check_texts(texts)
        kw: dict[str, Any] = {"padding": self.padding, "truncation": True, "max_length": self.max_length}
        enc = self.tok(list(texts), return_tensors="pt", return_special_tokens_mask=True, **kw)
        ids = enc["input_ids"].long()
        mask = enc.get("attention_mask", torch.ones_like(ids)).long()
        special = enc["special_tokens_mask"].bool() | (mask == 0)
        full = mask.sum(1) >= self.max_length
        if self.keep_pad_attention:
            mask = torch.ones_like(ids)
        tokens = [self.tok.convert_ids_to_tokens(row.tolist()) for row in ids]
        offsets = []
        for b, text in enumerate(texts):
            pieces = [None if special[b, i] else clean_piece(t) for i, t in enumerate(tokens[b])]
            offsets.append(align_offsets(text, pieces))
            if bool(full[b]):
                warn_truncated(text, offsets[-1], self.max_length)
        return Tokenized(ids, mask, tokens, special, offsets)


class OpenClipTokenizer:
    """Wrap open_clip's tokenizer (CLIP BPE: BOS, tokens, EOS, zero padding to the context length).

    Args:
        tokenizer: ``open_clip.get_tokenizer(arch)`` or an ``open_clip.SimpleTokenizer``.
        context_length: Sequence length the model expects (77 for CLIP).
        trim: Cut trailing padding down to the longest caption of the batch (lossless for causal
            towers that pool at EOS; keep False for towers that attend to padding).
    """

    def __init__(self, tokenizer: Any, *, context_length: int = 77, trim: bool = False) -> None:
        self.tok = tokenizer
        self.context_length = context_length
        self.trim = trim
        inner = getattr(tokenizer, "tokenizer", tokenizer)
        self._decoder: dict[int, str] | None = getattr(inner, "decoder", None) or getattr(tokenizer, "decoder", None)
        self.sot = getattr(tokenizer, "sot_token_id", None) or 49406
        self.eot = getattr(tokenizer, "eot_token_id", None) or 49407

    def __call__(self, texts: Sequence[str]) -> Tokenized:
        texts = check_texts(texts)
        ids = self.tok(list(texts), context_length=self.context_length).long()
        special = (ids == 0) | (ids == self.sot) | (ids == self.eot)
        # Token id 0 is "!" in CLIP BPE and also the padding id: a real "!" comes before EOS.
        eos_pos = (ids == self.eot).int().argmax(-1)
        positions = torch.arange(ids.shape[1])[None]
        special = torch.where(positions < eos_pos[:, None], (ids == self.sot), positions >= eos_pos[:, None])
        mask = (positions <= eos_pos[:, None]).long()
        if self.trim:
            keep = int(eos_pos.max()) + 1
            ids, special, mask = ids[:, :keep], special[:, :keep], mask[:, :keep]
        tokens = [[self._decode(i) for i in row.tolist()] for row in ids]
        offsets = []
        for b, text in enumerate(texts):
            pieces = [None if special[b, i] else clean_piece(t) for i, t in enumerate(tokens[b])]
            offsets.append(align_offsets(text, pieces))
            if int(eos_pos[b]) >= self.context_length - 1:
                warn_truncated(text, offsets[-1], self.context_length)
        return Tokenized(ids, mask, tokens, special, offsets)

    def _decode(self, i: int) -> str:
        if self._decoder is not None and i in self._decoder:
            return self._decoder[i]
        return f"<{i}>"


class WordTokenizer:
    """A deterministic word-level tokenizer for tests and toy models.

    Lower-cases, splits on non-alphanumerics, maps each word to a stable id in ``[first_id, vocab)``
    (a fixed vocabulary if given, else a hash), and adds BOS/EOS; pads with ``pad_id``.
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        bos_id: int,
        eos_id: int,
        pad_id: int = 0,
        first_id: int = 1,
        vocab: Sequence[str] | None = None,
        max_length: int = 16,
        pad_to_max: bool = False,
    ) -> None:
        self.vocab_size, self.bos, self.eos, self.pad = vocab_size, bos_id, eos_id, pad_id
        self.first_id, self.max_length, self.pad_to_max = first_id, max_length, pad_to_max
        self.words = {w: first_id + i for i, w in enumerate(vocab or [])}
        self.n_free = min(bos_id, eos_id) - first_id
        if self.n_free <= 0:
            raise ValueError("first_id must lie below the special ids")

    def word_id(self, word: str) -> int:
        """The id of ``word``: its vocabulary id, else a stable hash into the free ids."""
        if word in self.words:
            return self.words[word]
        h = 0
        for ch in word:
            h = (h * 131 + ord(ch)) % 1_000_003
        return self.first_id + h % self.n_free

    def __call__(self, texts: Sequence[str]) -> Tokenized:
        texts = check_texts(texts)
        rows: list[list[int]] = []
        spans: list[list[tuple[int, int]]] = []
        for text in texts:
            found = list(re.finditer(r"[A-Za-z0-9]+", text))
            matches = found[: self.max_length - 2]
            if len(found) > len(matches):
                warn_truncated(text, [(m.start(), m.end()) for m in matches], self.max_length)
            if not matches:
                raise InputError(f"caption {text!r} has no words")
            rows.append([self.bos, *(self.word_id(m.group().lower()) for m in matches), self.eos])
            spans.append([(m.start(), m.end()) for m in matches])
        S = self.max_length if self.pad_to_max else max(len(r) for r in rows)
        ids = torch.full((len(rows), S), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), S), dtype=torch.long)
        special = torch.ones((len(rows), S), dtype=torch.bool)
        tokens, offsets = [], []
        for b, (r, sp) in enumerate(zip(rows, spans, strict=True)):
            ids[b, : len(r)] = torch.tensor(r)
            mask[b, : len(r)] = 1
            special[b, 1 : len(r) - 1] = False
            text = texts[b]
            toks = ["<bos>", *(text[s:e].lower() for s, e in sp), "<eos>"]
            tokens.append(toks + ["<pad>"] * (S - len(r)))
            row_offsets: list[tuple[int, int] | None] = [None, *sp, None]
            offsets.append(row_offsets + [None] * (S - len(r)))
        return Tokenized(ids, mask, tokens, special, offsets)


TokenizerLike = Tokenizer | Callable[[Sequence[str]], Tokenized]
