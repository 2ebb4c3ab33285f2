"""Live previews of a clip while it denoises: a few frames of the denoised estimate, projected to RGB, as WebP.

No VAE and no extra model: a linear latent->RGB map per latent format (the published factors
for the Wan2.1 VAE's 16 channels, used by the A14B models, and the Wan2.2 VAE's 48, used by
TI2V-5B), applied at latent resolution and scaled up by PIL. Up to four frames spread over the
clip, in reading order on a 2x2 grid, as one still image: an animated WebP of the same frames
costs five times the encoding (about 40 ms a preview here). The denoising thread only picks
the frames and projects them (a few kilobytes of arithmetic); resizing and encoding run on a
thread of the job's own, so the steps do not wait for PIL. A preview is made at most every
MIN_INTERVAL_S (besides the last step's): on fast steps, an encoder busy all the time would
still take CPU (and the GIL) from the step loop, and no one watches 40 images a second
(docs/previews.md).
"""

from __future__ import annotations

import io
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.features
import PIL.Image
import torch

# The grid's arithmetic lives in preview_grid (torch-free, for the CLI too); preview_size and frames_shown are
# re-exported for callers that know previews from here.
from artifex_agent.preview_grid import PREVIEW_FRAMES, PREVIEW_WIDTH, cell_size, cells, grid_shape
from artifex_agent.preview_grid import frames_shown as frames_shown
from artifex_agent.preview_grid import preview_size as preview_size

logger = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.25  # the most often a job makes a preview (its last step's always comes)
WEBP = bool(PIL.features.check("webp"))
MIME = "image/webp" if WEBP else "image/jpeg"

# Latent -> RGB factors (rows: latent channels; columns: R, G, B) and their bias, from ComfyUI's
# comfy/latent_formats.py (Wan21, Wan22). They map the normalised latents (what the diffusers Wan
# pipelines denoise) to RGB in about [-1, 1].
_WAN21 = (
    ((-0.1299, -0.1692, 0.2932), (0.0671, 0.0406, 0.0442), (0.3568, 0.2548, 0.1747), (0.0372, 0.2344, 0.1420),
     (0.0313, 0.0189, -0.0328), (0.0296, -0.0956, -0.0665), (-0.3477, -0.4059, -0.2925), (0.0166, 0.1902, 0.1975),
     (-0.0412, 0.0267, -0.1364), (-0.1293, 0.0740, 0.1636), (0.0680, 0.3019, 0.1128), (0.0032, 0.0581, 0.0639),
     (-0.1251, 0.0927, 0.1699), (0.0060, -0.0633, 0.0005), (0.3477, 0.2275, 0.2950), (0.1984, 0.0913, 0.1861)),
    (-0.1835, -0.0868, -0.3360),
)
_WAN22 = (
    ((0.0119, 0.0103, 0.0046), (-0.1062, -0.0504, 0.0165), (0.0140, 0.0409, 0.0491), (-0.0813, -0.0677, 0.0607),
     (0.0656, 0.0851, 0.0808), (0.0264, 0.0463, 0.0912), (0.0295, 0.0326, 0.0590), (-0.0244, -0.0270, 0.0025),
     (0.0443, -0.0102, 0.0288), (-0.0465, -0.0090, -0.0205), (0.0359, 0.0236, 0.0082), (-0.0776, 0.0854, 0.1048),
     (0.0564, 0.0264, 0.0561), (0.0006, 0.0594, 0.0418), (-0.0319, -0.0542, -0.0637), (-0.0268, 0.0024, 0.0260),
     (0.0539, 0.0265, 0.0358), (-0.0359, -0.0312, -0.0287), (-0.0285, -0.1032, -0.1237), (0.1041, 0.0537, 0.0622),
     (-0.0086, -0.0374, -0.0051), (0.0390, 0.0670, 0.2863), (0.0069, 0.0144, 0.0082), (0.0006, -0.0167, 0.0079),
     (0.0313, -0.0574, -0.0232), (-0.1454, -0.0902, -0.0481), (0.0714, 0.0827, 0.0447), (-0.0304, -0.0574, -0.0196),
     (0.0401, 0.0384, 0.0204), (-0.0758, -0.0297, -0.0014), (0.0568, 0.1307, 0.1372), (-0.0055, -0.0310, -0.0380),
     (0.0239, -0.0305, 0.0325), (-0.0663, -0.0673, -0.0140), (-0.0416, -0.0047, -0.0023), (0.0166, 0.0112, -0.0093),
     (-0.0211, 0.0011, 0.0331), (0.1833, 0.1466, 0.2250), (-0.0368, 0.0370, 0.0295), (-0.3441, -0.3543, -0.2008),
     (-0.0479, -0.0489, -0.0420), (-0.0660, -0.0153, 0.0800), (-0.0101, 0.0068, 0.0156), (-0.0690, -0.0452, -0.0927),
     (-0.0145, 0.0041, 0.0015), (0.0421, 0.0451, 0.0373), (0.0504, -0.0483, -0.0356), (-0.0837, 0.0168, 0.0055)),
    (0.0317, -0.0878, -0.1388),
)
FACTORS = {16: _WAN21, 48: _WAN22}


@dataclass(frozen=True)
class Preview:
    """One encoded preview: which denoising step it shows."""

    data: bytes
    mime: str
    step: int
    total: int


def denoised_estimate(scheduler: Any, latents: torch.Tensor | None) -> torch.Tensor | None:
    """The clip as the model sees it now: x0 where the scheduler keeps it, else the current latents.

    UniPC (the Wan models' own scheduler) keeps the x0 prediction of the step just taken as
    model_outputs[-1]. Flow-match Euler (step-distilled LoRAs) keeps none, so its previews show
    the current latents, which still carry the remaining noise.
    """
    outputs = getattr(scheduler, "model_outputs", None)
    if getattr(scheduler.config, "predict_x0", False) and outputs and outputs[-1] is not None:
        return outputs[-1]  # type: ignore[no-any-return]
    return latents


def project(latents: torch.Tensor, frames: int = PREVIEW_FRAMES) -> torch.Tensor:
    """The first clip of (clips, C, T, h, w) latents as uint8 RGB (F, h, w, 3): F frames spread over T."""
    clip = latents[0]
    channels, length = clip.shape[0], clip.shape[1]
    count = min(frames, length)
    picks = [round(i * (length - 1) / max(count - 1, 1)) for i in range(count)]
    chosen = clip[:, picks].float()  # C, F, h, w: the only frames worth the arithmetic
    if channels in FACTORS:
        weight, bias = _factors(channels, chosen.device)
        rgb = torch.addmm(bias, chosen.permute(1, 2, 3, 0).reshape(-1, channels), weight)
        rgb = rgb.reshape(*chosen.shape[1:], 3).add_(1.0).mul_(0.5)
    else:
        # Not a Wan VAE (the tests' tiny models of other widths): no published factors, so the
        # first three channels (repeated when fewer), each stretched to its own range.
        first = chosen[[i % channels for i in range(3)]].permute(1, 2, 3, 0)
        low = first.amin(dim=(0, 1, 2), keepdim=True)
        rgb = (first - low) / (first.amax(dim=(0, 1, 2), keepdim=True) - low).clamp_min(1e-6)
    return rgb.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


_FACTOR_TENSORS: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}


def _factors(channels: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The (C, 3) factors and (3,) bias as tensors on `device`, made once (a copy per step would cost more)."""
    key = (channels, str(device))
    if key not in _FACTOR_TENSORS:
        table = FACTORS[channels]
        _FACTOR_TENSORS[key] = (torch.tensor(table[0], dtype=torch.float32, device=device),
                                torch.tensor(table[1], dtype=torch.float32, device=device))
    return _FACTOR_TENSORS[key]


def encode(frames: np.ndarray, cell: tuple[int, int], *, webp: bool = WEBP) -> bytes:
    """uint8 (F, h, w, 3) frames, each scaled to `cell`, on a grid (black where a cell is left): WebP, else JPEG."""
    columns, rows = grid_shape(len(frames))
    grid = PIL.Image.new("RGB", (columns * cell[0], rows * cell[1]))
    for frame, box in zip(frames, cells(columns, rows, cell), strict=False):
        grid.paste(PIL.Image.fromarray(frame).resize(cell, PIL.Image.Resampling.BILINEAR), box[:2])
    out = io.BytesIO()
    if webp:
        # method 0: the fastest encoder setting; a preview is replaced seconds later.
        grid.save(out, "WEBP", quality=60, method=0)
    else:
        grid.save(out, "JPEG", quality=75)
    return out.getvalue()


class Previews:
    """One job's previews: captured every `every` steps on the denoising thread, encoded on a thread of their own.

    A due step within `min_interval_s` of the last capture is skipped, except this agent's last step.
    `sink` receives each Preview from the encoding thread, in step order. close() waits for those
    still encoding; close(drop=True) (a cancelled job) discards them, so none follows a cancel.
    """

    def __init__(self, every: int, width: int, height: int, sink: Callable[[Preview], None], *,
                 frames: int = PREVIEW_FRAMES, max_width: int = PREVIEW_WIDTH,
                 min_interval_s: float = MIN_INTERVAL_S) -> None:
        self.every = every
        self.min_interval_s = min_interval_s
        self._last_capture = -math.inf
        self.width, self.height, self.max_width = width, height, max_width
        self.frames = frames
        self.sink = sink
        self.sent = 0
        self._queue: queue.SimpleQueue[tuple[int, int, Any, Any] | None] = queue.SimpleQueue()
        self._dropped = threading.Event()
        self._thread: threading.Thread | None = None

    def due(self, step: int) -> bool:
        """Whether denoising step `step` (1-based) gets a preview."""
        return self.every > 0 and step % self.every == 0

    def capture(self, step: int, total: int, estimate: torch.Tensor | None, *, last: bool = False) -> None:
        """Project `estimate` now (before the next step changes it) and queue it for encoding.

        `last`: this agent's last step of the job (its end, or a split part's), never skipped.
        """
        if estimate is None or self._dropped.is_set():
            return
        now = time.monotonic()
        if not (last or step >= total) and now - self._last_capture < self.min_interval_s:
            return
        self._last_capture = now
        with torch.no_grad():
            rgb = project(estimate, self.frames)
        ready = None
        if rgb.is_cuda:
            # Copy without waiting for the GPU: the encoding thread waits on the event instead.
            host = torch.empty(rgb.shape, dtype=rgb.dtype, pin_memory=True)
            host.copy_(rgb, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
            rgb = host
        if self._thread is None:
            self._thread = threading.Thread(target=self._encode_all, name="previews", daemon=True)
            self._thread.start()
        self._queue.put((step, total, rgb, ready))

    def close(self, drop: bool = False) -> None:
        """Stop the encoding thread: after the previews still queued, or at once with `drop`."""
        if drop:
            self._dropped.set()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _encode_all(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._dropped.is_set():
                continue
            step, total, rgb, ready = item
            try:
                if ready is not None:
                    ready.synchronize()
                data = encode(rgb.numpy(), cell_size(self.width, self.height, len(rgb), self.max_width))
                self.sink(Preview(data, MIME, step, total))
                self.sent += 1
            except Exception:  # a preview is never worth failing the job for
                logger.exception("preview of step %d failed", step)
