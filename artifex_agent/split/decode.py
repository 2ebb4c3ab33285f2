"""`--decode-on post`: the post-processing agent turns a LATENT stream into frames with the model's VAE.

The generating agent then sends latents (at 720p/81 frames 19 MB of float32 instead of
224 MB of uint8 RGB) and its GPU is free before the decode. The decode is
GenerationEngine.decode, the same arithmetic the pipeline uses, so the frames are the
bits the generating agent would have sent. The VAE works on whole clips, so one decoded
clip, not a few frames, bounds this path's memory.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from artifex_agent.engines.generation import GenerationEngine
from artifex_agent.engines.models import resolve_model
from artifex_agent.errors import NotFoundError, RequestError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.split import messages
from artifex_agent.transport import frames

logger = logging.getLogger(__name__)


class LatentDecoder:
    """Decodes the clips of one LATENT stream into uint8 RGB frames, as the generating agent would have."""

    def __init__(self, engine: GenerationEngine | None, header: pb.StreamHeader) -> None:
        if engine is None:
            raise RequestError("this agent has no generation engine to decode latents with")
        if not header.model:
            raise RequestError("a latent stream must name its model, so the receiver can decode it")
        try:
            entry = resolve_model(engine.models_root, header.model)
        except NotFoundError as exc:
            raise NotFoundError(f"cannot decode latents here: {exc} (decode on the generating agent, "
                                "or give this agent the model folder)") from None
        if len(header.shape) != 4:
            raise RequestError(f"a latent clip is (channels, frames, height, width); got {list(header.shape)}")
        vae = json.loads((entry.path / "vae" / "config.json").read_text(encoding="utf-8"))
        temporal = int(vae.get("scale_factor_temporal") or 4)
        spatial = int(vae.get("scale_factor_spatial") or 8)
        _, t, h, w = header.shape
        self.engine = engine
        self.header = header
        self.frames_per_clip = (t - 1) * temporal + 1
        self.width, self.height = w * spatial, h * spatial
        if (header.width, header.height) not in ((0, 0), (self.width, self.height)):
            raise RequestError(f"latents of {w}x{h} decode to {self.width}x{self.height}, "
                               f"not the {header.width}x{header.height} the header says")

    def rgb_header(self) -> pb.StreamHeader:
        """The frame stream these latents decode into."""
        h = self.header
        clips = h.clip_count or 1
        return frames.rgb_header(self.width, self.height, clips * self.frames_per_clip, h.fps, clip_count=clips,
                                 model=h.model)

    def decode(self, view: memoryview) -> np.ndarray:
        """One clip's latents (one stream "frame") -> uint8 frames (F, H, W, 3)."""
        latents = messages.tensor_from(view, self.header.dtype, tuple(self.header.shape)).unsqueeze(0)
        out = self.engine.decode(self.header.model, latents)[0]
        if out.shape != (self.frames_per_clip, self.height, self.width, 3):
            raise RequestError(f"the VAE decoded {list(out.shape)}, expected "
                               f"{[self.frames_per_clip, self.height, self.width, 3]}")
        return out
