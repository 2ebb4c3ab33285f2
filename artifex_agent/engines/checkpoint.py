"""A tiny random-weight Wan2.2-architecture checkpoint in diffusers layout, built offline."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Literal

import torch

logger = logging.getLogger(__name__)

Variant = Literal["t2v", "t2v-a14b", "i2v-a14b", "ti2v"]
VARIANTS: tuple[Variant, ...] = ("t2v", "t2v-a14b", "i2v-a14b", "ti2v")

# Where the two A14B experts hand over (fraction of the 1000 training timesteps), as in Wan2.2.
BOUNDARY_RATIO = {"t2v-a14b": 0.875, "i2v-a14b": 0.900}

# A fixed word list: prompts made of these words get real token ids, anything else is <unk>.
_WORDS = (
    "a an the of in on at with and to by from over under near into is are "
    "cat dog bird fish horse person man woman child robot car boat train plane tree flower "
    "river sea ocean lake mountain forest city street road house room sky cloud sun moon star "
    "rain snow fire water light night day morning evening red green blue yellow white black "
    "small big tiny huge slow fast walking running flying swimming jumping dancing sitting "
    "cinematic realistic painting anime photo video scene shot close wide aerial camera pan zoom"
).split()


def build_tiny_checkpoint(
    path: Path,
    *,
    variant: Variant = "t2v",
    seed: int = 0,
    layers: int = 1,
    heads: int = 2,
    head_dim: int = 12,
    ffn_dim: int = 32,
    text_dim: int = 32,
    text_layers: int = 1,
    vae_dim: int = 4,
    flow_shift: float = 3.0,
) -> Path:
    """Write a random-weight Wan2.2 model folder (diffusers layout) at `path`; same seed, same bytes."""
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanImageToVideoPipeline,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel
    from transformers.utils import logging as hf_logging

    if variant not in VARIANTS:
        raise ValueError(f"unknown tiny checkpoint variant {variant!r} (use {', '.join(VARIANTS)})")
    path = Path(path)
    ti2v = variant == "ti2v"
    # TI2V-5B uses the Wan2.2 VAE: 48 latent channels, 16x spatial compression (8x plus a 2x2 patchify).
    z_dim = 48 if ti2v else 16
    tokenizer = _tokenizer()
    # Fork the RNG so building a checkpoint leaves the caller's random state alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae_kwargs: dict[str, object] = {}
        if ti2v:
            vae_kwargs = {
                "is_residual": True,
                "in_channels": 12,
                "out_channels": 12,
                "patch_size": 2,
                "scale_factor_spatial": 16,
                "latents_mean": [0.0] * z_dim,
                "latents_std": [1.0] * z_dim,
            }
        vae = AutoencoderKLWan(
            base_dim=vae_dim,
            z_dim=z_dim,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
            **vae_kwargs,  # type: ignore[arg-type]
        )
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                vocab_size=len(tokenizer),
                d_model=text_dim,
                d_kv=max(text_dim // 4, 4),
                d_ff=text_dim * 2,
                num_layers=text_layers,
                num_heads=4,
                relative_attention_num_buckets=8,
                relative_attention_max_distance=32,
                dropout_rate=0.0,
                feed_forward_proj="gated-gelu",
                pad_token_id=0,
                eos_token_id=1,
                decoder_start_token_id=0,
            )
        )
        # Wan2.2 I2V feeds the image as latents beside the noise: noise (z) + mask (4) + image latents (z).
        in_channels = 2 * z_dim + 4 if variant == "i2v-a14b" else z_dim

        expert = {
            "patch_size": (1, 2, 2),
            "num_attention_heads": heads,
            "attention_head_dim": head_dim,
            "in_channels": in_channels,
            "out_channels": z_dim,
            "text_dim": text_dim,
            "freq_dim": 256,
            "ffn_dim": ffn_dim,
            "num_layers": layers,
            "cross_attn_norm": True,
            "qk_norm": "rms_norm_across_heads",
            "rope_max_seq_len": 1024,  # as the real Wan2.2 models: RoPE covers up to 1024 positions
        }
        transformer_1 = WanTransformer3DModel(**expert)  # type: ignore[arg-type]
        # A14B: a high-noise expert, then a low-noise one with the same shape and its own weights.
        transformer_2 = WanTransformer3DModel(**expert) if variant in BOUNDARY_RATIO else None  # type: ignore[arg-type]
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift, num_train_timesteps=1000
    )
    components = {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "vae": vae,
        "scheduler": scheduler,
        "transformer": transformer_1,
        "transformer_2": transformer_2,
        "boundary_ratio": BOUNDARY_RATIO.get(variant),
    }
    pipe: Any
    if variant == "i2v-a14b":
        pipe = WanImageToVideoPipeline(**components)  # type: ignore[arg-type]
    else:
        pipe = WanPipeline(**components, expand_timesteps=ti2v)  # type: ignore[arg-type]
    # transformers draws a "Writing model shards" bar per component; a tiny build is not worth one.
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        pipe.save_pretrained(str(path), safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    _portable_tokenizer_class(path)
    # Weights are written 0600 and mkdtemp folders are 0700; a models share must be readable by the agents.
    for p in (path, *path.rglob("*")):
        p.chmod(0o755 if p.is_dir() else 0o644)
    logger.debug("built tiny %s checkpoint at %s", variant, path)
    return path


def _portable_tokenizer_class(path: Path) -> None:
    """Name the tokenizer PreTrainedTokenizerFast, which transformers 4 and 5 both load."""
    # transformers 5 records its new class name (TokenizersBackend), which transformers 4 lacks.
    index = _read_json(path / "model_index.json")
    index["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
    _write_json(path / "model_index.json", index)
    tok_config = _read_json(path / "tokenizer" / "tokenizer_config.json")
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    _write_json(path / "tokenizer" / "tokenizer_config.json", tok_config)


def _read_json(file: Path) -> dict:
    return json.loads(file.read_text(encoding="utf-8"))


def _write_json(file: Path, data: dict) -> None:
    file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def ensure_tiny_checkpoint(
    models_root: Path, name: str = "wan2.2-tiny-t2v", *, variant: Variant = "t2v", **options: Any
) -> Path:
    """Build the tiny checkpoint under `models_root/name` once (options go to build_tiny_checkpoint).

    It is built in a hidden folder beside the target and renamed into place, so a half-built folder is never seen.
    """
    models_root = Path(models_root)
    target = models_root / name
    if (target / "model_index.json").is_file():
        return target
    models_root.mkdir(parents=True, exist_ok=True)
    # Hidden temp folder on the same filesystem, so the rename is atomic and list_models skips it.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=f".{uuid.uuid4().hex[:8]}.part", dir=models_root))
    try:
        build_tiny_checkpoint(tmp, variant=variant, **options)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process won the race (POSIX: ENOTEMPTY; Windows: access denied on an existing folder).
            if not (target / "model_index.json").is_file():
                raise
            logger.debug("tiny checkpoint %s was built concurrently", target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _tokenizer() -> Any:
    """A T5-like WordLevel tokenizer (pad 0, eos 1, unk 2) made without any download."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in _WORDS:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )
