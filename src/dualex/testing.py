"""Tiny random models built in code, for tests and examples (no downloads).

Shipped inside the package (as captum does) so that downstream projects can reuse them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from dualex.models.base import DualEncoder
from dualex.models.preprocess import CLIP_MEAN, CLIP_STD, HALF, ImagePipeline
from dualex.models.tokenize import Tokenized, WordTokenizer

TINY_VOCAB = 99
TINY_BOS, TINY_EOS, TINY_PAD = 97, 98, 0


def tiny_word_tokenizer(*, max_length: int = 16, pad_to_max: bool = False, bos: int = TINY_BOS) -> WordTokenizer:
    """A `WordTokenizer` over `TINY_VOCAB` (BOS, EOS and padding ids of the tiny models)."""
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
    module = CLIPModel(cfg).train(False)  # = .eval(), which transformers leaves unannotated
    pipe = ImagePipeline(size=image_size, crop=(image_size, image_size), mean=CLIP_MEAN, std=CLIP_STD)
    return HFClip(module, tokenizer=tiny_word_tokenizer(), pipeline=pipe, name="tiny-hf-clip")


def random_image(seed: int = 0, size: tuple[int, int] = (40, 48)) -> np.ndarray:
    """A random uint8 RGB image ``(H, W, 3)``."""
    return np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)


class NoBosWordTokenizer:
    """`WordTokenizer` without the BOS token, as SigLIP tokenizers (words, EOS, then padding).

    Pads to ``max_length`` (SigLIP was trained on fixed-length text). Exposes ``eos`` and ``pad`` ids
    like `WordTokenizer`.
    """

    def __init__(self, *, eos_id: int = TINY_EOS, pad_id: int = TINY_EOS, max_length: int = 16) -> None:
        self.eos, self.pad, self.max_length = eos_id, pad_id, max_length
        self._words = WordTokenizer(
            TINY_VOCAB,
            bos_id=TINY_BOS,
            eos_id=eos_id,
            pad_id=pad_id,
            max_length=max_length + 1,
            pad_to_max=True,
        )

    def __call__(self, texts: Sequence[str]) -> Tokenized:
        t = self._words(texts)
        return Tokenized(
            ids=t.ids[:, 1:],
            mask=t.mask[:, 1:],
            tokens=[row[1:] for row in t.tokens],
            special=t.special[:, 1:],
            offsets=[row[1:] for row in t.offsets],
        )


TINY_WORDS = (
    "a", "an", "the", "red", "blue", "green", "dog", "cat", "cats", "two", "on", "mat", "circle", "square",
)  # fmt: skip


def tiny_hf_tokenizer(*, pad_is_eos: bool = True, max_length: int = 16) -> Any:
    """A small transformers fast tokenizer shaped like SigLIP's: words, then ``</s>``, no BOS.

    Vocabulary: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, ``!`` 3, then `TINY_WORDS` (ids < 99, so it fits
    the tiny models). With ``pad_is_eos`` the padding token is ``</s>`` (SigLIP v1), else ``<pad>``.
    ``save_pretrained(DIR)`` makes a directory loadable with ``AutoTokenizer`` offline.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(("<pad>", "</s>", "<unk>", "!", *TINY_WORDS))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    # transformers leaves the fast tokenizer's __init__ unannotated.
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        eos_token="</s>",
        pad_token="</s>" if pad_is_eos else "<pad>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def _tiny_siglip_configs(layers: int, pad_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    text = {
        "vocab_size": TINY_VOCAB,
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "max_position_embeddings": 16,
        "bos_token_id": TINY_BOS,
        "eos_token_id": TINY_EOS,
        "pad_token_id": pad_id,
    }
    vision = {
        "patch_size": 8,
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
    }
    return text, vision


def _set_score(module: torch.nn.Module, scale: float, bias: float) -> None:
    """SigLIP initialises exp(t) = 1 and b = 0; give the tiny models a visible scale and bias."""
    with torch.no_grad():
        logit_scale, logit_bias = module.logit_scale, module.logit_bias
        assert isinstance(logit_scale, torch.Tensor) and isinstance(logit_bias, torch.Tensor)  # parameters
        logit_scale.fill_(math.log(scale))
        logit_bias.fill_(bias)


def tiny_hf_siglip(seed: int = 0, *, image_size: int = 32, layers: int = 2) -> DualEncoder:
    """A random transformers ``SiglipModel`` (width 32, patch 8, ``layers`` blocks a tower), wrapped.

    Text as SigLIP v1: no BOS, 16 positions, padding id = end-of-text id (98), no attention mask.
    Score: ``10 · cos − 2.5``.
    """
    from transformers import SiglipConfig, SiglipModel

    from dualex.models.hf_siglip import HFSiglip

    torch.manual_seed(seed)
    text, vision = _tiny_siglip_configs(layers, TINY_EOS)
    config = SiglipConfig(text_config=text, vision_config={**vision, "image_size": image_size})
    module = SiglipModel(config).train(False)  # = .eval()
    _set_score(module, 10.0, -2.5)
    tok = NoBosWordTokenizer(eos_id=TINY_EOS, pad_id=TINY_EOS, max_length=16)
    return HFSiglip(module, tokenizer=tok, name="tiny-hf-siglip")


def tiny_hf_siglip2(seed: int = 0, *, max_num_patches: int = 16, layers: int = 2) -> DualEncoder:
    """A random transformers ``Siglip2Model`` (NaFlex; width 32, patch 8, 4×4 position table), wrapped.

    Images run on a ``isqrt(max_num_patches)`` square grid (default 4×4 = 32 px). Text as SigLIP-2: no
    BOS, 16 positions, padding id 0 ≠ end-of-text id 98. Score: ``10 · cos − 2.5``.
    """
    from transformers import Siglip2Config, Siglip2Model

    from dualex.models.hf_siglip import HFSiglip2

    torch.manual_seed(seed)
    text, vision = _tiny_siglip_configs(layers, TINY_PAD)
    config2 = Siglip2Config(text_config=text, vision_config={**vision, "num_patches": 16})
    module = Siglip2Model(config2).train(False)  # = .eval()
    _set_score(module, 10.0, -2.5)
    tok = NoBosWordTokenizer(eos_id=TINY_EOS, pad_id=TINY_PAD, max_length=16)
    return HFSiglip2(module, tokenizer=tok, max_num_patches=max_num_patches, name="tiny-hf-siglip2")


def tiny_openclip(
    seed: int = 0,
    *,
    layers: int = 2,
    context_length: int = 24,
    vision_cfg: dict[str, Any] | None = None,
    **text_cfg: Any,
) -> DualEncoder:
    """A random ``open_clip.CLIP`` (width 32, ``layers`` blocks per tower, 32 px images, 8 px patches).

    It uses the real CLIP BPE tokenizer (open_clip's ``SimpleTokenizer``, vocabulary 49408, bundled with
    open_clip) at ``context_length``. Extra keywords go to ``CLIPTextCfg`` (e.g. ``pool_type="eos"``);
    ``vision_cfg`` to ``CLIPVisionCfg`` (e.g. ``{"pool_type": "avg"}``, ``{"qk_norm": True}``).
    """
    from open_clip import CLIP, SimpleTokenizer
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    from dualex.models.openclip import OpenClipEncoder

    torch.manual_seed(seed)
    vision = CLIPVisionCfg(
        layers=layers, width=32, head_width=8, mlp_ratio=2.0, patch_size=8, image_size=32, **(vision_cfg or {})
    )
    text_kw: dict[str, Any] = {"eos_id": 49407, **text_cfg}
    text = CLIPTextCfg(context_length=context_length, width=32, heads=4, layers=layers, mlp_ratio=2.0, **text_kw)
    module = CLIP(16, vision, text).eval()
    tok = SimpleTokenizer(context_length=context_length)
    return OpenClipEncoder(module, tokenizer=tok, name="tiny-openclip")


SENTENCE_WORDS = (
    "a", "man", "woman", "is", "eating", "food", "piece", "of", "bread", "dog", "cat", "plays", "playing",
    "drums", "monkey", "the", "girl", "carrying", "baby", "red", "circle", "blue", "square", "on", "mat",
    "##s", "##ing", ".", ",", "!",
)  # fmt: skip


def tiny_sentence_tokenizer(*, max_length: int = 32) -> Any:
    """A transformers ``BertTokenizer`` over a hand-written WordPiece vocabulary (`SENTENCE_WORDS`).

    Ids: ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3, ``[MASK]`` 4, then the words.
    """
    from transformers import BertTokenizer

    vocab = {w: i for i, w in enumerate(("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *SENTENCE_WORDS))}
    return BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=max_length)


def tiny_sentence(seed: int = 0, *, layers: int = 2, pooling: str = "mean", normalize: bool = True) -> DualEncoder:
    """A random transformers ``BertModel`` (width 32, ``layers`` blocks) as a mean-pooling bi-encoder."""
    from transformers import BertConfig, BertModel

    from dualex.models.sentence import SentenceEncoder

    torch.manual_seed(seed)
    tok = tiny_sentence_tokenizer()
    cfg = BertConfig(
        vocab_size=len(tok.get_vocab()),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    module = BertModel(cfg, add_pooling_layer=False).train(False)  # type: ignore[no-untyped-call]  # untyped __init__
    return SentenceEncoder(module, tokenizer=tok, pooling=pooling, normalize=normalize, name="tiny-sentence")


def tiny_distilbert_sentence(seed: int = 0) -> DualEncoder:
    """A random transformers ``DistilBertModel`` (width 32, two blocks) wrapped as a mean-pooling bi-encoder."""
    from transformers import DistilBertConfig, DistilBertModel

    from dualex.models.registry import wrap

    torch.manual_seed(seed)
    tok = tiny_sentence_tokenizer()
    cfg = DistilBertConfig(
        vocab_size=len(tok.get_vocab()), dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64
    )
    module = DistilBertModel(cfg).train(False)
    return wrap(module, tokenizer=tok, name="tiny-distilbert")


HF_FAMILY_KINDS = ("metaclip2", "chinese-clip", "altclip", "align", "blip", "owlvit")
"""The transformers families `tiny_hf_family` builds."""


def tiny_hf_family(kind: str, seed: int = 0) -> DualEncoder:
    """A random transformers ``MetaClip2Model`` (``"metaclip2"``), ``ChineseCLIPModel`` (``"chinese-clip"``),
    ``AltCLIPModel`` (``"altclip"``), ``AlignModel`` (``"align"``, EfficientNet at 64 px),
    ``BlipForImageTextRetrieval`` (``"blip"``) or ``OwlViTModel`` (``"owlvit"``): width 32, two blocks per
    text tower, 32 px ViTs, the word tokenizer."""
    import transformers

    from dualex.models.registry import wrap

    text: dict[str, Any] = {"vocab_size": TINY_VOCAB, "hidden_size": 32, "intermediate_size": 37}
    text.update(num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=40, pad_token_id=TINY_PAD)
    text.update(bos_token_id=TINY_BOS, eos_token_id=TINY_EOS)
    vision: dict[str, Any] = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37}
    vision.update(num_hidden_layers=2, num_attention_heads=4)
    configs = {
        "metaclip2": (transformers.MetaClip2Config, transformers.MetaClip2Model, {}),
        "chinese-clip": (transformers.ChineseCLIPConfig, transformers.ChineseCLIPModel, {}),
        "altclip": (transformers.AltCLIPConfig, transformers.AltCLIPModel, {"project_dim": 16}),
    }
    projection = 16
    size = 32
    if kind == "align":  # EfficientNet at a quarter width: 7 stages, 80 channels (= the embedding) at 64 px
        vision = {"image_size": 64, "width_coefficient": 0.25, "depth_coefficient": 0.3, "hidden_dim": 64}
        configs["align"] = (transformers.AlignConfig, transformers.AlignModel, {})
        projection, size = 80, 64
    if kind == "blip":  # the image-text retrieval model: its contrastive (ITC) embeddings
        configs["blip"] = (transformers.BlipConfig, transformers.BlipForImageTextRetrieval, {})
        text["encoder_hidden_size"] = 32
    if kind == "owlvit":
        configs["owlvit"] = (transformers.OwlViTConfig, transformers.OwlViTModel, {})
    config_cls, model_cls, extra = configs[kind]
    torch.manual_seed(seed)
    config = config_cls(text_config={**text, **extra}, vision_config=vision, projection_dim=projection)
    module = model_cls(config).eval()
    from dualex.tiny import jitter

    jitter(module, seed)
    if kind == "align":  # transformers' N(0, 0.02) convolutions let no signal through 8 blocks: He-initialise
        for conv in module.modules():
            if isinstance(conv, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(conv.weight, generator=torch.Generator().manual_seed(seed))
    pipe = ImagePipeline(size=size, crop=(size, size), mean=CLIP_MEAN, std=CLIP_STD)
    return wrap(module, tokenizer=tiny_word_tokenizer(), pipeline=pipe, name=f"tiny-hf-{kind}")


OPENCLIP_FAMILY_ARCHS = (
    "RN50",  # ModifiedResNet, attention pool
    "convnext_base",  # timm ConvNeXt
    "EVA02-B-16",  # timm Eva with RoPE
    "PE-Core-B-16",  # timm Eva with an attention-pool head
    "MobileCLIP2-S0",  # timm FastViT MCi
    "swin_base_patch4_window7_224",  # timm Swin
    "ViT-B-16-SigLIP",  # timm ViT (map head), a tokenizer from the hub
    "ViTamin-B",  # timm ViT over an MBConv stem
    "coca_ViT-B-32",  # CoCa: attentional pooler, appended text CLS
    "xlm-roberta-base-ViT-B-32",  # a Hugging Face text tower (XLM-R, mean pooling), given a local copy
)
"""One open_clip architecture per tower family `dualex.models.openclip_towers` runs."""


def tiny_openclip_family(arch: str, seed: int = 0) -> DualEncoder:
    """open_clip's ``arch`` shrunk (`dualex.tiny.tiny_openclip_arch`) and wrapped, with a local tokenizer:
    the SigLIP-shaped `tiny_hf_tokenizer` where the real one is on the hub, else the word tokenizer padded
    to the context length."""
    import open_clip

    from dualex.models.registry import wrap
    from dualex.tiny import tiny_openclip_arch

    text_cfg = open_clip.get_model_config(arch)["text_cfg"]
    hub = bool(text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name"))
    tok: Any = tiny_hf_tokenizer(pad_is_eos=False) if hub else None
    module = tiny_openclip_arch(arch, seed, tokenizer=tok)
    text: Any = getattr(module, "text", module)
    if not hub:
        coca = getattr(text, "cls_emb", None) is not None
        n_pos = int(text.positional_embedding.shape[0])
        tok = tiny_word_tokenizer(pad_to_max=True, max_length=n_pos - 1 if coca else n_pos)
    return wrap(module, tokenizer=tok, name=f"tiny-openclip:{arch}")


TINY_FAMILIES: dict[str, Callable[[], DualEncoder]] = {
    "hf-clip": tiny_hf_clip,
    "hf-siglip": tiny_hf_siglip,
    "hf-siglip2": tiny_hf_siglip2,
    "openclip": tiny_openclip,
    "openclip-avg": lambda: tiny_openclip(seed=3, vision_cfg={"pool_type": "avg"}),
    "openclip-qknorm": lambda: tiny_openclip(
        seed=2, qk_norm=True, scale_heads=True, vision_cfg={"qk_norm": True, "scale_heads": True}
    ),
    "sentence": tiny_sentence,
    "sentence-distilbert": tiny_distilbert_sentence,
    **{f"hf-{k}": functools.partial(tiny_hf_family, k) for k in HF_FAMILY_KINDS},
    **{f"openclip:{arch}": functools.partial(tiny_openclip_family, arch, seed=1) for arch in OPENCLIP_FAMILY_ARCHS},
}
"""One tiny random model per family and variant (name -> factory), for tests parametrised over families."""


def tiny_pair_inputs(model: DualEncoder) -> tuple[list[Any], list[str]]:
    """Two raw (second side, caption) pairs suited to ``model``'s second tower (images, or sentences)."""
    second: dict[str, list[Any]] = {
        "text": ["a man is eating food", "the girl is carrying a baby"],
        "image": [random_image(1), random_image(2)],
    }
    return second[model.tower("image").modality], ["a red dog", "two blue cats sit on a mat"]


__all__: list[Any] = [
    "HALF",
    "OPENCLIP_FAMILY_ARCHS",
    "SENTENCE_WORDS",
    "TINY_FAMILIES",
    "TINY_WORDS",
    "NoBosWordTokenizer",
    "random_image",
    "tiny_distilbert_sentence",
    "tiny_hf_clip",
    "tiny_hf_family",
    "tiny_hf_siglip",
    "tiny_hf_siglip2",
    "tiny_hf_tokenizer",
    "tiny_openclip",
    "tiny_openclip_family",
    "tiny_pair_inputs",
    "tiny_sentence",
    "tiny_sentence_tokenizer",
    "tiny_word_tokenizer",
]
