"""The bundled shapes CLIP: architecture, tokenizer and where its files live; registers ``load("shapes")``.

The model is a transformers ``CLIPModel`` (so ``dualex.load("shapes")`` goes through the ordinary HF CLIP
adapter) with CLIP's real BPE tokenizer, rebuilt from the vocabulary file open_clip ships
(``bpe_simple_vocab_16e6.txt.gz``) exactly as CLIP's ``SimpleTokenizer`` builds it: the 256 byte
characters, the same with ``</w>``, the 48,894 merges, then ``<|startoftext|>`` (49406) and
``<|endoftext|>`` (49407).
"""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path
from typing import Any

from dualex.bytelevel import byte_encoder
from dualex.errors import ModelNotAvailableError
from dualex.models.preprocess import CLIP_MEAN, CLIP_STD, ImagePipeline
from dualex.models.registry import register_alias

BOS_ID, EOS_ID = 49406, 49407
N_MERGES = 49152 - 256 - 2
ARCH: dict[str, int] = {
    "width": 128,  # both towers
    "layers": 4,  # both towers
    "heads": 4,
    "mlp": 512,
    "image_size": 224,
    "patch_size": 32,  # a 7×7 grid, as ViT-B/32
    "embed_dim": 128,
    "context": 64,
}


def asset_dir() -> Path:
    """Directory of the bundled model (``dualex/assets/shapes``)."""
    return Path(str(resources.files("dualex") / "assets" / "shapes"))


# ``"shapes"`` is an alias of ``"hf:<dualex/assets/shapes>"``: the same HF CLIP adapter as any real CLIP loads it.
register_alias("shapes", f"hf:{asset_dir()}")


def clip_bpe(bpe_path: str | Path | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary (49,408 entries) and merge list from its gzipped BPE file.

    Args:
        bpe_path: The ``bpe_simple_vocab_16e6.txt.gz`` file (default: the copy inside open_clip).

    Raises:
        ModelNotAvailableError: open_clip is not installed and no path was given.
    """
    if bpe_path is None:
        try:
            import open_clip
        except ImportError:
            raise ModelNotAvailableError(
                "building the shapes tokenizer needs CLIP's BPE file; install open_clip_torch (extra [openclip]) "
                "or pass bpe_path"
            ) from None
        bpe_path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe_path) as f:
        lines = f.read().decode("utf-8").split("\n")
    pairs = [line.split() for line in lines[1 : N_MERGES + 1]]
    merges = [(p[0], p[1]) for p in pairs]
    byte_chars = list(byte_encoder().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def build_tokenizer(bpe_path: str | Path | None = None, *, max_length: int = ARCH["context"]) -> Any:
    """A transformers ``CLIPTokenizer`` with CLIP's vocabulary (pads with ``<|endoftext|>``, as HF CLIP)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe(bpe_path)
    # transformers annotates `merges` as list[str]; the tokenizers BPE it feeds takes (left, right) pairs.
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)  # type: ignore[arg-type]


def write_tokenizer(directory: str | Path, bpe_path: str | Path | None = None) -> None:
    """Write ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` (what ``AutoTokenizer`` reads)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_bpe(bpe_path)
    (d / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": ARCH["context"],
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    (d / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")


def write_preprocessor(directory: str | Path) -> None:
    """``preprocessor_config.json``: the 224-pixel CLIP pipeline (resize short side, centre crop, CLIP mean/std)."""
    from dualex.models.hf import pipeline_config, write_preprocessor_config

    size = ARCH["image_size"]
    pipe = ImagePipeline(size=size, crop=(size, size), mean=CLIP_MEAN, std=CLIP_STD)
    write_preprocessor_config(Path(directory), pipeline_config(pipe, "CLIPImageProcessor"))


def build_model(seed: int = 0) -> Any:
    """A freshly initialised ``CLIPModel`` with the shapes architecture (`ARCH`), seeded."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    a = ARCH
    tower = {
        "hidden_size": a["width"],
        "intermediate_size": a["mlp"],
        "num_hidden_layers": a["layers"],
        "num_attention_heads": a["heads"],
    }
    config = CLIPConfig(
        text_config={
            **tower,
            "vocab_size": EOS_ID + 1,
            "max_position_embeddings": a["context"],
            "bos_token_id": BOS_ID,
            "eos_token_id": EOS_ID,  # not 2: the text tower pools at the first EOS, as HFClip.pool_index
            "pad_token_id": EOS_ID,
        },
        vision_config={**tower, "image_size": a["image_size"], "patch_size": a["patch_size"]},
        projection_dim=a["embed_dim"],
    )
    torch.manual_seed(seed)
    return CLIPModel(config)


def save_model(module: Any, directory: str | Path, *, fp16: bool = True) -> Path:
    """Save weights (fp16 safetensors by default; ``config.json`` says float32, so loading upcasts), the
    tokenizer files and the preprocessor config. Returns the directory."""
    import copy

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = copy.deepcopy(module).cpu()
    if fp16:
        out = out.half()
    out.save_pretrained(d, safe_serialization=True)
    cfg_path = d / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dtype"] = "float32"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    write_tokenizer(d)
    write_preprocessor(d)
    return d
