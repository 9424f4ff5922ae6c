"""Adapters for Hugging Face transformers dual encoders: CLIP here, SigLIP/SigLIP-2 in `hf_siglip`.

Names: ``hf:<hub id or local dir>``. Loading never touches the network unless the name is a hub id
that is not cached and the environment allows downloads; otherwise the error says how to supply a
local copy. The adapter re-implements each tower's forward from its public submodules so that it can
split at any block: ``hidden`` runs embeddings + blocks ``< layer``; ``tail`` runs the rest.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar, cast

import torch
from torch import Tensor

from dualex.errors import InputError, ModelNotAvailableError
from dualex.models.base import DualEncoder, ImageInputs, Side, SideInputs, TextInputs
from dualex.models.preprocess import CLIP_MEAN, CLIP_STD, ImagePipeline, patch_keep_to_pixels
from dualex.models.registry import register_loader, register_wrapper
from dualex.models.tokenize import HFTokenizer, TokenizerLike

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

HF_FAMILIES: dict[str, type[HFDualEncoder]] = {}


_HF = TypeVar("_HF", bound="type[HFDualEncoder]")


def register_hf(*model_types: str) -> Callable[[_HF], _HF]:
    """Class decorator: the adapter class for these ``config.model_type`` values."""

    def deco(cls: _HF) -> _HF:
        for t in model_types:
            HF_FAMILIES[t] = cls
        return cls

    return deco


def offline_hint(spec: str) -> str:
    return (
        f"model {spec!r} is not available on this machine. dualex does not download at run time when "
        "offline: save the model once where a hub is reachable (model.save_pretrained(DIR) and "
        "processor.save_pretrained(DIR)), copy DIR here and load it as 'hf:DIR'"
    )


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' loading progress bars and config warnings for the duration of a load."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity(logging.ERROR)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # transformers leaves it unannotated
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]  # as above


def _from_pretrained(cls: Any, spec: str, **kw: Any) -> Any:
    local = Path(spec).expanduser()
    if local.exists():
        spec = str(local)
    elif spec.startswith((".", "/", "~")):
        raise ModelNotAvailableError(f"local model directory not found: {spec}")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        with quiet_transformers():
            return cls.from_pretrained(spec, local_files_only=offline or local.exists(), **kw)
    except (OSError, ValueError) as exc:
        if local.exists():
            raise ModelNotAvailableError(f"cannot load a transformers model from {spec}: {exc}") from None
        raise ModelNotAvailableError(offline_hint(spec)) from None


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "spiece.model",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
)


def load_tokenizer(spec: str, family: str) -> Any:
    """``AutoTokenizer`` for ``spec``, refusing a local directory that holds no tokenizer files.

    transformers 5 otherwise builds an empty-vocabulary tokenizer from ``config.json`` alone.
    """
    from transformers import AutoTokenizer

    local = Path(spec).expanduser()
    if local.is_dir() and not any((local / f).exists() for f in TOKENIZER_FILES):
        raise InputError(
            f"{spec} holds a {family} model but no tokenizer. Save one there "
            "(tokenizer.save_pretrained(DIR)), or build the model yourself and wrap it: "
            "module = transformers.AutoModel.from_pretrained(DIR); "
            "model = dualex.wrap(module, tokenizer=transformers.AutoTokenizer.from_pretrained(TOKENIZER_DIR))"
        )
    return _from_pretrained(AutoTokenizer, spec)


def additive_mask(mask: Tensor, *, causal: bool, dtype: torch.dtype) -> Tensor:
    """Attention mask ``(R, 1, S, S)`` (0 = attend, large negative = blocked) from ``mask`` ``(R, S)``."""
    R, S = mask.shape
    allowed = mask.bool()[:, None, None, :].expand(R, 1, S, S)
    if causal:
        tri = torch.ones(S, S, dtype=torch.bool, device=mask.device).tril()
        allowed = allowed & tri
    # A query row with nothing allowed would give NaN; let such rows (padding) attend to themselves.
    eye = torch.eye(S, dtype=torch.bool, device=mask.device)
    allowed = allowed | (eye & ~allowed.any(-1, keepdim=True))
    out = torch.zeros(allowed.shape, dtype=dtype, device=mask.device)
    return out.masked_fill(~allowed, torch.finfo(dtype).min)


def broadcast_rows(x: Tensor, R: int) -> Tensor:
    """``x`` with one row broadcast to R rows, or unchanged if it already has R rows."""
    if x.shape[0] == R:
        return x
    if x.shape[0] == 1:
        return x.expand(R, *x.shape[1:])
    raise InputError(f"cannot broadcast a batch of {x.shape[0]} inputs to {R} hidden-state rows")


class HFDualEncoder(DualEncoder):
    """Shared parts of transformers adapters: tokenising, preprocessing, masking, references."""

    family: ClassVar[str] = "hf"
    causal_text: ClassVar[bool] = True
    n_prefix: ClassVar[int] = 1

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        tokenizer: TokenizerLike | PreTrainedTokenizerBase | None,
        pipeline: ImagePipeline | None = None,
        name: str = "hf",
    ) -> None:
        if tokenizer is None:
            raise InputError(
                f"wrapping a {type(module).__name__} needs a tokenizer: pass tokenizer=AutoTokenizer... "
                "(or any callable returning dualex.models.tokenize.Tokenized)"
            )
        # The towers are walked by attribute: torch types each submodule as `Tensor | Module` and
        # transformers leaves the towers' submodules untyped,
        # so the wrapped module is Any here (`module` returns it as a Module).
        self._module: Any = module.eval()
        for p in self._module.parameters():
            p.requires_grad_(False)
        if not callable(tokenizer):
            raise InputError("tokenizer must be callable")
        if not hasattr(tokenizer, "tok") and hasattr(tokenizer, "convert_ids_to_tokens"):
            tokenizer = self.default_text_wrapper(tokenizer)
        self.tokenizer = tokenizer
        self.pipeline = pipeline or self.default_pipeline()
        self.name = name

    # ------------------------------------------------------------------ construction helpers
    def default_text_wrapper(self, tokenizer: Any) -> TokenizerLike:
        return HFTokenizer(tokenizer, padding="longest")

    def default_pipeline(self) -> ImagePipeline:
        size = int(self.vision_config.image_size)
        return ImagePipeline(size=size, crop=(size, size), mean=CLIP_MEAN, std=CLIP_STD)

    @classmethod
    def from_pretrained(cls, spec: str, *, device: torch.device, dtype: torch.dtype | None) -> Self:
        from transformers import AutoModel

        kw: dict[str, Any] = {"attn_implementation": "sdpa"}
        if dtype is not None:
            kw["dtype"] = dtype
        tok = load_tokenizer(spec, cls.family)
        module = _from_pretrained(AutoModel, spec, **kw)
        model = cls(module, tokenizer=tok, name=f"hf:{spec}")
        model.pipeline = pipeline_from_pretrained(spec, model.pipeline)
        return model.to(device)

    @property
    def module(self) -> torch.nn.Module:
        return cast(torch.nn.Module, self._module)

    @property
    def vision_config(self) -> Any:
        return self._module.config.vision_config

    @property
    def text_config(self) -> Any:
        return self._module.config.text_config

    @property
    def patch_size(self) -> int:
        return int(self.vision_config.patch_size)

    @property
    def logit_scale(self) -> float:
        return float(self._module.logit_scale.detach().exp())

    # ------------------------------------------------------------------ preparation
    def pool_index(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Position the text tower pools at, ``(B,)``."""
        raise NotImplementedError

    def prepare_text(self, texts: list[str]) -> TextInputs:
        t = self.tokenizer(texts)
        return TextInputs.from_tokenized(t, texts, self.pool_index(t.ids, t.mask))

    def prepare_image(self, images: list[Any]) -> ImageInputs:
        pixels, transforms, displays = self.pipeline(images)
        h, w = pixels.shape[-2:]
        grid = (h // self.patch_size, w // self.patch_size)
        return ImageInputs(
            pixels=pixels.to(self.dtype), grid=grid, n_prefix=self.n_prefix, transforms=transforms, display=displays
        )

    # ------------------------------------------------------------------ masking
    def mask(self, side: Side, inputs: SideInputs, keep: Tensor, *, how: str = "default") -> SideInputs:
        keep = keep.to(torch.bool)
        if keep.dim() == 1:
            keep = keep[None]
        K = keep.shape[0]
        if side == "image":
            assert isinstance(inputs, ImageInputs)
            if keep.shape[1] != inputs.n_patches:
                raise InputError(f"image coalitions need {inputs.n_patches} columns, got {keep.shape[1]}")
            one = inputs.select([0] * K)
            H, W = one.pixels.shape[-2:]
            pm = patch_keep_to_pixels(keep, inputs.grid, (H, W)).to(one.pixels)
            if how in ("default", "zeros", "mean"):
                fill = torch.zeros_like(one.pixels)
            elif how == "black":
                fill = self.pipeline.black().to(one.pixels).expand_as(one.pixels)
            else:
                raise InputError(f"unknown image masking {how!r}; use 'zeros' or 'black'")
            one.pixels = one.pixels * pm + fill * (1 - pm)
            return one
        assert isinstance(inputs, TextInputs)
        players = inputs.players(0)
        if keep.shape[1] != players.numel():
            raise InputError(f"text coalitions need {players.numel()} columns, got {keep.shape[1]}")
        out = inputs.select([0] * K)
        if how in ("default", "attention"):
            mask = out.mask.clone()
            mask[:, players.to(mask.device)] = keep.to(mask.device).long()
            out.mask = mask
        elif how == "pad":
            ids = out.ids.clone()
            pad = self.filler_id()
            ids[:, players.to(ids.device)] = torch.where(keep.to(ids.device), ids[:, players.to(ids.device)], pad)
            out.ids = ids
        else:
            raise InputError(f"unknown text masking {how!r}; use 'attention' or 'pad'")
        return out

    # ------------------------------------------------------------------ references
    def filler_id(self) -> int:
        return 0

    def reference(self, side: Side, inputs: SideInputs, kind: str = "default") -> SideInputs:
        if side == "image":
            assert isinstance(inputs, ImageInputs)
            ref = inputs.select(list(range(inputs.batch_size)))
            if kind in ("default", "zeros"):
                ref.pixels = torch.zeros_like(inputs.pixels)
            elif kind == "black":
                ref.pixels = self.pipeline.black().to(inputs.pixels).expand_as(inputs.pixels).clone()
            elif kind == "noise":
                g = torch.Generator().manual_seed(0)
                ref.pixels = torch.randn(inputs.pixels.shape, generator=g).to(inputs.pixels)
            else:
                raise InputError(f"unknown image reference {kind!r}; use 'zeros', 'black' or 'noise'")
            return ref
        assert isinstance(inputs, TextInputs)
        return self.text_reference(inputs, kind)

    def text_reference(self, inputs: TextInputs, kind: str) -> TextInputs:
        """BOS + fillers + EOS (+ padding), same sequence length as ``inputs``."""
        if kind not in ("default", "same_length"):
            raise InputError(f"unknown text reference {kind!r}; use 'default' or 'same_length'")
        ref = inputs.select(list(range(inputs.batch_size)))
        ids = torch.full_like(inputs.ids, self.pad_id())
        mask = torch.zeros_like(inputs.mask)
        S = ids.shape[1]
        eos_at = inputs.pool_index.clone() if kind == "same_length" else torch.full_like(inputs.pool_index, 2)
        if int(eos_at.max()) >= S:
            raise InputError("caption too short for the default text reference")
        for b in range(ids.shape[0]):
            e = int(eos_at[b])
            ids[b, 0] = self.bos_id()
            ids[b, 1:e] = self.filler_id()
            ids[b, e] = self.eos_id()
            mask[b, : e + 1] = 1
        ref.ids, ref.mask = ids, mask
        ref.pool_index = self.pool_index(ids, mask)
        ref.special = torch.ones_like(inputs.special)
        return ref

    def bos_id(self) -> int:
        return int(self.text_config.bos_token_id)

    def eos_id(self) -> int:
        return int(self.text_config.eos_token_id)

    def pad_id(self) -> int:
        pad = self.text_config.pad_token_id
        return int(pad) if pad is not None else 0


@register_hf("clip")
class HFClip(HFDualEncoder):
    """transformers ``CLIPModel``: CLS-pooled ViT image tower, causal text tower pooled at EOS."""

    family = "hf-clip"

    def filler_id(self) -> int:
        # exCLIP's reference filler: id 0 ("!" in CLIP BPE), as long as it is not a special id.
        return 0 if 0 not in (self.bos_id(), self.eos_id()) else self.pad_id()

    def pool_index(self, ids: Tensor, mask: Tensor) -> Tensor:
        eos = self.eos_id()
        if eos == 2:  # legacy configs: EOS is the largest id
            return ids.int().argmax(-1).long()
        hit = ids == eos
        if not bool(hit.any(-1).all()):
            raise InputError("a caption has no end-of-text token after tokenisation; check the tokenizer")
        return hit.int().argmax(-1).long()

    def n_layers(self, side: Side) -> int:
        tower = self._module.text_model if side == "text" else self._module.vision_model
        return len(tower.encoder.layers)

    def hidden(self, side: Side, inputs: SideInputs, layer: int) -> Tensor:
        layer = self.check_layer(side, layer)
        if side == "text":
            assert isinstance(inputs, TextInputs)
            tm = self._module.text_model
            h: Tensor = tm.embeddings(input_ids=inputs.ids)
            mask = additive_mask(inputs.mask, causal=True, dtype=h.dtype)
            for blk in tm.encoder.layers[:layer]:
                h = blk(h, mask)
            return h
        assert isinstance(inputs, ImageInputs)
        vm = self._module.vision_model
        h = vm.pre_layrnorm(vm.embeddings(inputs.pixels.to(self.dtype)))
        for blk in vm.encoder.layers[:layer]:
            h = blk(h, None)
        return h

    def tail(self, side: Side, inputs: SideInputs, hidden: Tensor, layer: int) -> Tensor:
        layer = self.check_layer(side, layer)
        R = hidden.shape[0]
        if side == "text":
            assert isinstance(inputs, TextInputs)
            tm = self._module.text_model
            mask = additive_mask(broadcast_rows(inputs.mask, R), causal=True, dtype=hidden.dtype)
            h = hidden
            for blk in tm.encoder.layers[layer:]:
                h = blk(h, mask)
            h = tm.final_layer_norm(h)
            idx = broadcast_rows(inputs.pool_index, R).to(h.device)
            pooled = h[torch.arange(R, device=h.device), idx]
            emb: Tensor = self._module.text_projection(pooled)
            return emb
        vm = self._module.vision_model
        h = hidden
        for blk in vm.encoder.layers[layer:]:
            h = blk(h, None)
        emb = self._module.visual_projection(vm.post_layernorm(h[:, 0]))
        return emb


def pipeline_from_pretrained(spec: str, fallback: ImagePipeline) -> ImagePipeline:
    """Read size/crop/mean/std from a saved ``preprocessor_config.json`` if there is one."""
    import json

    path = Path(spec) / "preprocessor_config.json"
    if not path.exists():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(spec, "preprocessor_config.json", local_files_only=True))
        except Exception:
            return fallback
    cfg = json.loads(path.read_text())
    mean = cfg.get("image_mean", fallback.mean)
    std = cfg.get("image_std", fallback.std)
    size = cfg.get("size", fallback.size)
    crop = cfg.get("crop_size", None)
    do_crop = cfg.get("do_center_crop", crop is not None)
    if isinstance(size, dict):
        size = size.get("shortest_edge") or (size.get("height"), size.get("width"))
    if do_crop and crop is not None:
        if isinstance(crop, dict):
            crop = (crop["height"], crop["width"])
        elif isinstance(crop, int):
            crop = (crop, crop)
        return ImagePipeline(size=size, crop=tuple(crop), mean=mean, std=std)
    hw = (size, size) if isinstance(size, int) else tuple(size)
    return ImagePipeline(size=hw, crop=hw, mean=mean, std=std, mode="resize")


@register_loader("hf")
def load_hf(spec: str, *, device: torch.device, dtype: torch.dtype | None = None) -> DualEncoder:
    """Load ``hf:<spec>``: a CLIP, SigLIP or SigLIP-2 model from a local directory or the HF cache."""
    from transformers import AutoConfig

    config = _from_pretrained(AutoConfig, spec)
    cls = HF_FAMILIES.get(config.model_type)
    if cls is None:
        raise ModelNotAvailableError(
            f"{spec!r} is a transformers '{config.model_type}' model; dualex's hf adapter supports "
            f"{', '.join(sorted(HF_FAMILIES))}"
        )
    return cls.from_pretrained(spec, device=device, dtype=dtype)


@register_wrapper
def wrap_hf(module: Any, **kw: Any) -> DualEncoder | None:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(module, PreTrainedModel):
        return None
    cls = HF_FAMILIES.get(getattr(module.config, "model_type", ""))
    if cls is None:
        return None
    name = kw.pop("name", f"hf:{type(module).__name__}")
    return cls(module, name=name, **kw)
