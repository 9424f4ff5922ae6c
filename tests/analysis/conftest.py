"""Hand-made run directories for the analysis tests, written with the run-store API.

Images are 64 × 64 pixels on a 4 × 4 patch grid (16-pixel patches, identity transform), so a box
``patch_box(r0, c0, r1, c1)`` covers exactly patch rows r0..r1-1 and columns c0..c1-1.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from dualex.evaluation.store import RunStore
from dualex.explanation import Explanation
from dualex.images import ImageTransform

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 50), "cat": (200, 200, 40)}
GRID = (4, 4)
SIZE = 64
PATCH = SIZE // GRID[0]


def patch_box(r0: int, c0: int, r1: int, c1: int) -> list[float]:
    """Pixel box covering patch rows ``r0..r1-1`` and columns ``c0..c1-1``."""
    return [float(c0 * PATCH), float(r0 * PATCH), float(c1 * PATCH), float(r1 * PATCH)]


def patch_index(r: int, c: int) -> int:
    return r * GRID[1] + c


def word_tokens(caption: str) -> tuple[list[str], list[tuple[int, int] | None]]:
    """BOS, one token per word, EOS, with character offsets (None for the specials)."""
    words = list(re.finditer(r"[A-Za-z0-9]+", caption))
    return ["<bos>", *(m.group() for m in words), "<eos>"], [None, *((m.start(), m.end()) for m in words), None]


def token_of(caption: str, word: str, occurrence: int = 0) -> int:
    tokens, _ = word_tokens(caption)
    hits = [i for i, t in enumerate(tokens) if t == word]
    return hits[occurrence]


def make_explanation(caption: str, cross: dict[tuple[int, int], float] | torch.Tensor, *, method: str = "ij",
                     first_order: bool = False) -> Explanation:  # fmt: skip
    """An explanation of ``caption`` on the 4 × 4 grid; ``cross`` maps (token, patch) -> value."""
    tokens, offsets = word_tokens(caption)
    S, P = len(tokens), GRID[0] * GRID[1]
    if isinstance(cross, torch.Tensor):
        A = cross.float()
    else:
        A = torch.zeros(S, P)
        for (s, p), v in cross.items():
            A[s, p] = v
    special = torch.zeros(S, dtype=torch.bool)
    special[0] = special[-1] = True
    tf = ImageTransform((SIZE, SIZE), (SIZE, SIZE), 1.0, 1.0)
    return Explanation(
        cross=None if first_order else A,
        image_main=A.sum(0) if first_order else None,
        tokens=tokens, special=special, text=caption, grid=GRID, score=float(A.sum()), cosine=0.1,
        method=method, token_offsets=offsets, image_size=(SIZE, SIZE), image_transform=tf,
    )  # fmt: skip


def span_of(caption: str, phrase: str, occurrence: int = 0) -> tuple[int, int]:
    starts = [m.start() for m in re.finditer(re.escape(phrase), caption)]
    s = starts[occurrence]
    return s, s + len(phrase)


def write_run(root: Path, units: list[dict[str, Any]], *, methods: list[str] | None = None) -> Path:
    """Write a run directory.

    Each unit: ``item_id``, ``method`` (default ``ij``), ``caption``, ``objects`` (dicts with
    ``class_name``, ``phrase``, ``boxes``, optional ``occurrence`` and metric values, optional ``error``),
    optional ``explanation`` (an `Explanation` to save), optional ``error`` (a pair-level error).
    """
    store = RunStore(root)
    meths = methods or sorted({u.get("method", "ij") for u in units})
    store.open({"model": "toy", "dataset": {"kind": "toy", "path": None, "options": {}}, "methods": meths,
                "method_options": {m: {} for m in meths}, "options": {}})  # fmt: skip
    rows = []
    for u in units:
        method = u.get("method", "ij")
        rel = None
        if u.get("explanation") is not None:
            u["explanation"].save(store.explanation_path(method, u["item_id"]))
            rel = store.explanation_relpath(method, u["item_id"])
        base = {"item_id": u["item_id"], "method": method, "dataset": "toy", "caption": u["caption"],
                "image_id": u["item_id"], "explanation": rel}  # fmt: skip
        rows.append({**base, "object": -1, "level": "pair", "score": 1.0, "error": u.get("error")})
        if u.get("error"):
            continue
        for k, o in enumerate(u.get("objects", [])):
            start, end = span_of(u["caption"], o["phrase"], o.get("occurrence", 0))
            metrics = {m: o[m] for m in ("pg_hit_t2i", "pg_energy_t2i", "pg_hit_i2t", "pg_energy_i2t", "span_box")
                       if m in o}  # fmt: skip
            rows.append({**base, "object": k, "level": "object", "class_name": o["class_name"],
                         "phrase": o["phrase"], "span_start": start, "span_end": end, "boxes": o["boxes"],
                         "error": o.get("error"), **metrics})  # fmt: skip
    store.write_shard(rows)
    return root


@pytest.fixture
def run_writer(tmp_path):
    """``run_writer(units, name="run") -> Path``."""

    def write(units: list[dict[str, Any]], name: str = "run", **kw: Any) -> Path:
        return write_run(tmp_path / name, units, **kw)

    return write


def tiny_clip_dir(path: Path) -> Path:
    """A random tiny transformers CLIP saved with a transformers tokenizer and a preprocessor config."""
    from transformers import CLIPConfig, CLIPModel

    from dualex.testing import TINY_VOCAB, tiny_hf_tokenizer

    torch.manual_seed(0)
    tok = tiny_hf_tokenizer(pad_is_eos=False, max_length=16)  # words, then </s> (id 1); <pad> is 0
    cfg = CLIPConfig(
        text_config={"vocab_size": TINY_VOCAB, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                     "num_attention_heads": 4, "max_position_embeddings": 16, "bos_token_id": 1,
                     "eos_token_id": 1, "pad_token_id": 0},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
                       "num_hidden_layers": 1, "num_attention_heads": 4},
        projection_dim=16,
    )  # fmt: skip
    CLIPModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 32},
        "crop_size": {"height": 32, "width": 32}, "do_center_crop": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))  # fmt: skip
    return path


def coco_fixture(root: Path, n_images: int = 8) -> Path:
    """A COCO-format captions dataset of tiny solid-colour images, two captions each."""
    (root / "annotations").mkdir(parents=True)
    (root / "train2017").mkdir()
    images, anns = [], []
    names = list(COLOURS)
    for i in range(n_images):
        colour = names[i % len(names)]
        rgb = np.array(COLOURS[colour], dtype=np.uint8)
        arr = np.tile(rgb, (24, 24, 1))
        arr[: 6 * (i // len(names) + 1)] = 255 - rgb  # a band, so that images of one colour differ
        Image.fromarray(arr).save(root / "train2017" / f"{i:03d}.png")
        images.append({"id": i, "file_name": f"{i:03d}.png", "width": 24, "height": 24})
        anns += [{"id": 2 * i, "image_id": i, "caption": f"a {colour} square"},
                 {"id": 2 * i + 1, "image_id": i, "caption": f"the {colour} circle"}]  # fmt: skip
    (root / "annotations" / "captions_train2017.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return root


def coco_instances_fixture(root: Path, n_images: int = 4) -> Path:
    """COCO captions + instances (val2017) of tiny two-colour images, one object on each half.

    Odd images: "a red dog on the blue mat" (dog left, mat right); even: "a cat on a square".
    """
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    images, caps, inst = [], [], []
    for i in range(n_images):
        arr = np.zeros((24, 24, 3), dtype=np.uint8)
        arr[:, :12] = (200, 40 + 20 * i, 40)
        arr[:, 12:] = (40, 40, 200 - 20 * i)
        Image.fromarray(arr).save(root / "val2017" / f"{i:03d}.png")
        images.append({"id": i, "file_name": f"{i:03d}.png", "width": 24, "height": 24})
        odd = i % 2 == 1
        caps.append({"id": i, "image_id": i, "caption": "a red dog on the blue mat" if odd else "a cat on a square"})
        left, right = (1, 4) if odd else (2, 3)
        inst += [{"id": 10 * i, "image_id": i, "category_id": left, "bbox": [0, 0, 12, 24]},
                 {"id": 10 * i + 1, "image_id": i, "category_id": right, "bbox": [12, 0, 12, 24]}]  # fmt: skip
    cats = [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}, {"id": 3, "name": "square"}, {"id": 4, "name": "mat"}]
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps({"images": images, "annotations": caps}))
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": inst, "categories": cats})
    )
    return root


@pytest.fixture
def toy():
    """The helpers of this module (test files cannot import a conftest by name)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        GRID=GRID, SIZE=SIZE, patch_box=patch_box, patch_index=patch_index, token_of=token_of,
        make_explanation=make_explanation, span_of=span_of, write_run=write_run, word_tokens=word_tokens,
        tiny_clip_dir=tiny_clip_dir, coco_fixture=coco_fixture, coco_instances_fixture=coco_instances_fixture,
    )  # fmt: skip
