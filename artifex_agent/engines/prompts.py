"""Prompt embeddings from the UMT5 text encoder, which never stays on the GPU beside an expert.

Wan2.2's text encoder is 5.7 B parameters (11 GB in bf16): resident beside a 14 B expert it
alone would fill a 24 GB card. So it is taken out of the pipeline and kept on the CPU; a prompt
is encoded on the GPU when the caller says there is room (then the encoder goes straight back),
on the CPU otherwise. Embeddings are cached by content, so repeated and batched prompts encode
once. Each prompt is encoded alone, so its embedding does not depend on its batch mates.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import types
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger(__name__)

# WanPipeline.__call__'s default, which every job here uses.
MAX_SEQUENCE_LENGTH = 512
# 512 tokens x 4096 x bf16 is 4 MiB a prompt: 256 MiB keeps the last ~64 distinct prompts.
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024


class PromptEncoder:
    """The tokenizer and text encoder of one model, off the pipeline, with an embeddings cache."""

    def __init__(self, model: str, pipe_class: type, tokenizer: Any, text_encoder: torch.nn.Module,
                 *, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 encode_on: Callable[[int], torch.device] | None = None) -> None:
        self.model = model
        # Asked, with the encoder's size, where to encode now (the GPU when the memory plan has room).
        self.encode_on = encode_on
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.to("cpu").eval()
        # diffusers' own tokenise/encode/trim/pad code of this pipeline class, called on this holder.
        self._encode_fn: Callable[..., torch.Tensor] = pipe_class._get_t5_prompt_embeds  # type: ignore[attr-defined]
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def dtype(self) -> torch.dtype:
        """The encoder's own dtype: embeddings come out in it, as from the pipeline."""
        return next(self.text_encoder.parameters()).dtype

    @property
    def weight_bytes(self) -> int:
        """What the encoder takes on a device while it encodes."""
        return sum(p.numel() * p.element_size() for p in self.text_encoder.parameters())

    def encode(self, prompts: list[str], *, device: torch.device, dtype: torch.dtype,
               encode_on: torch.device | None = None,
               max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> torch.Tensor:
        """(len(prompts), max_sequence_length, text_dim) embeddings in `dtype` on `device`.

        Prompts not in the cache are encoded on `encode_on` (default: where the engine says there is
        room, else the CPU); the encoder is back on the CPU before this returns.
        """
        if encode_on is None and self.encode_on is not None:
            encode_on = self.encode_on(self.weight_bytes)
        keys = [self._key(p, max_sequence_length) for p in prompts]
        with self._lock:
            missing = [(k, p) for k, p in dict(zip(keys, prompts, strict=True)).items() if k not in self._cache]
            self.hits += len(prompts) - len(missing)
            self.misses += len(missing)
            if missing:
                self._encode_missing(missing, encode_on or torch.device("cpu"), max_sequence_length)
            rows = []
            for k in keys:
                self._cache.move_to_end(k)
                rows.append(self._cache[k])
            out = torch.cat(rows, dim=0).to(device=device, dtype=dtype)
        return out

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._cached_bytes = 0

    def _encode_missing(self, missing: list[tuple[str, str]], where: torch.device, max_len: int) -> None:
        encoder = self.text_encoder
        moved = where.type != "cpu"
        if moved:
            encoder.to(where)
        try:
            holder = types.SimpleNamespace(tokenizer=self.tokenizer, text_encoder=encoder, _execution_device=where)
            with torch.no_grad():
                for key, prompt in missing:
                    embeds = self._encode_fn(holder, prompt=[prompt], num_videos_per_prompt=1,
                                             max_sequence_length=max_len, device=where, dtype=self.dtype)
                    self._store(key, embeds.to("cpu"))
        finally:
            if moved:
                encoder.to("cpu")
        logger.debug("encoded %d prompt(s) for %s on %s", len(missing), self.model, where)

    def _store(self, key: str, embeds: torch.Tensor) -> None:
        size = embeds.numel() * embeds.element_size()
        self._cache[key] = embeds
        self._cached_bytes += size
        # Least recently used first out; the newest entry always stays, even when alone over budget.
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.numel() * old.element_size()

    def _key(self, prompt: str, max_len: int) -> str:
        digest = hashlib.sha256()
        for part in (self.model, str(max_len), prompt):
            digest.update(part.encode("utf-8", "surrogatepass"))
            digest.update(b"\0")
        return digest.hexdigest()
