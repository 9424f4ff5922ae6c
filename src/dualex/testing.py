"""Tiny random models built in code, for tests and examples (no downloads).

Shipped inside the package (as captum does) so that downstream projects can reuse them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dualex.models.base import DualEncoder
from dualex.preprocess import CLIP_MEAN, CLIP_STD, HALF, ImagePipeline
from dualex.tokenize import WordTokenizer

TINY_VOCAB = 99
TINY_BOS, TINY_EOS, TINY_PAD = 97, 98, 0


def tiny_word_tokenizer(*, max_length: int = 16, pad_to_max: bool = False, bos: int = TINY_BOS) -> WordTokenizer:
    return WordTokenizer(
        TINY_VOCAB, bos_id=bos, eos_id=TINY_EOS, pad_id=TINY_PAD, max_length=max_length, pad_to_max=pad_to_max
    )


def tiny_hf_clip(seed: int = 0, *, image_size: int = 32, patch_size: int = 8, layers: int = 2) -> DualEncoder:
    """A random transformers ``CLIPModel`` (width 32, ``layers`` blocks per tower) wrapped by dualex."""
    from transformers import CLIPConfig, CLIPModel

    from dualex.models.hf import HFClip

    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config={
            "vocab_size": TINY_VOCAB,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "max_position_embeddings": 32,
            "bos_token_id": TINY_BOS,
            "eos_token_id": TINY_EOS,
            "pad_token_id": TINY_PAD,
        },
        vision_config={
            "image_size": image_size,
            "patch_size": patch_size,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
        },
        projection_dim=16,
    )
    module = CLIPModel(cfg).eval()
    pipe = ImagePipeline(size=image_size, crop=(image_size, image_size), mean=CLIP_MEAN, std=CLIP_STD)
    return HFClip(module, tokenizer=tiny_word_tokenizer(), pipeline=pipe, name="tiny-hf-clip")


def random_image(seed: int = 0, size: tuple[int, int] = (40, 48)) -> np.ndarray:
    """A random uint8 RGB image ``(H, W, 3)``."""
    return np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)


__all__: list[Any] = ["HALF", "random_image", "tiny_hf_clip", "tiny_word_tokenizer"]
