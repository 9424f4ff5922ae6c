"""Train the bundled shapes CLIP: ``python -m dualex.training.shapes_train --out DIR``.

Contrastive training (symmetric InfoNCE, CLIP's loss) of the `dualex.models.shapes` architecture on
`dualex.datasets.shapes_generator` scenes generated on the fly from the training seeds, with hard negatives in every
batch: each image's caption competes against all captions of the batch *and* one hard negative per
scene — a colour-swapped caption for half the scenes, a shape-swapped one for the other half
(NegCLIP-style extra text columns). A curriculum grows the scenes from one object to four.
Everything is seeded: batches are a pure function of the step index, whichever process builds them.
The defaults use 2 CPU cores — one training thread, one process generating scenes (two OpenMP
threads on a shared 2-core machine spin-wait for each other and ran several times slower) — at about
0.45 s per step when the cores are free, i.e. under 20 minutes for the 2,500 steps. The bundled
weights were trained with these settings on a machine shared with other jobs, where it took 37 min.

After training the model is saved (fp16 safetensors, float32 config), reloaded through
``dualex.load("hf:DIR")`` — the adapter path every real CLIP takes — and evaluated on held-out scenes
(seeds disjoint from the training seeds); the figures are printed and written to ``DIR/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dualex.datasets.shapes_generator import (
    COLOURS,
    SHAPES,
    SIZES,
    ShapesDataset,
    generate_scene,
    scene_seed,
    swap_colours,
    swap_shapes,
)
from dualex.errors import InputError
from dualex.models.preprocess import CLIP_MEAN, CLIP_STD
from dualex.models.shapes import ARCH, build_model, build_tokenizer, save_model

Curriculum = tuple[tuple[float, tuple[int, ...]], ...]
CURRICULA: dict[str, Curriculum] = {
    # the bundled weights: one object first, four by a third of training, then no single objects
    "default": ((0.00, (1,)), (0.08, (1, 2)), (0.20, (1, 2, 3)), (0.35, (1, 2, 3, 4)), (0.55, (2, 3, 4))),
    # keeps 1-object scenes to the end (slightly better on single objects' shapes, see the README)
    "keep_singles": ((0.00, (1,)), (0.06, (1, 2)), (0.15, (1, 2, 3)), (0.30, (1, 2, 3, 4))),
}
"""Per curriculum: (fraction of training from which a stage applies, object counts drawn uniformly)."""


@dataclass
class TrainConfig:
    """Training schedule.

    Attributes:
        steps: Optimiser steps.
        batch_size: Scenes per step (each brings 2 captions: the true one and a colour- or shape-swapped one).
        lr: Peak learning rate (AdamW), reached after ``warmup`` steps, then cosine decay to 5 %.
        warmup: Linear warm-up steps.
        weight_decay: AdamW weight decay (not on biases, norms, embeddings, the logit scale).
        seed: Seeds the initialisation, the training scenes and the negatives.
        curriculum: A name from `CURRICULA`.
        colour_every: Scene ``j`` of a batch gets a colour-swapped negative when ``j % colour_every == 0``,
            a shape-swapped one otherwise (2: half and half).
        threads: torch CPU threads of the training process.
        workers: Processes generating batches alongside (0: generate in the training process). The
            default (1 thread + 1 worker) uses 2 cores without oversubscribing them: on a shared 2-core
            machine two OpenMP threads spin-wait for each other and ran several times slower.
        eval_scenes: Held-out scenes for the final metrics.
        eval_pool: Candidates per retrieval in the final metrics.
        log_every: Print the running loss every this many steps.
    """

    steps: int = 2500
    batch_size: int = 64
    lr: float = 7e-4
    warmup: int = 100
    weight_decay: float = 0.05
    seed: int = 0
    curriculum: str = "default"
    colour_every: int = 2
    threads: int = 1
    workers: int = 1
    eval_scenes: int = 1000
    eval_pool: int = 100
    log_every: int = 50


def objects_at(step: int, steps: int, curriculum: str = "default") -> tuple[int, ...]:
    """Object counts the curriculum draws from at ``step`` of ``steps``."""
    if curriculum not in CURRICULA:
        raise InputError(f"unknown curriculum {curriculum!r}; choose from {', '.join(CURRICULA)}")
    frac = step / max(steps, 1)
    stages = CURRICULA[curriculum]
    choice = stages[0][1]
    for start, counts in stages:
        if frac >= start:
            choice = counts
    return choice


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from ``cfg.lr`` to 5 % of it."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def pixels_of(images: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` images at the model size -> normalised ``(B, 3, H, W)`` (the CLIP pipeline)."""
    x = torch.from_numpy(np.stack(images)).float().div_(255.0).permute(0, 3, 1, 2)
    mean = torch.tensor(CLIP_MEAN)[None, :, None, None]
    std = torch.tensor(CLIP_STD)[None, :, None, None]
    return (x - mean) / std


def make_batch(step: int, cfg: TrainConfig) -> tuple[list[np.ndarray], list[str]]:
    """Images and captions of training step ``step``: the B true captions, then one hard negative per
    scene (colour- or shape-swapped, see ``TrainConfig.colour_every``)."""
    counts = objects_at(step, cfg.steps, cfg.curriculum)
    images, true, negative = [], [], []
    for j in range(cfg.batch_size):
        index = step * cfg.batch_size + j
        s = scene_seed(index, seed=cfg.seed, split="train")
        scene = generate_scene(s, n_objects=counts, size=ARCH["image_size"])
        rng = np.random.default_rng([s, 7])
        images.append(scene.image)
        true.append(scene.caption)
        negative.append(swap_colours(scene, rng) if j % cfg.colour_every == 0 else swap_shapes(scene, rng))
    return images, true + negative


class Batches(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Training batches by step index, tokenised: ``(pixels (B, 3, H, W), ids (2B, S), mask (2B, S))``."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.tokenizer: Any = None

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.tokenizer is None:
            self.tokenizer = build_tokenizer()
        images, texts = make_batch(step, self.cfg)
        # padding to a multiple of 8 keeps the number of distinct tensor shapes small
        enc = self.tokenizer(texts, padding="longest", pad_to_multiple_of=8, return_tensors="pt")
        return pixels_of(images), enc["input_ids"], enc["attention_mask"]


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


TRAIN_WORDS = (
    "a , and there is picture of on grey background left right above below "
    + " ".join(SIZES) + " " + " ".join(COLOURS) + " " + " ".join(SHAPES)
)
"""Every word a training caption can contain (`dualex.datasets.shapes_generator` templates and attributes)."""


class CompactEmbedding(torch.nn.Module):
    """Token embedding over the few ids the training captions use (a training-time stand-in).

    Rows of ids that never occur get no gradient, so training them in a small table is the same as
    training the full 49,408-row table with AdamW (no weight decay on embeddings), only much cheaper.
    `write_back` copies the trained rows into the full table.

    Args:
        full: The model's ``nn.Embedding``.
        ids: Token ids the captions can contain.
    """

    ids: torch.Tensor  # buffers, registered in __init__
    lookup: torch.Tensor

    def __init__(self, full: torch.nn.Embedding, ids: Sequence[int]) -> None:
        super().__init__()
        ids_t = torch.as_tensor(sorted(set(ids)), dtype=torch.long)
        lookup = torch.full((full.num_embeddings,), -1, dtype=torch.long)
        lookup[ids_t] = torch.arange(len(ids_t))
        self.register_buffer("ids", ids_t)
        self.register_buffer("lookup", lookup)
        self.weight = torch.nn.Parameter(full.weight.detach()[ids_t].clone())

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Embeddings of ``input_ids`` (B, S) from the compact table, ``(B, S, width)``."""
        idx = self.lookup[input_ids]
        if bool((idx < 0).any()):
            raise ValueError("a training caption holds a token outside the compact vocabulary")
        return torch.nn.functional.embedding(idx, self.weight)

    def write_back(self, full: torch.nn.Embedding) -> None:
        """Copy the trained compact rows into ``full``'s rows of the same token ids."""
        with torch.no_grad():
            full.weight[self.ids] = self.weight.detach()


def _param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if p.ndim < 2 or "embedding" in name or "logit_scale" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(cfg: TrainConfig, *, log: Any = print) -> tuple[Any, dict[str, Any]]:
    """Train a shapes CLIP; returns the ``CLIPModel`` (eval mode) and a training summary."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    module = build_model(cfg.seed).train()
    tok = build_tokenizer()
    embeddings = module.text_model.embeddings
    full_table = embeddings.token_embedding
    compact = CompactEmbedding(full_table, tok(TRAIN_WORDS)["input_ids"])
    embeddings.token_embedding = compact
    opt = torch.optim.AdamW(_param_groups(module, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    B = cfg.batch_size
    labels = torch.arange(B)
    loader = torch.utils.data.DataLoader(
        Batches(cfg),
        batch_size=None,
        shuffle=False,
        num_workers=cfg.workers,
        prefetch_factor=4 if cfg.workers else None,
        worker_init_fn=_worker_init if cfg.workers else None,
    )
    t0 = time.time()
    running: list[float] = []
    acc: list[float] = []
    for step, (pixels, ids, mask) in enumerate(loader):
        for g in opt.param_groups:
            g["lr"] = learning_rate(step, cfg)
        e_img = module.get_image_features(pixel_values=pixels).pooler_output
        e_txt = module.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        e_img = torch.nn.functional.normalize(e_img, dim=-1)
        e_txt = torch.nn.functional.normalize(e_txt, dim=-1)
        scale = module.logit_scale.exp().clamp(max=100.0)
        logits_img = scale * e_img @ e_txt.T  # (B, 2B): own caption against all captions and all negatives
        logits_txt = scale * e_txt[:B] @ e_img.T  # (B, B)
        ce = torch.nn.functional.cross_entropy
        loss = 0.5 * (ce(logits_img, labels) + ce(logits_txt, labels))
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)  # = loss.backward(), which torch leaves unannotated
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            module.logit_scale.clamp_(0.0, math.log(100.0))
            s = logits_img.detach()
            hard = s[labels, labels] > s[labels, labels + B]
        running.append(float(loss.detach()))
        acc.append(float(hard.float().mean()))
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            k = cfg.log_every
            log(
                f"step {step + 1:5d}/{cfg.steps}  objects {objects_at(step, cfg.steps, cfg.curriculum)}  "
                f"loss {np.mean(running[-k:]):.4f}  hard-negative acc {np.mean(acc[-k:]):.3f}  "
                f"scale {float(scale.detach()):.1f}  lr {learning_rate(step, cfg):.2e}  {time.time() - t0:.0f} s"
            )
            sys.stdout.flush()
    compact.write_back(full_table)
    embeddings.token_embedding = full_table
    module.eval()
    return module, {
        "train_seconds": time.time() - t0,
        "final_loss": float(np.mean(running[-cfg.log_every :])),
        "final_hard_negative_acc": float(np.mean(acc[-cfg.log_every :])),
        "load_average": list(os.getloadavg()),  # other jobs on the machine slow training down
    }


def evaluate(directory: str | Path, cfg: TrainConfig, *, progress: bool | None = None) -> dict[str, float]:
    """Load ``hf:DIR`` through dualex and compute `dualex.training.shapes_eval.retrieval_metrics` on held-out
    scenes (seed ``cfg.seed``, split ``"heldout"``, 1–4 objects)."""
    from dualex.models import load
    from dualex.training.shapes_eval import retrieval_metrics

    model = load(f"hf:{directory}", device="cpu")
    scenes = list(ShapesDataset(cfg.eval_scenes, seed=cfg.seed, split="heldout"))
    return retrieval_metrics(model, scenes, pool=cfg.eval_pool, progress=progress)


def format_metrics(m: dict[str, float]) -> str:
    """The retrieval figures as a short text table."""
    lines = [
        f"held-out scenes: {int(m['n_scenes'])} (1-4 objects), retrieval among {int(m['pool'])} candidates",
        f"  image->text top-1   {m['i2t_top1']:.3f}",
        f"  text->image top-1   {m['t2i_top1']:.3f}",
        f"  true > colour-swap  {m['hard_colour']:.3f}",
        f"  true > shape-swap   {m['hard_shape']:.3f}",
        f"  true > both         {m['hard_both']:.3f}",
        "  by objects (colour / shape / both): "
        + "; ".join(
            f"n={n}: {m[f'hard_colour_n{n}']:.3f} / {m[f'hard_shape_n{n}']:.3f} / {m[f'hard_both_n{n}']:.3f}"
            for n in range(1, 5)
            if f"hard_colour_n{n}" in m
        ),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry of ``python -m dualex.training.shapes_train``; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m dualex.training.shapes_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="directory for the model files and metrics.json")
    for f, default in asdict(TrainConfig()).items():
        p.add_argument(f"--{f.replace('_', '-')}", type=type(default), default=default)
    p.add_argument("--eval-only", action="store_true", help="skip training; evaluate the model in --out")
    args = p.parse_args(argv)
    cfg = TrainConfig(**{f: getattr(args, f) for f in asdict(TrainConfig())})
    torch.set_num_threads(cfg.threads)
    summary: dict[str, Any] = {}
    if not args.eval_only:
        print(f"training the shapes CLIP: {json.dumps(asdict(cfg))}")
        print(f"architecture: {json.dumps(ARCH)}")
        module, summary = train(cfg)
        save_model(module, args.out)
        print(f"trained in {summary['train_seconds'] / 60:.1f} min; saved to {args.out}")
    metrics = evaluate(args.out, cfg)
    print(format_metrics(metrics))
    path = args.out / "metrics.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update(
        {
            "retrieval": metrics,
            **({"training": {**summary, "config": asdict(cfg), "arch": ARCH, "torch_threads": cfg.threads}}
               if summary else {}),
        }
    )
    path.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
    print(f"metrics written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
