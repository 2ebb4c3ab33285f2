"""Frame upscaling: a spandrel model (ESRGAN and kin) or a plain bicubic resampler."""

from __future__ import annotations

import logging
import numbers
import pickle
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from artifex_agent.errors import NotFoundError, RequestError, ResourceError

logger = logging.getLogger(__name__)

MAX_FACTOR = 8
MIN_TILE = 32
DEFAULT_BATCH = 4
# The largest frame an upscale may produce: 8K UHD (33.2 Mpx). H.264 stops at 8192x4320 and NVENC's
# H.264 at 4096x4096, so a larger frame could not be encoded anyway; 1024x1024 at 8x was 4.5 GB of RSS.
MAX_OUTPUT_FRAME_PIXELS = 7680 * 4320
# The most pixels one stream may produce in all (width x height x frames after upscaling): 2**35,
# 4K UHD for 4,140 frames, an hour or more of encoding.
MAX_OUTPUT_PIXELS = 1 << 35
# Output pixels scaled in one torch batch (and handed to it by PostProcess), at least one frame: float32
# working copies cost ~18 bytes an output pixel on the CPU, so a 1440p frame's batch is about 65 MB.
BATCH_PIXELS = 4 * 1024 * 1024
# Context each tile borrows from its neighbours so seams do not show.
TILE_OVERLAP = 16
# Only formats that hold plain tensors; TorchScript (.pt archives of code) is not accepted as such.
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
MODEL_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)

DeviceName = str
DtypeName = Literal["auto", "float32", "bfloat16", "float16"]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

_cache: dict[tuple[str, int, int, str, str], Any] = {}
_cache_lock = threading.Lock()


def resolve_device(device: DeviceName = "auto") -> torch.device:
    """'auto' is the first GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise RequestError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RequestError(f"device {device!r} asked for, but no CUDA GPU is usable here")
    return dev


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file without running any code stored in it."""
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise RequestError(f"model file {path.name!r}: unsupported type (use {', '.join(MODEL_SUFFIXES)})")
    if not path.is_file():
        raise NotFoundError(f"model file {path.name!r} does not exist")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            # spandrel's own loader uses a restricted unpickler of its own; torch's
            # weights_only loader is the one torch maintains against code execution.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's weights-only unpickler names the global it refused; anything else is damage.
        if "global" not in str(exc).lower():
            logger.warning("cannot read %s: %s", path, exc)
            raise RequestError(
                f"model file {path.name!r} is not a readable {suffix} weights file"
                " (damaged, or pickled in a way the safe loader refuses)"
            ) from None
        logger.warning("refused %s: it pickles objects other than weights", path)
        raise RequestError(
            f"model file {path.name!r} holds Python objects besides weights; refused (loading it could run code)."
            " Re-save its state dict as .safetensors"
        ) from None
    except Exception as exc:
        logger.warning("cannot read %s: %s", path, exc)
        raise RequestError(f"model file {path.name!r} is not a readable {suffix} weights file") from None
    if not isinstance(state, dict):
        raise RequestError(f"model file {path.name!r} does not hold a state dict")
    return state


def _load_descriptor(path: Path) -> Any:
    """Build the spandrel model described by the weights at `path` (on the CPU, float32)."""
    import spandrel

    state = spandrel.canonicalize_state_dict(read_state_dict(path))
    try:
        desc = spandrel.ModelLoader(device="cpu").load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise RequestError(f"model file {path.name!r} is not an architecture spandrel knows") from None
    except Exception as exc:
        logger.warning("spandrel failed on %s: %s", path, exc)
        raise RequestError(f"model file {path.name!r} does not match the architecture it resembles") from None
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise RequestError(f"model file {path.name!r} is a {desc.purpose} model, not an image-to-image model")
    if desc.purpose == "FaceSR":
        # Face restorers expect aligned face crops, not whole video frames.
        raise RequestError(f"model file {path.name!r} is a face-restoration model; use an SR or restoration model")
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise RequestError(
            f"model file {path.name!r} maps {desc.input_channels} to {desc.output_channels} channels;"
            " RGB (3 to 3) is needed"
        )
    return desc


def _pick_dtype(desc: Any, device: torch.device, dtype: DtypeName) -> torch.dtype:
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        if desc.supports_half:
            return torch.float16
        return torch.bfloat16 if desc.supports_bfloat16 else torch.float32
    if dtype not in _DTYPES:
        raise RequestError(f"unknown dtype {dtype!r} (use auto, float32, bfloat16 or float16)")
    wanted = _DTYPES[dtype]
    supported = {
        torch.float32: True,
        torch.float16: desc.supports_half and device.type == "cuda",
        torch.bfloat16: desc.supports_bfloat16,
    }[wanted]
    if not supported:
        logger.warning("%s is not supported by this model on %s; using float32", dtype, device)
        return torch.float32
    return wanted


def load_model(path: Path, device: torch.device, dtype: DtypeName = "auto") -> Any:
    """The spandrel model at `path`, on `device`; each file is loaded once per process (keyed by mtime)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise NotFoundError(f"model file {path.name!r} does not exist") from None
    real = str(path.resolve())
    key = (real, st.st_mtime_ns, st.st_size, str(device), dtype)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        # A changed file replaces every copy of its older version.
        for stale in [k for k in _cache if k[0] == real and k[1:3] != (st.st_mtime_ns, st.st_size)]:
            del _cache[stale]
        desc = _load_descriptor(path)
        torch_dtype = _pick_dtype(desc, device, dtype)
        desc.to(device=device, dtype=torch_dtype).eval()
        logger.info(
            "loaded %s: %s %dx (%s) on %s as %s",
            path.name,
            desc.architecture.name,
            desc.scale,
            ", ".join(desc.tags),
            device,
            torch_dtype,
        )
        _cache[key] = desc
        return desc


def clear_model_cache() -> None:
    """Forget every loaded model (tests, or to free GPU memory)."""
    with _cache_lock:
        _cache.clear()


def check_output_size(width: int, height: int, frames: int, factor: int) -> tuple[int, int]:
    """The upscaled (width, height); RequestError naming the limit when the output would be too large."""
    out_w, out_h = width * factor, height * factor
    if out_w * out_h > MAX_OUTPUT_FRAME_PIXELS:
        raise RequestError(f"{width}x{height} upscaled {factor}x is {out_w}x{out_h}; the limit is "
                           f"{MAX_OUTPUT_FRAME_PIXELS:,} pixels a frame (8K UHD)")
    if out_w * out_h * frames > MAX_OUTPUT_PIXELS:
        raise RequestError(f"{frames} frames of {out_w}x{out_h} is {out_w * out_h * frames:,} output pixels; "
                           f"the limit is {MAX_OUTPUT_PIXELS:,} a stream")
    return out_w, out_h


def frames_per_batch(out_w: int, out_h: int, batch: int = DEFAULT_BATCH) -> int:
    """How many output frames of out_w x out_h to scale at once: up to `batch`, within BATCH_PIXELS."""
    return max(1, min(batch, BATCH_PIXELS // max(out_w * out_h, 1)))


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize of an NCHW float tensor; antialiased only when shrinking."""
    shrinking = height < x.shape[-2] or width < x.shape[-1]
    if x.dtype not in (torch.float32, torch.float64):
        # Half-precision bicubic is missing on some backends; the resize is cheap either way.
        return F.interpolate(
            x.float(), size=(height, width), mode="bicubic", align_corners=False, antialias=shrinking
        ).to(x.dtype)
    return F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=shrinking)


class Upscaler:
    """Scales uint8 RGB frames (N, H, W, 3) by an integer factor, a few frames at a time."""

    def __init__(
        self,
        factor: int,
        model_path: Path | None = None,
        *,
        device: DeviceName = "auto",
        dtype: DtypeName = "auto",
        tile: int = 0,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        if isinstance(factor, bool) or not isinstance(factor, numbers.Integral) or not 1 <= factor <= MAX_FACTOR:
            raise RequestError(f"upscale factor must be an integer within 1..{MAX_FACTOR} (got {factor!r})")
        factor = int(factor)
        self.factor: int = factor
        if tile < 0 or 0 < tile < MIN_TILE:
            raise RequestError(f"tile must be 0 (no tiling) or at least {MIN_TILE} pixels (got {tile})")
        if batch < 1:
            raise RequestError(f"batch must be at least 1 (got {batch})")
        self.tile: int = tile
        self.batch: int = batch
        self.device: torch.device = resolve_device(device)
        self.model: Any = None
        self.model_scale: int | None = None
        if model_path is not None:
            self.model = load_model(Path(model_path), self.device, dtype)
            self.model_scale = int(self.model.scale)
            if self.model_scale != factor:
                logger.info(
                    "model %s is %dx; its output is resized to %dx with bicubic",
                    Path(model_path).name,
                    self.model_scale,
                    factor,
                )
        self.dtype: torch.dtype = self.model.dtype if self.model is not None else torch.float32

    @property
    def name(self) -> str:
        """What does the scaling, for logs and results ("ESRGAN 2x" or "bicubic")."""
        if self.model is None:
            return "bicubic" if self.factor != 1 else "none"
        return f"{self.model.architecture.name} {self.model_scale}x"

    def out_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) frames of `width` x `height` come out as."""
        return width * self.factor, height * self.factor

    def work_bytes(self, frames: int, width: int, height: int) -> int:
        """Host memory a call on `frames` frames of width x height takes beyond its input.

        The uint8 result, and on the CPU the float32 copies of one batch (input, output, and the
        rounded uint8). A model's activations are not counted: they depend on its architecture
        and live on the GPU in any setup that upscales with one.
        """
        if self.factor == 1 and self.model is None:
            return 0
        out_w, out_h = self.out_size(width, height)
        out = frames * out_w * out_h * 3
        if self.device.type != "cpu":
            return out
        per = min(frames, frames_per_batch(out_w, out_h, self.batch))
        return out + per * 3 * (4 * width * height + 4 * out_w * out_h + out_w * out_h)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Upscale uint8 (N, H, W, 3) frames to uint8 (N, H*factor, W*factor, 3)."""
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
            got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
            raise RequestError(f"frames must be uint8 (N, H, W, 3), got {got}")
        if self.factor == 1 and self.model is None:
            return frames
        n, h, w, _ = frames.shape
        out_w, out_h = check_output_size(w, h, n, self.factor)
        per = frames_per_batch(out_w, out_h, self.batch)
        out = np.empty((n, out_h, out_w, 3), dtype=np.uint8)
        try:
            with torch.inference_mode():
                for start in range(0, n, per):
                    chunk = torch.from_numpy(frames[start : start + per]).to(self.device)
                    out[start : start + len(chunk)] = self._scale(chunk, out_h, out_w).cpu().numpy()
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            hint = "set a smaller tile" if self.tile else "set tile (e.g. 512)"
            raise ResourceError(f"out of GPU memory upscaling {w}x{h} frames; lower the batch or {hint}") from None
        return out

    def _scale(self, chunk: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
        """uint8 NHWC on the device -> uint8 NHWC, upscaled."""
        x = chunk.permute(0, 3, 1, 2)
        if self.model is None:
            y = _resize(x.float(), out_h, out_w)
        else:
            y = self._run_model(x.to(self.dtype).div_(255.0))
            if y.shape[-2:] != (out_h, out_w):
                y = _resize(y, out_h, out_w)
            y = y.float().mul_(255.0)
        return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)

    def _run_model(self, x: torch.Tensor) -> torch.Tensor:
        """Run the model on NCHW [0, 1] input, tile by tile when tiling is on."""
        _, _, h, w = x.shape
        t = self.tile
        if not t or (h <= t and w <= t):
            return self.model(x)
        s = self.model_scale or 1
        out = x.new_empty((x.shape[0], 3, h * s, w * s))
        for y0 in range(0, h, t):
            for x0 in range(0, w, t):
                y1, x1 = min(y0 + t, h), min(x0 + t, w)
                ya, xa = max(y0 - TILE_OVERLAP, 0), max(x0 - TILE_OVERLAP, 0)
                yb, xb = min(y1 + TILE_OVERLAP, h), min(x1 + TILE_OVERLAP, w)
                piece = self.model(x[:, :, ya:yb, xa:xb])
                out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = piece[
                    :, :, (y0 - ya) * s : (y1 - ya) * s, (x0 - xa) * s : (x1 - xa) * s
                ]
        return out
