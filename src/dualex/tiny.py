"""Tiny random models of every family dualex supports, built offline and seeded (tests, the coverage run).

Each builder takes a real architecture's configuration and shrinks its widths, depths and image size,
keeping what makes the family what it is (pooling, heads, masks, tokenizer shape). Nothing is downloaded:
towers whose tokenizer or text model lives on a hub get a local stand-in (`dualex.testing`'s word and
SigLIP-shaped tokenizers; a tiny transformers config written to a temporary directory).
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import nn

TINY_VOCAB, TINY_EOS = 99, 98  # the tiny word tokenizers' vocabulary (`dualex.testing`): ids < 99, EOS 98
TINY_IMAGE = 32
"""Image side of the tiny transformer towers (patch 8: a 4 × 4 grid)."""
TINY_CNN_IMAGE = 64
"""Image side of the tiny convolutional and hierarchical towers (stride 32: a 2 × 2 final map)."""


# ---------------------------------------------------------------------------------------------- timm
def _tiny_timm_factory(timm_name: str) -> tuple[Callable[..., nn.Module], int]:
    """A builder of a tiny timm trunk shaped like ``timm_name`` and the image side it takes."""
    from timm.models import _registry, create_model

    module = _registry.model_entrypoint(timm_name.split(".")[0]).__module__.rsplit(".", 1)[-1]
    vit = {"img_size": TINY_IMAGE, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 4}

    def named(**extra: Any) -> Callable[..., nn.Module]:
        return lambda **kw: create_model(timm_name, **{**extra, **kw})

    if module == "convnext":
        return named(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)), TINY_CNN_IMAGE
    if module == "fastvit":
        return named(layers=(1, 1, 1, 1), embed_dims=(16, 32, 64, 64)), TINY_CNN_IMAGE
    if module == "swin_transformer":
        return named(
            img_size=TINY_CNN_IMAGE,
            patch_size=4,
            window_size=2,
            embed_dim=8,
            depths=(1, 1, 1, 1),
            num_heads=(1, 1, 2, 2),
        ), TINY_CNN_IMAGE
    if module in ("eva", "vision_transformer", "vision_transformer_relpos"):
        return named(**vit), TINY_IMAGE
    if module == "vitamin":
        from timm.models.vitamin import GeGluMlp, VitCfg, VitConvCfg, _create_vitamin

        cfg = VitCfg(
            embed_dim=(8, 16, 32),
            depths=(1, 1, 1),
            stem_width=8,
            conv_cfg=VitConvCfg(norm_layer="layernorm2d", norm_eps=1e-6),
            head_type="1d",
        )

        def vitamin(**kw: Any) -> nn.Module:
            args = {"embed_dim": 32, "depth": 2, "num_heads": 4, "mlp_layer": GeGluMlp, "mlp_ratio": 2.0}
            args.update(class_token=False, global_pool="avg", embed_cfg=cfg, img_size=TINY_CNN_IMAGE)
            built: nn.Module = _create_vitamin("vitamin_small_224", **{**args, **kw})  # type: ignore[no-untyped-call]
            return built

        return vitamin, TINY_CNN_IMAGE
    if module == "vision_transformer_hybrid":
        from timm.models.vision_transformer_hybrid import ConvStem, _create_vision_transformer_hybrid

        def hybrid(**kw: Any) -> nn.Module:
            stem = ConvStem(channels=(8, 8, 32), stride=(4, 2, 2), kernel_size=(4, 2, 2), padding=0, act_layer=nn.GELU)
            args = {"embed_dim": 32, "depth": 2, "num_heads": 4, "no_embed_class": True, "img_size": TINY_CNN_IMAGE}
            built: nn.Module = _create_vision_transformer_hybrid(  # type: ignore[no-untyped-call]
                "vit_base_mci_224", backbone=stem, embed_args={"proj": False}, **{**args, **kw}
            )
            return built

        return hybrid, TINY_CNN_IMAGE
    raise ValueError(f"no tiny configuration for timm model {timm_name} ({module})")


@contextlib.contextmanager
def _timm_builds(factory: Callable[..., nn.Module]) -> Iterator[None]:
    """Within the block, open_clip's ``TimmModel`` builds its trunk with ``factory`` (same keywords)."""
    with mock.patch("open_clip.timm_model.timm.create_model", lambda name, **kw: factory(**kw)):
        yield


# ---------------------------------------------------------------------------------------------- open_clip
def tiny_text_cfg(text_cfg: dict[str, Any], hf_dir: str | None = None, eos_id: int = TINY_EOS) -> dict[str, Any]:
    """An open_clip text config shrunk to width 32, one block, 16 positions and a 99-id vocabulary
    (``eos_id``: the end-of-text id of the tokenizer it will be used with, for ``eos``-pooled towers)."""
    cfg = copy.deepcopy(text_cfg)
    if cfg.get("hf_model_name"):
        assert hf_dir is not None
        cfg.update(hf_model_name=hf_dir, hf_tokenizer_name=hf_dir, hf_model_pretrained=False, context_length=16)
        return cfg
    cfg.update(context_length=16, vocab_size=TINY_VOCAB, width=32, heads=4, layers=1)
    if cfg.get("pool_type") == "eos" or cfg.get("eos_id") is not None:
        cfg["eos_id"] = eos_id
    cfg.pop("hf_tokenizer_name", None)
    cfg.pop("tokenizer_kwargs", None)
    return cfg


def tiny_vision_cfg(vision_cfg: dict[str, Any]) -> tuple[dict[str, Any], Callable[..., nn.Module] | None]:
    """An open_clip vision config shrunk, and the tiny timm builder its trunk needs (or None)."""
    cfg = copy.deepcopy(vision_cfg)
    if cfg.get("timm_model_name"):
        factory, size = _tiny_timm_factory(cfg["timm_model_name"])
        cfg.update(image_size=size, timm_model_pretrained=False)
        return cfg, factory
    if isinstance(cfg.get("layers"), (list, tuple)):  # ModifiedResNet
        cfg.update(layers=(1, 1, 1, 1), width=8, head_width=8, image_size=TINY_CNN_IMAGE)
        return cfg, None
    cfg.update(image_size=TINY_IMAGE, patch_size=8, width=32, head_width=8, layers=2)
    if cfg.get("attentional_pool"):
        cfg.update(attn_pooler_heads=4, attn_pooler_queries=4)
    return cfg, None


def tiny_hf_text_dir(hf_model_name: str, directory: str | Path, tokenizer: Any = None) -> str:
    """A tiny transformers config shaped like ``hf_model_name`` (and ``tokenizer``, if given) saved to ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tiny_hf_encoder_config(hf_model_name).save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return str(out)


def tiny_hf_encoder_config(name: str) -> Any:
    """A tiny transformers text-encoder config of the model type ``name`` stands for (no download)."""
    import transformers

    n = name.lower()
    small: dict[str, Any] = {
        "vocab_size": TINY_VOCAB,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
    }
    small.update(intermediate_size=37, max_position_embeddings=40, pad_token_id=0)
    if "xlm-roberta" in n:
        return transformers.XLMRobertaConfig(**small)
    if "roberta" in n:
        return transformers.RobertaConfig(**small)
    if "mt5" in n or "t5" in n:
        return transformers.MT5Config(
            vocab_size=TINY_VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4, pad_token_id=0
        )
    if "nllb" in n or "m2m" in n:
        return transformers.M2M100Config(
            vocab_size=TINY_VOCAB, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=40,
            pad_token_id=0,
        )  # fmt: skip
    return transformers.BertConfig(**small)


def tiny_openclip_arch(
    arch: str, seed: int = 0, *, workdir: str | Path | None = None, tokenizer: Any = None
) -> nn.Module:
    """open_clip's ``arch`` shrunk: its own model class, heads and pooling at tiny widths, random weights.

    Args:
        arch: An open_clip architecture name (``"RN50"``, ``"convnext_base"``, ``"coca_ViT-B-32"``, ...).
        seed: Seed of the random initialisation.
        workdir: Where a tiny Hugging Face text model's config is written (HF text towers); a temporary
            directory by default.
        tokenizer: The transformers tokenizer the model will be used with: saved next to that config (HF
            text towers), and its end-of-text id used by ``eos``-pooled text towers.
    """
    import open_clip
    from open_clip.coca_model import CoCa
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ValueError(f"open_clip has no architecture {arch!r}")
    hf_dir = None
    if cfg["text_cfg"].get("hf_model_name"):
        base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="dualex-tiny-"))
        hf_dir = tiny_hf_text_dir(cfg["text_cfg"]["hf_model_name"], base / "text", tokenizer)
    eos = getattr(tokenizer, "eos_token_id", None)
    text_cfg = tiny_text_cfg(cfg["text_cfg"], hf_dir, TINY_EOS if eos is None else int(eos))
    vision_cfg, factory = tiny_vision_cfg(cfg["vision_cfg"])
    # towers without a projection (timm_proj "none": SigLIP's) embed at their own width, 32
    embed_dim = 32 if str(vision_cfg.get("timm_proj")).lower() == "none" else 16
    kw: dict[str, Any] = {"embed_dim": embed_dim, "vision_cfg": vision_cfg, "text_cfg": text_cfg}
    if cfg.get("quick_gelu"):
        kw["quick_gelu"] = True
    if cfg.get("init_logit_bias") is not None:
        kw["init_logit_bias"] = cfg["init_logit_bias"]
    torch.manual_seed(seed)
    with _timm_builds(factory) if factory is not None else contextlib.nullcontext():
        module: nn.Module
        if "multimodal_cfg" in cfg:
            mm = tiny_text_cfg(cfg["multimodal_cfg"])
            module = CoCa(multimodal_cfg=mm, **kw)
        elif cfg.get("custom_text") or hf_dir is not None:
            module = CustomTextCLIP(**kw)
        else:
            module = CLIP(**kw)
    return jitter(module, seed).eval()


def jitter(module: nn.Module, seed: int, scale: float = 0.02) -> nn.Module:
    """Add seeded noise ``scale · N(0, 1)`` to every parameter (in place; returns ``module``).

    Libraries initialise biases and layer scales to 0 (or 1e-6): at random init a constant image then
    embeds to exactly 0 (ConvNeXt) and whole blocks are the identity, which no trained model is. The noise
    makes every part of a tiny model matter.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module
