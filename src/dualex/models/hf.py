"""Adapters for Hugging Face transformers dual encoders: CLIP here, SigLIP/SigLIP-2 in `hf_siglip`.

Names: ``hf:<hub id or local dir>``. Loading never touches the network unless the name is a hub id
that is not cached and the environment allows downloads; otherwise the error says how to supply a
local copy. The adapter re-implements each tower's forward from its public submodules so that it can
split at any block: ``hidden`` runs embeddings + blocks ``< layer``; ``tail`` runs the rest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar, cast

import torch
from torch import Tensor, nn

from dualex.errors import InputError, ModelNotAvailableError
from dualex.models.attention import AttentionBlock, AttentionSite, Recording, additive_from, mha_site, split_heads
from dualex.models.base import DualEncoder, ImageInputs, PooledBlock, SideInputs, TextInputs, pooled_mask
from dualex.models.parts import (
    bos_filler_eos_reference,
    image_reference,
    mask_image_patches,
    mask_text_players,
    patch_tokens,
)
from dualex.models.preprocess import CLIP_MEAN, CLIP_STD, ImagePipeline
from dualex.models.registry import register_loader, register_wrapper
from dualex.models.tokenize import HFTokenizer, TokenizerLike
from dualex.models.tower import Tower

HF_FAMILIES: dict[str, type[HFDualEncoder]] = {}


_HF = TypeVar("_HF", bound="type[HFDualEncoder]")


def register_hf(*model_types: str) -> Callable[[_HF], _HF]:
    """Class decorator: the adapter class for these ``config.model_type`` values."""

    def deco(cls: _HF) -> _HF:
        for t in model_types:
            HF_FAMILIES[t] = cls
        return cls

    return deco


#: Seconds the hub gets to answer before a load by hub id gives up (no retries).
HUB_TIMEOUT = 5.0


def offline_hint(spec: str) -> str:
    """Builds the one-line error text for a transformers model that is not on this machine.

    Args:
        spec: The model spec as the user wrote it (hub id or directory).

    Returns:
        A message saying how to save the model where a hub is reachable and load it as 'hf:DIR'.
    """
    return (
        f"model {spec!r} is not available on this machine. dualex does not download at run time when "
        "offline: save the model once where a hub is reachable (model.save_pretrained(DIR) and "
        "processor.save_pretrained(DIR)), copy DIR here and load it as 'hf:DIR'"
    )


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' and huggingface_hub's progress bars, config warnings and retry messages."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hub_level = hub_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity(logging.ERROR)
    hub_logging.set_verbosity(logging.ERROR)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # transformers leaves it unannotated
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hub_logging.set_verbosity(hub_level)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]  # as above


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) forbids network access."""
    return any(
        os.environ.get(v, "0").strip() not in ("0", "", "false", "False", "no")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@contextlib.contextmanager
def hub_offline_now() -> Iterator[None]:
    """Forbid huggingface_hub any network access for the duration of the block (cache reads only).

    For third-party code that loads from the hub on its own (open_clip's tokenizers), which would
    otherwise wait and retry on an unreachable hub.
    """
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def probe_hub(repo_id: str, timeout: float = HUB_TIMEOUT) -> str | None:
    """Ask the hub about ``repo_id`` once, giving up after about ``timeout`` seconds.

    Returns None if the hub answered that the model exists, else why not (no answer in time, no
    connection, name lookup failed, HTTP status). Runs in a daemon thread, so that a name lookup or a
    server that accepts connections but never answers cannot hold the caller longer than ``timeout``.
    """
    import threading
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    url = f"{constants.ENDPOINT}/api/models/{repo_id}"
    result: list[str | None] = []

    def ask() -> None:
        try:
            req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "dualex"})
            with urllib.request.urlopen(req, timeout=timeout):
                result.append(None)
        except urllib.error.HTTPError as exc:
            what = "no such model on the hub" if exc.code == 404 else "the hub refused access"
            result.append(f"{what} (HTTP {exc.code} from {constants.ENDPOINT})")
        except Exception as exc:
            reason = getattr(exc, "reason", exc)
            result.append(f"the hub at {constants.ENDPOINT} cannot be reached ({reason})")

    t = threading.Thread(target=ask, name="dualex-hub-probe", daemon=True)
    t.start()
    t.join(timeout + 1.0)
    if not result:
        return f"the hub at {constants.ENDPOINT} did not answer within {timeout:.0f} s"
    return result[0]


def _from_pretrained(cls: Any, spec: str, **kw: Any) -> Any:
    """``cls.from_pretrained`` for a local directory or a hub id, never hanging on the network.

    A hub id is looked up in the local cache first; only if it is not there, and the environment
    allows downloads, is the hub asked once (`probe_hub`, a few seconds at most, no retries) before
    downloading. Every failure is a `ModelNotAvailableError` that says how to load a local directory.
    """
    local = Path(spec).expanduser()
    if local.exists():
        try:
            with quiet_transformers():
                return cls.from_pretrained(str(local), local_files_only=True, **kw)
        except (OSError, ValueError) as exc:
            raise ModelNotAvailableError(f"cannot load a transformers model from {local}: {exc}") from None
    if spec.startswith((".", "/", "~")):
        raise ModelNotAvailableError(f"local model directory not found: {spec}")
    try:
        with quiet_transformers():
            return cls.from_pretrained(spec, local_files_only=True, **kw)
    except (OSError, ValueError):
        pass  # not in the local cache
    if hub_offline():
        raise ModelNotAvailableError(offline_hint(spec)) from None
    reason = probe_hub(spec)
    if reason is not None:
        raise ModelNotAvailableError(
            f"model {spec!r} is not in the local cache and {reason}. Save it once where the hub is reachable "
            "(model.save_pretrained(DIR), processor.save_pretrained(DIR)), copy DIR here and load it as 'hf:DIR'"
        ) from None
    try:
        with quiet_transformers():
            return cls.from_pretrained(spec, **kw)
    except (OSError, ValueError) as exc:
        raise ModelNotAvailableError(f"{offline_hint(spec)} (download failed: {exc})") from None


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


def encoder_layer_pooled(
    layer: Any, index: Tensor, mask: Tensor | None, head: Callable[[Tensor], Tensor]
) -> PooledBlock:
    """A transformers CLIP/SigLIP encoder layer (pre-norm, q/k/v/out projections, MLP) + ``head`` as a `PooledBlock`.

    Args:
        layer: A ``CLIPEncoderLayer`` or ``SiglipEncoderLayer`` (``layer_norm1``, ``self_attn`` with
            ``q_proj``/``k_proj``/``v_proj``/``out_proj``/``scale``, ``layer_norm2``, ``mlp``).
        index: ``(R,)`` pooled row of each hidden-state row.
        mask: The layer's additive attention mask ``(R|1, 1, T, T)`` or None.
        head: The tower after the block, on the pooled row: ``(R, W) -> (R, D)``.
    """
    attn: Any = layer.self_attn
    n_heads, d = int(attn.num_heads), int(attn.head_dim)

    def keys_values(h: Tensor) -> tuple[Tensor, Tensor]:
        x = layer.layer_norm1(h)
        shape = (*x.shape[:-1], n_heads, d)
        k = attn.k_proj(x).reshape(shape).transpose(-2, -3)
        v = attn.v_proj(x).reshape(shape).transpose(-2, -3)
        return k, v

    def query(hp: Tensor) -> Tensor:
        q: Tensor = attn.q_proj(layer.layer_norm1(hp)) * attn.scale
        return q.reshape(*q.shape[:-1], n_heads, d)

    def finish(hp: Tensor, a: Tensor) -> Tensor:
        y = hp + attn.out_proj(a.flatten(-2))
        return head(y + layer.mlp(layer.layer_norm2(y)))

    return PooledBlock(keys_values, query, finish, index, pooled_mask(mask, index))


class HFDualEncoder(DualEncoder):
    """Shared parts of transformers adapters: tokenising, preprocessing, masking, references."""

    family: ClassVar[str] = "hf"
    causal_text: ClassVar[bool] = True
    n_prefix: ClassVar[int] = 1
    text_tower_type: ClassVar[type[HFTextTower]]
    image_tower_type: ClassVar[type[HFImageTower]]

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        tokenizer: TokenizerLike | None = None,
        pipeline: ImagePipeline | None = None,
        name: str = "hf",
    ) -> None:
        if tokenizer is None:
            raise InputError(
                f"wrapping a {type(module).__name__} needs its tokenizer: dualex.wrap(module, "
                "tokenizer=transformers.AutoTokenizer.from_pretrained(ID_OR_DIR)), a dualex.models.tokenize "
                "tokenizer, or any callable texts -> dualex.models.tokenize.Tokenized"
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
        self.set_towers(self.text_tower_type(self), self.image_tower_type(self))

    # ------------------------------------------------------------------ construction helpers
    def default_text_wrapper(self, tokenizer: Any) -> TokenizerLike:
        """Wraps a transformers tokenizer so it pads each batch to its longest caption."""
        return HFTokenizer(tokenizer, padding="longest")

    def default_pipeline(self) -> ImagePipeline:
        """Returns the CLIP image pipeline (resize, centre crop, CLIP mean/std) at the config's image size."""
        size = int(self.vision_config.image_size)
        return ImagePipeline(size=size, crop=(size, size), mean=CLIP_MEAN, std=CLIP_STD)

    @classmethod
    def from_pretrained(cls, spec: str, *, device: torch.device, dtype: torch.dtype | None) -> Self:
        """Loads a transformers dual encoder, its tokenizer and its preprocessor settings.

        Args:
            spec: A hub id or a local directory saved with save_pretrained.
            device: Where the weights go.
            dtype: Weight dtype, or None for the checkpoint's own.

        Returns:
            The wrapped model on `device`, named 'hf:SPEC'.
        """
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
        """The wrapped transformers model."""
        return cast(torch.nn.Module, self._module)

    @property
    def vision_config(self) -> Any:
        """The transformers config of the vision tower."""
        return self._module.config.vision_config

    @property
    def text_config(self) -> Any:
        """The transformers config of the text tower."""
        return self._module.config.text_config

    @property
    def patch_size(self) -> int:
        """Side of one square image patch, in pixels."""
        return int(self.vision_config.patch_size)

    @property
    def logit_scale(self) -> float:
        """The learnt temperature exp(logit_scale) that multiplies cosine similarities."""
        return float(self._module.logit_scale.detach().exp())

    # ------------------------------------------------------------------ preparation
    def pool_index(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Position the text tower pools at, ``(B,)``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ references
    def filler_id(self) -> int:
        """Token id that fills masked caption positions (0 unless a family overrides it)."""
        return 0

    def text_reference(self, inputs: TextInputs, kind: str) -> TextInputs:
        """BOS + fillers + EOS (+ padding), same sequence length as ``inputs``.

        ``"same_length"`` puts EOS where the caption has its end-of-text token
        (`dualex.models.parts.end_positions`).
        """
        return bos_filler_eos_reference(
            inputs,
            kind,
            bos_id=self.bos_id(),
            eos_id=self.eos_id(),
            filler_id=self.filler_id(),
            pad_id=self.pad_id(),
            pool_index=self.pool_index,
        )

    def bos_id(self) -> int:
        """The text config's begin-of-text token id."""
        return int(self.text_config.bos_token_id)

    def eos_id(self) -> int:
        """The text config's end-of-text token id."""
        return int(self.text_config.eos_token_id)

    def pad_id(self) -> int:
        """The text config's padding token id (0 when the config has none)."""
        pad = self.text_config.pad_token_id
        return int(pad) if pad is not None else 0

    # ------------------------------------------------------------------ saving
    def check_saveable(self, *, arch: str | None = None) -> None:
        """Raises InputError unless the model can be saved in a form `dualex.load` reads back.

        Args:
            arch: Unused here; the open_clip adapter needs it.

        Raises:
            InputError: The tokenizer is not a transformers tokenizer with save_pretrained.
        """
        tok = getattr(self.tokenizer, "tok", None)
        if not hasattr(tok, "save_pretrained"):
            raise InputError(
                f"{self.name} has no transformers tokenizer, so it cannot be saved in a form dualex.load "
                "reads; load the model as 'hf:DIR' with its tokenizer files"
            )

    def save_pretrained(self, directory: str | Path, *, arch: str | None = None) -> str:
        """``save_pretrained`` of the module and tokenizer plus a ``preprocessor_config.json``; ``hf:DIR``."""
        self.check_saveable()
        out = Path(directory).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        self._module.save_pretrained(out)
        tok = getattr(self.tokenizer, "tok", None)
        assert tok is not None  # check_saveable found its save_pretrained
        tok.save_pretrained(out)
        write_preprocessor_config(out, self.preprocessor_config())
        return f"hf:{out}"

    def preprocessor_config(self) -> dict[str, Any]:
        """A ``preprocessor_config.json`` that reproduces the adapter's image pipeline."""
        return pipeline_config(self.pipeline, "CLIPImageProcessor")


class HFTower(Tower):
    """Shared parts of the transformers towers: the encoder layers, attention recording and blocks.

    Layers are the tower's transformer blocks (``encoder.layers``); the default split of methods that
    take a layer is theirs (ij: the last block's input, ``layer=-1``).
    """

    owner: HFDualEncoder
    submodule: ClassVar[str]
    """Attribute of the wrapped model holding the tower (``"text_model"``, ``"vision_model"``)."""

    @property
    def model(self) -> Any:
        """The transformers tower (untyped submodules: ``embeddings``, ``encoder.layers``, norms, head)."""
        return getattr(self.owner._module, self.submodule)

    @property
    def n_layers(self) -> int:
        """Number of transformer layers in this tower's encoder."""
        return len(self.model.encoder.layers)

    def _pool_attention(self) -> nn.MultiheadAttention | None:
        """The tower's attention-pooling ``nn.MultiheadAttention`` (SigLIP's image head), else None."""
        attn = getattr(getattr(self.model, "head", None), "attention", None)
        return attn if isinstance(attn, nn.MultiheadAttention) else None

    def attention_hooks(self, inputs: SideInputs, rec: Recording) -> list[Any]:
        """Registers forward hooks that record every layer's self-attention (and the pooling head's, if any).

        Args:
            inputs: This tower's inputs (unused; the hooks see the forward pass).
            rec: The recording the hooks append attention maps to.

        Returns:
            The hook handles; remove them to stop recording.
        """
        handles = [
            layer.self_attn.register_forward_hook(_self_attention_hook(rec), with_kwargs=True)
            for layer in self.model.encoder.layers
        ]
        pool = self._pool_attention()
        if pool is not None:
            handles.append(pool.register_forward_hook(_pool_hook(rec), with_kwargs=True))
        return handles

    def attention_blocks(self) -> list[AttentionBlock]:
        """One HFBlock view per encoder layer, in order."""
        return [HFBlock(layer) for layer in self.model.encoder.layers]


class HFTextTower(HFTower):
    """A transformers text tower: tokenising, masking (`dualex.models.parts`), references, pooled position."""

    modality = "text"
    submodule = "text_model"
    path_reference = "default"
    aligned_reference = "same_length"

    def prepare(self, raw: list[Any]) -> TextInputs:
        """Tokenises captions with the owner's tokenizer.

        Args:
            raw: Caption strings.

        Returns:
            TextInputs with (B, T) ids and mask and the (B,) pooled position of each caption.
        """
        texts = list(raw)
        t = self.owner.tokenizer(texts)
        return TextInputs.from_tokenized(t, texts, self.owner.pool_index(t.ids, t.mask))

    def mask(self, inputs: SideInputs, keep: Tensor, *, how: str = "default") -> SideInputs:
        """Apply K coalitions ``keep`` ``(K, n_players)`` to row 0 (`dualex.models.parts.mask_text_players`).

        ``how``: ``"default"``/``"attention"`` (attention mask multiplied by ``keep``: a token that is
        already removed stays removed) or ``"pad"`` (removed ids become the owner's ``filler_id``).
        """
        return mask_text_players(self.check(inputs), keep, how, self.owner.filler_id())

    def reference(self, inputs: SideInputs, kind: str = "default") -> SideInputs:
        """Builds the caption reference of `kind` (see DualEncoder.text_reference)."""
        return self.owner.text_reference(self.check(inputs), kind)

    def check(self, inputs: SideInputs) -> TextInputs:
        """Returns `inputs` as TextInputs, or raises InputError for any other side's inputs."""
        if not isinstance(inputs, TextInputs):
            raise InputError(f"{self.label} takes TextInputs, got {type(inputs).__name__}")
        return inputs

    def pooled_position(self, inputs: SideInputs, row: int = 0) -> int:
        """Token position whose final hidden state becomes caption `row`'s embedding."""
        return int(self.check(inputs).pool_index[row])


class HFImageTower(HFTower):
    """A transformers ViT image tower: preprocessing, patch masking and references (`dualex.models.parts`)."""

    modality = "image"
    submodule = "vision_model"
    path_reference = "zeros"
    aligned_reference = "zeros"

    def prepare(self, raw: list[Any]) -> ImageInputs:
        """Runs the owner's image pipeline on raw images.

        Args:
            raw: Images (PIL, arrays or paths, as the pipeline takes them).

        Returns:
            ImageInputs with (B, 3, H, W) pixels in the model dtype and a patch grid of
            (H // patch_size, W // patch_size).
        """
        owner = self.owner
        pixels, transforms, displays = owner.pipeline(list(raw))
        h, w = pixels.shape[-2:]
        grid = (h // owner.patch_size, w // owner.patch_size)
        return ImageInputs(
            pixels=pixels.to(owner.dtype), grid=grid, n_prefix=owner.n_prefix, transforms=transforms, display=displays
        )

    def mask(self, inputs: SideInputs, keep: Tensor, *, how: str = "default") -> SideInputs:
        """Apply K coalitions ``keep`` ``(K, n_patches)`` to row 0: ``how`` ``"default"``/``"zeros"`` (patch
        set to 0 in normalised space) or ``"black"`` (`dualex.models.parts.mask_image_patches`)."""
        return mask_image_patches(self.check(inputs), keep, how, self.owner.pipeline.black())

    def reference(self, inputs: SideInputs, kind: str = "default") -> SideInputs:
        """Builds the image reference of `kind` ('zeros', 'black', ...; see image_reference)."""
        return image_reference(self.check(inputs), kind, self.owner.pipeline.black())

    def check(self, inputs: SideInputs) -> ImageInputs:
        """Returns `inputs` as ImageInputs, or raises InputError for any other side's inputs."""
        if not isinstance(inputs, ImageInputs):
            raise InputError(f"{self.label} takes ImageInputs, got {type(inputs).__name__}")
        return inputs

    def pooled_position(self, inputs: SideInputs, row: int = 0) -> int:
        """The CLS token (position 0) is pooled for every image."""
        return 0  # CLS


class HFBlock(AttentionBlock):
    """A transformers CLIP/SigLIP encoder layer (``layer_norm1``, ``self_attn``, ``layer_norm2``, ``mlp``)."""

    def __init__(self, layer: nn.Module) -> None:
        # transformers leaves the layer's submodules untyped (torch types them as Tensor | Module).
        attn: Any = layer.self_attn
        self.layer: Any = layer
        self.attn: Any = attn
        self.n_heads = int(attn.num_heads)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Layer-norms x and projects it to per-head queries, keys and values.

        Args:
            x: (R, T, W) hidden states at the block's input.

        Returns:
            Three (R, H, T, W / H) tensors: queries, keys, values.
        """
        y = self.layer.layer_norm1(x)
        a = self.attn
        return (
            split_heads(a.q_proj(y), self.n_heads),
            split_heads(a.k_proj(y), self.n_heads),
            split_heads(a.v_proj(y), self.n_heads),
        )

    def logits(self, q: Tensor, k: Tensor) -> Tensor:
        """Scaled attention logits q k^T * scale, (R, H, T, T)."""
        return torch.matmul(q, k.transpose(-1, -2)) * float(self.attn.scale)

    def attention_branch(self, o: Tensor) -> Tensor:
        """Merges heads and applies the output projection: (R, H, T, d) -> (R, T, H * d)."""
        R, H, T, d = o.shape
        out: Tensor = self.attn.out_proj(o.transpose(1, 2).reshape(R, T, H * d))
        return out

    def mlp_branch(self, x: Tensor) -> Tensor:
        """The block's MLP branch on layer-normed x; (R, T, W) -> (R, T, W), residual not added."""
        out: Tensor = self.layer.mlp(self.layer.layer_norm2(x))
        return out


def _self_attention_hook(rec: Recording) -> Any:
    """Forward hook of a transformers ``*Attention`` module: records its call as an `AttentionSite`."""

    # `module` is a transformers CLIPAttention/SiglipAttention, whose attributes are untyped.
    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        x: Tensor = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        out = output[0] if isinstance(output, tuple) else output
        R = x.shape[0]
        rec.blocks.append(
            AttentionSite(
                x_query=x.detach(),
                x_key=x.detach(),
                mask=additive_from(mask.detach() if mask is not None else None, R, module.num_heads),
                output=out,
                weights=(
                    module.q_proj.weight,
                    module.q_proj.bias,
                    module.k_proj.weight,
                    module.k_proj.bias,
                    module.v_proj.weight,
                    module.v_proj.bias,
                ),
                out_weight=module.out_proj.weight,
                n_heads=int(module.num_heads),
                scale=float(module.scale),
            )
        )

    return hook


def _pool_hook(rec: Recording) -> Any:
    """Forward hook of an attention-pooling ``nn.MultiheadAttention`` (probe queries, token keys)."""

    def hook(module: nn.MultiheadAttention, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        q, k = args[0], args[1]
        mask = kwargs.get("attn_mask", args[5] if len(args) > 5 else None)
        rec.pool = mha_site(module, q, k, mask, output[0])

    return hook


def pipeline_config(pipe: ImagePipeline, processor: str, **extra: Any) -> dict[str, Any]:
    """A ``preprocessor_config.json`` dict that reproduces ``pipe`` (read back by `read_preprocessor_config`).

    Args:
        pipe: The adapter's image pipeline.
        processor: ``image_processor_type`` written for a plain-resize pipeline (crop pipelines are
            always ``CLIPImageProcessor``).
        **extra: Further entries (e.g. SigLIP-2's ``max_num_patches``).
    """
    common = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_resize": True,
        "image_mean": list(pipe.mean),
        "image_std": list(pipe.std),
        "resample": int(pipe.resample),
        **extra,
    }
    if pipe.mode == "resize":
        h, w = (pipe.size, pipe.size) if isinstance(pipe.size, int) else pipe.size
        return {
            **common,
            "image_processor_type": processor,
            "do_center_crop": False,
            "size": {"height": int(h), "width": int(w)},
        }
    short = pipe.size if isinstance(pipe.size, int) else min(pipe.size)
    return {
        **common,
        "image_processor_type": "CLIPImageProcessor",
        "do_center_crop": True,
        "size": {"shortest_edge": int(short)},
        "crop_size": {"height": int(pipe.crop[0]), "width": int(pipe.crop[1])},
    }


PREPROCESSOR_FILE = "preprocessor_config.json"


def write_preprocessor_config(directory: Path, config: dict[str, Any]) -> None:
    """Writes `config` as the preprocessor JSON file in `directory`."""
    (directory / PREPROCESSOR_FILE).write_text(json.dumps(config, indent=2))


def read_preprocessor_config(spec: str) -> dict[str, Any] | None:
    """The saved ``preprocessor_config.json`` of a local directory or a cached hub model, if any."""
    path = Path(spec).expanduser() / PREPROCESSOR_FILE
    if not path.exists():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(spec, PREPROCESSOR_FILE, local_files_only=True))
        except Exception:
            return None
    try:
        config: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return config


class HFClipText(HFTextTower):
    """CLIP's causal text tower, pooled at the first end-of-text token, then ``text_projection``."""

    owner: HFClip

    def _mask(self, inputs: TextInputs, rows: int, dtype: torch.dtype) -> Tensor:
        return additive_mask(broadcast_rows(inputs.mask, rows), causal=True, dtype=dtype)

    def attention_mask(self, inputs: SideInputs, rows: int, dtype: torch.dtype) -> Tensor | None:
        """Causal additive mask (rows, 1, T, T) in `dtype`, keys where `mask` is 0 blocked."""
        return self._mask(self.check(inputs), rows, dtype)

    def _head(self, h: Tensor) -> Tensor:
        out: Tensor = self.owner._module.text_projection(self.model.final_layer_norm(h))
        return out

    def project_tokens(self, inputs: SideInputs, hidden: Tensor) -> Tensor:
        """Final layer norm and text projection applied to every token: (R, T, W) -> (R, T, D)."""
        return self._head(hidden)

    def hidden(self, inputs: SideInputs, layer: int) -> Tensor:
        """Runs the CLIP text tower up to block `layer`.

        Args:
            inputs: TextInputs with (B, T) ids.
            layer: Block index (0 = token + position embeddings).

        Returns:
            (B, T, W) hidden states at the input of block `layer`.
        """
        layer = self.check_layer(layer)
        t = self.check(inputs)
        tm = self.model
        h: Tensor = tm.embeddings(input_ids=t.ids)
        mask = additive_mask(t.mask, causal=True, dtype=h.dtype)
        for blk in tm.encoder.layers[:layer]:
            h = blk(h, mask)
        return h

    def pooled_block(self, inputs: SideInputs, rows: int, dtype: torch.dtype) -> PooledBlock | None:
        """The last block at the EOS position of each row."""
        t = self.check(inputs)
        idx = broadcast_rows(t.pool_index, rows)
        return encoder_layer_pooled(self.model.encoder.layers[-1], idx, self._mask(t, rows, dtype), self._head)

    def tail(self, inputs: SideInputs, hidden: Tensor, layer: int) -> Tensor:
        """Runs the CLIP text tower from block `layer` to the projected embedding.

        Args:
            inputs: The TextInputs `hidden` came from (one row broadcasts).
            hidden: (R, T, W) hidden states at the input of block `layer`.
            layer: Block index.

        Returns:
            (R, D) unnormalised text embeddings, pooled at each caption's EOS token.
        """
        layer = self.check_layer(layer)
        t = self.check(inputs)
        R = hidden.shape[0]
        pooled = self.use_pooled_block(t, hidden, layer)
        layers = self.model.encoder.layers
        mask = self._mask(t, R, hidden.dtype)
        h = hidden
        for blk in layers[layer:-1] if pooled is not None else layers[layer:]:
            h = blk(h, mask)
        if pooled is not None:
            return pooled(h)
        idx = broadcast_rows(t.pool_index, R).to(h.device)
        return self._head(h[torch.arange(R, device=h.device), idx])


class HFClipImage(HFImageTower):
    """CLIP's ViT: CLS + patches, ``pre_layrnorm``, blocks, ``post_layernorm`` on CLS, ``visual_projection``."""

    owner: HFClip

    def attention_mask(self, inputs: SideInputs, rows: int, dtype: torch.dtype) -> Tensor | None:
        """The CLIP vision tower attends everywhere: no mask."""
        return None

    def _head(self, h: Tensor) -> Tensor:
        out: Tensor = self.owner._module.visual_projection(self.model.post_layernorm(h))
        return out

    def project_tokens(self, inputs: SideInputs, hidden: Tensor) -> Tensor:
        """Post layer norm and visual projection applied to every token: (R, T, W) -> (R, T, D)."""
        return self._head(hidden)

    def hidden(self, inputs: SideInputs, layer: int) -> Tensor:
        """Runs the CLIP vision tower up to block `layer`.

        Args:
            inputs: ImageInputs with (B, 3, H, W) pixels.
            layer: Block index (0 = patch + position embeddings after pre-layernorm).

        Returns:
            (B, 1 + P, W) hidden states (CLS first) at the input of block `layer`.
        """
        layer = self.check_layer(layer)
        vm = self.model
        h: Tensor = vm.pre_layrnorm(self.embed(self.check(inputs)))
        for blk in vm.encoder.layers[:layer]:
            h = blk(h, None)
        return h

    def embed(self, inputs: ImageInputs) -> Tensor:
        """CLS + patch tokens + position embeddings ``(B, 1 + P, W)`` (``CLIPVisionEmbeddings``, with patch
        removals applied after the patch embedding, `dualex.models.parts.patch_tokens`)."""
        emb = self.model.embeddings
        size = int(self.owner.vision_config.image_size)
        if tuple(inputs.pixels.shape[-2:]) != (size, size):
            raise InputError(f"{self.owner.name} takes {size}×{size} images, got {tuple(inputs.pixels.shape[-2:])}")
        dtype = emb.patch_embedding.weight.dtype
        x = patch_tokens(inputs, lambda px: emb.patch_embedding(px.to(dtype)).flatten(2).transpose(1, 2))
        cls = emb.class_embedding.expand(x.shape[0], 1, -1)
        tokens: Tensor = torch.cat([cls, x], dim=1) + emb.position_embedding(emb.position_ids)
        return tokens

    def pooled_block(self, inputs: SideInputs, rows: int, dtype: torch.dtype) -> PooledBlock | None:
        """The last block at the CLS token."""
        idx = torch.zeros(rows, dtype=torch.long, device=self.device)
        return encoder_layer_pooled(self.model.encoder.layers[-1], idx, None, self._head)

    def tail(self, inputs: SideInputs, hidden: Tensor, layer: int) -> Tensor:
        """Runs the CLIP vision tower from block `layer` to the projected CLS embedding.

        Args:
            inputs: The ImageInputs `hidden` came from.
            hidden: (R, 1 + P, W) hidden states at the input of block `layer`.
            layer: Block index.

        Returns:
            (R, D) unnormalised image embeddings.
        """
        layer = self.check_layer(layer)
        pooled = self.use_pooled_block(inputs, hidden, layer)
        layers = self.model.encoder.layers
        h = hidden
        for blk in layers[layer:-1] if pooled is not None else layers[layer:]:
            h = blk(h, None)
        if pooled is not None:
            return pooled(h)
        return self._head(h[:, 0])


@register_hf("clip")
class HFClip(HFDualEncoder):
    """transformers ``CLIPModel``: CLS-pooled ViT image tower (`HFClipImage`), causal text tower pooled at
    EOS (`HFClipText`)."""

    family = "hf-clip"
    text_tower_type = HFClipText
    image_tower_type = HFClipImage

    def filler_id(self) -> int:
        # exCLIP's reference filler: id 0 ("!" in CLIP BPE), as long as it is not a special id.
        """exCLIP's reference filler id: 0 ('!' in CLIP BPE) unless 0 is BOS/EOS, then the pad id."""
        return 0 if 0 not in (self.bos_id(), self.eos_id()) else self.pad_id()

    def pool_index(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Position of each caption's end-of-text token, which CLIP pools.

        Args:
            ids: (B, T) token ids.
            mask: (B, T) attention mask (unused).

        Returns:
            (B,) long positions.

        Raises:
            InputError: A caption has no end-of-text token.
        """
        eos = self.eos_id()
        if eos == 2:  # legacy configs: EOS is the largest id
            return ids.int().argmax(-1).long()
        hit = ids == eos
        if not bool(hit.any(-1).all()):
            raise InputError("a caption has no end-of-text token after tokenisation; check the tokenizer")
        return hit.int().argmax(-1).long()

    @property
    def contrastive_loss(self) -> Literal["softmax", "sigmoid"] | None:
        """CLIP trains with a softmax (InfoNCE) contrastive loss."""
        return "softmax"


def pipeline_from_pretrained(spec: str, fallback: ImagePipeline) -> ImagePipeline:
    """Read size/crop/mean/std from a saved ``preprocessor_config.json`` if there is one."""
    cfg = read_preprocessor_config(spec)
    if cfg is None:
        return fallback
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
    """Wraps a transformers PreTrainedModel of a registered family, or returns None.

    Args:
        module: Any object; only PreTrainedModels whose model_type is in HF_FAMILIES are taken.
        **kw: Passed to the family's constructor (name defaults to 'hf:CLASSNAME').

    Returns:
        The DualEncoder, or None when this wrapper does not handle `module`.
    """
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
