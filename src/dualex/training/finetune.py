"""In-domain contrastive fine-tuning of a CLIP, so that grounding before and after can be compared.

exCLIP finds that grounding "depends on the training data distribution, and largely improves after
in-domain training". Its fine-tuning facts (exCLIP, arXiv:2408.14153): symmetric InfoNCE on the
cosine matrix scaled by the logit scale, AdamW with weight decay 1e-4, batch 64. The paper's learning
rate and number of epochs are not published; dualex's defaults are a learning rate of 1e-5 (the usual
size for fine-tuning all CLIP weights: larger rates quickly erode the pre-trained features), 5 epochs,
linear warm-up over the first 10 % of steps followed by cosine decay, AdamW betas (0.9, 0.98) and
eps 1e-6 as in CLIP's pre-training, and gradient-norm clipping at 1.0.

Other choices, stated so results can be reproduced:

* The temperature is the model's own logit scale, kept fixed (it is not trained); SigLIP models are
  trained with their sigmoid loss and fixed scale and bias.
* In-batch negatives: each epoch visits every image once, with one of its captions drawn at random, so
  a batch never holds two captions of the same image (which would be false negatives).
* All weights are trained in float32 (models stored in half precision are upcast), optionally under
  bfloat16 autocast on CUDA (``amp=True``).
* Seeded: the shuffles, caption draws and the torch generator come from ``seed``.

Which models. Any adapter that names the loss its family was trained with
(`DualEncoder.contrastive_loss`: transformers CLIP and SigLIP, open_clip; open_clip models with a logit
bias use the sigmoid loss) and, to save, implements `DualEncoder.save_pretrained`: a transformers model
is written with its tokenizer and a ``preprocessor_config.json`` (``dualex.load("hf:OUT_DIR")``), an
open_clip model as ``OUT_DIR/open_clip_model.safetensors``
(``dualex.load("openclip:ARCH@OUT_DIR/open_clip_model.safetensors")``). ``OUT_DIR/dualex_finetune.json``
records the settings, the losses and the name to load.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dualex.errors import InputError, UnsupportedModelError
from dualex.models.base import DualEncoder
from dualex.progress import bar


@dataclass
class FinetuneConfig:
    """Settings of `finetune` (defaults: exCLIP's stated facts plus documented choices, see module)."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-5
    weight_decay: float = 1e-4
    warmup: float = 0.1  # share of all steps with a linear warm-up
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float | None = 1.0
    seed: int = 0
    amp: bool = False

    def check(self) -> None:
        """Refuse out-of-range settings with one plain `InputError` (before any model work)."""
        if self.epochs < 1:
            raise InputError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise InputError(f"batch size must be at least 2 (in-batch negatives), got {self.batch_size}")
        if not self.lr > 0:
            raise InputError(f"learning rate must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise InputError(f"weight decay must be non-negative, got {self.weight_decay}")
        if not 0 <= self.warmup < 1:
            raise InputError(f"warmup is a share of the steps in [0, 1), got {self.warmup}")


@dataclass
class FinetuneResult:
    """What `finetune` did.

    Attributes:
        out_dir: Where the model was saved (None if not saved).
        steps: Optimiser steps taken.
        losses: Training loss of every step (before the step's update).
        loss_before, loss_after: Mean contrastive loss over the evaluation pairs (fixed batches) before
            and after training.
        recall_before, recall_after: In-batch top-1 retrieval (mean of image→text and text→image) on the
            same batches.
        config: The settings used.
        load_name: The name ``dualex.load`` reads the saved model by (None if not saved).
    """

    out_dir: str | None
    steps: int
    losses: list[float]
    loss_before: float
    loss_after: float
    recall_before: float
    recall_after: float
    n_images: int
    n_pairs: int
    config: dict[str, Any] = field(default_factory=dict)
    load_name: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """The result as plain JSON data (written as ``dualex_finetune.json``)."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------------- losses
def infonce_loss(e_img: Tensor, e_txt: Tensor, scale: float) -> Tensor:
    """Symmetric InfoNCE (CLIP's loss) of a batch of matching pairs.

    Args:
        e_img: Image embeddings ``(B, D)`` (unnormalised).
        e_txt: Text embeddings ``(B, D)``; row i matches image row i.
        scale: Logit scale exp(t) multiplying the cosines.

    Returns:
        Scalar: mean of the image→text and text→image cross-entropies over the ``(B, B)`` logits.
    """
    a = torch.nn.functional.normalize(e_img.float(), dim=-1)
    b = torch.nn.functional.normalize(e_txt.float(), dim=-1)
    logits = scale * a @ b.T
    target = torch.arange(logits.shape[0], device=logits.device)
    ce = torch.nn.functional.cross_entropy
    return 0.5 * (ce(logits, target) + ce(logits.T, target))


def sigmoid_loss(e_img: Tensor, e_txt: Tensor, scale: float, bias: float) -> Tensor:
    """SigLIP's pairwise sigmoid loss: ``-mean_i Σ_j log σ(z_ij (scale·cos_ij + bias))``, z = ±1."""
    a = torch.nn.functional.normalize(e_img.float(), dim=-1)
    b = torch.nn.functional.normalize(e_txt.float(), dim=-1)
    logits = scale * a @ b.T + bias
    z = 2 * torch.eye(logits.shape[0], device=logits.device) - 1
    return -torch.nn.functional.logsigmoid(z * logits).sum(1).mean()


def in_batch_recall(e_img: Tensor, e_txt: Tensor) -> float:
    """Top-1 retrieval within a batch, mean of image→text and text→image, in [0, 1]."""
    sim = torch.nn.functional.normalize(e_img.float(), dim=-1) @ torch.nn.functional.normalize(e_txt.float(), dim=-1).T
    target = torch.arange(sim.shape[0], device=sim.device)
    return 0.5 * (float((sim.argmax(1) == target).float().mean()) + float((sim.argmax(0) == target).float().mean()))


# ---------------------------------------------------------------------------------------------------- data
def coco_caption_pairs(path: str | Path, *, split: str | None = "train") -> list[tuple[str, str, str]]:
    """(image path, caption, image key) triples of a COCO-format captions dataset.

    Args:
        path: A COCO captions JSON (``images`` with ``id``/``file_name``, ``annotations`` with
            ``image_id``/``caption``), or a directory holding ``annotations/captions_<split>*.json`` (or a
            single ``captions*.json``) with the images in ``<split>*/``, ``images/`` or beside the JSON.
        split: Which captions file to pick in a directory (``train``, ``val``); None takes the only one.

    Raises:
        InputError: no captions file, or none of its images exist.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"dataset not found: {p}")
    if p.is_dir():
        found = sorted(p.glob("annotations/captions*.json")) + sorted(p.glob("captions*.json"))
        if split is not None and len(found) > 1:
            found = [f for f in found if split in f.stem] or found
        if not found:
            raise InputError(f"{p} holds no captions*.json (looked in {p}/annotations and {p})")
        if len(found) > 1:
            names = ", ".join(f.name for f in found)
            raise InputError(f"{p} holds several captions files ({names}); name one or pass split=")
        ann_file, root = found[0], p
    else:
        ann_file, root = p, p.parent.parent if p.parent.name == "annotations" else p.parent
    try:
        data = json.loads(ann_file.read_text())
        images = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
        anns = [(int(a["image_id"]), str(a["caption"]).strip()) for a in data["annotations"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{ann_file} is not a COCO captions file ({type(exc).__name__}: {exc})") from None
    stem = ann_file.stem.replace("captions_", "").replace("captions", "")
    dirs = [d for d in [root / stem, *sorted(root.glob(f"{stem}*")), root / "images", ann_file.parent, root]
            if d.is_dir()]

    def find(name: str) -> Path | None:
        for d in dirs:
            if (d / name).exists():
                return d / name
        return None

    out, missing = [], 0
    cache: dict[int, Path | None] = {}
    for image_id, caption in anns:
        if image_id not in images or not caption:
            continue
        if image_id not in cache:
            cache[image_id] = find(images[image_id])
        f = cache[image_id]
        if f is None:
            missing += 1
            continue
        out.append((str(f), caption, str(image_id)))
    if not out:
        raise InputError(f"none of the images of {ann_file} were found (looked in {', '.join(map(str, dirs))})")
    return out


def epoch_batches(
    pairs: Sequence[tuple[Any, str, str]], batch_size: int, rng: random.Random
) -> list[list[tuple[Any, str]]]:
    """One epoch: every image once with a random one of its captions, shuffled, in batches.

    Batches of one pair (no negatives) are dropped.
    """
    by_image: dict[str, list[tuple[Any, str]]] = defaultdict(list)
    for image, caption, key in pairs:
        by_image[key].append((image, caption))
    keys = sorted(by_image)
    rng.shuffle(keys)
    chosen = [rng.choice(by_image[k]) for k in keys]
    batches = [chosen[i : i + batch_size] for i in range(0, len(chosen), batch_size)]
    return [b for b in batches if len(b) >= 2]


def _as_triples(pairs: Iterable[Any]) -> list[tuple[Any, str, str]]:
    out = []
    for i, p in enumerate(pairs):
        if not isinstance(p, (tuple, list)) or len(p) not in (2, 3):
            raise InputError(f"pair {i}: expected (image, caption) or (image, caption, image_key)")
        image, caption = p[0], p[1]
        if not isinstance(caption, str) or not caption.strip():
            raise InputError(f"pair {i}: caption must be a non-empty string")
        key = str(p[2]) if len(p) == 3 else (str(image) if isinstance(image, (str, Path)) else f"#{i}")
        out.append((image, caption, key))
    return out


# ---------------------------------------------------------------------------------------------------- training
def _check_model(enc: DualEncoder, openclip_arch: str | None = None, *, saving: bool = True) -> None:
    if enc.contrastive_loss is None or enc.tower("image").modality == enc.tower("text").modality:
        raise UnsupportedModelError(
            "dualex finetune supports image-text models whose adapter names their training loss "
            f"(transformers CLIP/SigLIP, open_clip), not {enc.family!r} ({enc.name})"
        )
    if saving:
        enc.check_saveable(arch=openclip_arch)


def _loss(enc: DualEncoder, e_img: Tensor, e_txt: Tensor) -> Tensor:
    if enc.contrastive_loss == "sigmoid":
        return sigmoid_loss(e_img, e_txt, enc.logit_scale, enc.logit_bias)
    return infonce_loss(e_img, e_txt, enc.logit_scale)


def _embed(enc: DualEncoder, batch: Sequence[tuple[Any, str]]) -> tuple[Tensor, Tensor]:
    pair = enc.prepare([b[0] for b in batch], [b[1] for b in batch])
    return enc.tower("image").encode(pair.image), enc.tower("text").encode(pair.text)


def evaluate_contrastive(
    enc: DualEncoder, batches: Sequence[Sequence[tuple[Any, str]]], *, amp: bool = False
) -> tuple[float, float]:
    """Mean loss and in-batch top-1 retrieval over fixed batches (weighted by batch size)."""
    total, recall, n = 0.0, 0.0, 0
    with torch.no_grad(), _autocast(enc, amp):
        for b in batches:
            e_img, e_txt = _embed(enc, b)
            total += float(_loss(enc, e_img, e_txt)) * len(b)
            recall += in_batch_recall(e_img, e_txt) * len(b)
            n += len(b)
    return total / max(n, 1), recall / max(n, 1)


def _autocast(enc: DualEncoder, amp: bool) -> Any:
    import contextlib

    if amp and enc.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _schedule(step: int, total: int, warmup_steps: int) -> float:
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    rest = max(total - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, rest) / rest))


def finetune(
    model: DualEncoder | str,
    pairs: Iterable[Any],
    out_dir: str | Path | None = None,
    *,
    config: FinetuneConfig | None = None,
    eval_pairs: Iterable[Any] | None = None,
    max_eval: int = 512,
    device: str | torch.device | None = None,
    openclip_arch: str | None = None,
    progress: bool | None = None,
    **overrides: Any,
) -> FinetuneResult:
    """Contrastively fine-tune a transformers CLIP (or SigLIP) on (image, caption) pairs and save it.

    Args:
        model: A `DualEncoder` (``hf-clip``/``hf-siglip``) or a model name (``hf:DIR``, ``shapes``).
            A passed model is trained in place.
        pairs: ``(image, caption)`` or ``(image, caption, image_key)`` items; images as paths, PIL images
            or arrays. Captions of the same image key are never in one batch.
        out_dir: Where to save (``save_pretrained`` + tokenizer + ``preprocessor_config.json`` +
            ``dualex_finetune.json``); None keeps the model in memory only.
        config: `FinetuneConfig`; keyword ``overrides`` (``epochs=``, ``batch_size=``, ``lr=`` ...)
            replace its fields.
        eval_pairs: Pairs for the before/after loss and retrieval (default: the first ``max_eval``
            images of ``pairs``, one caption each).
        max_eval: Cap on the default evaluation pairs.
        device: Train there (default: the model's device).
        openclip_arch: The open_clip architecture of a wrapped open_clip model (models loaded as
            ``openclip:ARCH...`` know it).
        progress: Progress bar (None: only on a terminal).

    Returns:
        A `FinetuneResult`.
    """
    from dataclasses import replace

    from dualex.models.registry import resolve_model

    cfg = replace(config or FinetuneConfig(), **overrides)
    if isinstance(cfg.betas, list):
        # JSON and CLI configurations give a list despite the annotation; the optimizer takes a tuple.
        cfg.betas = tuple(cfg.betas)  # type: ignore[unreachable]
    cfg.check()
    enc = resolve_model(model, device=device)
    _check_model(enc, openclip_arch, saving=out_dir is not None)  # before training: fail early
    triples = _as_triples(pairs)
    if len({k for _, _, k in triples}) < 2:
        raise InputError("fine-tuning needs at least two distinct images (in-batch negatives)")
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    eval_triples = _as_triples(eval_pairs) if eval_pairs is not None else triples
    eval_batches = epoch_batches(eval_triples, cfg.batch_size, random.Random(cfg.seed + 1))
    eval_batches = _cap(eval_batches, max_eval) if eval_pairs is None else eval_batches

    module = enc.module
    module.float()
    loss_before, recall_before = evaluate_contrastive(enc, eval_batches, amp=cfg.amp)
    params = [p for p in module.parameters()]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=cfg.betas,
        eps=cfg.eps,
    )
    n_batches = len(epoch_batches(triples, cfg.batch_size, random.Random(0)))
    if n_batches == 0:
        raise InputError("no batch of at least two images could be formed")
    total = n_batches * cfg.epochs
    warmup_steps = round(cfg.warmup * total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, total, warmup_steps))
    losses: list[float] = []
    for p in params:
        p.requires_grad_(True)
    module.train()
    try:
        with bar(total, "finetune", progress) as pbar:
            for epoch in range(cfg.epochs):
                for batch in epoch_batches(triples, cfg.batch_size, rng):
                    with _autocast(enc, cfg.amp):
                        e_img, e_txt = _embed(enc, batch)
                        loss = _loss(enc, e_img, e_txt)
                    opt.zero_grad(set_to_none=True)
                    torch.autograd.backward(loss)  # = loss.backward(), which torch leaves unannotated
                    if cfg.grad_clip:
                        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    opt.step()
                    sched.step()
                    losses.append(float(loss.detach()))
                    pbar.update(1)
                    pbar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}")
    finally:
        module.eval()
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    loss_after, recall_after = evaluate_contrastive(enc, eval_batches, amp=cfg.amp)
    result = FinetuneResult(
        out_dir=str(out_dir) if out_dir is not None else None,
        steps=len(losses),
        losses=losses,
        loss_before=loss_before,
        loss_after=loss_after,
        recall_before=recall_before,
        recall_after=recall_after,
        n_images=len({k for _, _, k in triples}),
        n_pairs=len(triples),
        config={**asdict(cfg), "base_model": enc.name, "family": enc.family},
    )
    if out_dir is not None:
        save_finetuned(enc, out_dir, result, openclip_arch=openclip_arch)
    return result


def _cap(batches: list[list[tuple[Any, str]]], n: int) -> list[list[tuple[Any, str]]]:
    out, seen = [], 0
    for b in batches:
        if seen >= n:
            break
        out.append(b)
        seen += len(b)
    return out


def save_finetuned(
    enc: DualEncoder,
    out_dir: str | Path,
    result: FinetuneResult | None = None,
    *,
    openclip_arch: str | None = None,
) -> str:
    """Save a fine-tuned model where ``dualex.load`` reads it (`DualEncoder.save_pretrained`); returns its name.

    ``result`` is written next to it as ``dualex_finetune.json`` (with the name to load).
    """
    _check_model(enc, openclip_arch)
    name = enc.save_pretrained(out_dir, arch=openclip_arch)
    if result is not None:
        result.load_name = name
        (Path(out_dir).expanduser() / "dualex_finetune.json").write_text(json.dumps(result.to_json_dict(), indent=2))
    return name


__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "coco_caption_pairs",
    "epoch_batches",
    "evaluate_contrastive",
    "finetune",
    "in_batch_recall",
    "infonce_loss",
    "save_finetuned",
    "sigmoid_loss",
]
