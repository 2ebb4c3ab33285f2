"""The expert-split hand-off: latents, scheduler memory and prompt embeddings as a checked raw stream.

On the wire: a HandoffHeader (protocol and format versions, model name and fingerprint,
the job, scheduler config and schedule hashes, every tensor's name, dtype and shape), the
tensors' bytes in raw chunks (a chunk never spans two tensors), and a StreamTrailer with
the tensor count, byte total and an xxh3_64 checksum over every byte. The receiver checks
what it can before the bytes arrive (versions, model, sizes) and the rest against its own
pipeline before running a step (scheduler, dtypes, shapes).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import xxhash

from artifex_agent import PROTOCOL_VERSION
from artifex_agent.errors import ArtifexError, RequestError, StreamError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import split_pb2 as spb
from artifex_agent.split import messages
from artifex_agent.split.denoise import Denoiser, DenoiseState, SchedulerState
from artifex_agent.transport import options, wire

logger = logging.getLogger(__name__)

# Bumped when the hand-off's content changes (tensor names, scheduler fields).
FORMAT_VERSION = 1
# 720p/81 frames is about 82 MiB, 1080p/121 frames about 280 MiB: a header announcing more is refused
# before anything is allocated for it.
MAX_HANDOFF_BYTES = 2 << 30
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".gguf")
# Weight files are fingerprinted by size and their first and last bytes: hashing 28 GB per
# job would take minutes, and a different download differs in its headers or its data.
_SAMPLE_BYTES = 1 << 20


class PeerMismatch(ArtifexError):
    """The two agents of a split job run different models, schedulers or protocols (FAILED_PRECONDITION)."""


def job_key(req: pb.GenerateRequest) -> tuple:
    """The fields that determine a job's latents: two stages must agree on all of them."""
    return (req.model, req.task, tuple(req.prompts), req.negative_prompt, req.width, req.height, req.num_frames,
            req.steps, req.guidance_scale, req.guidance_scale_2, req.seed, tuple(req.seeds),
            tuple((ref.name, ref.strength, ref.expert or "both") for ref in req.loras), req.scheduler,
            req.shift if req.HasField("shift") else None,
            req.boundary_ratio if req.HasField("boundary_ratio") else None)


def model_fingerprint(folder: Path) -> str:
    """sha256 over a model folder's small files and samples of its weight files (cached per folder state)."""
    folder = Path(folder)
    index = folder / "model_index.json"
    stamp = index.stat().st_mtime_ns if index.exists() else 0
    return _fingerprint(str(folder.resolve()), stamp)


@functools.lru_cache(maxsize=16)
def _fingerprint(folder: str, _stamp: int) -> str:
    digest = hashlib.sha256()
    root = Path(folder)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        size = path.stat().st_size
        digest.update(f"{rel}\0{size}\0".encode())
        with open(path, "rb") as f:
            if path.suffix not in WEIGHT_SUFFIXES or size <= 2 * _SAMPLE_BYTES:
                digest.update(f.read())
            else:
                digest.update(f.read(_SAMPLE_BYTES))
                f.seek(size - _SAMPLE_BYTES)
                digest.update(f.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def _state_tensors(state: DenoiseState) -> list[tuple[str, torch.Tensor]]:
    out = [("latents", state.latents)]
    for name in ("prompt_embeds", "negative_prompt_embeds"):
        value = getattr(state, name)
        if value is not None:
            out.append((name, value))
    st = state.scheduler
    if st is not None:
        out += [(f"scheduler.model_outputs.{i}", t) for i, t in enumerate(st.model_outputs) if t is not None]
        if st.last_sample is not None:
            out.append(("scheduler.last_sample", st.last_sample))
    return out


@dataclass
class Handoff:
    """A received hand-off: its header and the state it carries (tensors on the CPU)."""

    header: spb.HandoffHeader
    state: DenoiseState
    nbytes: int = 0


def build_header(state: DenoiseState, denoiser: Denoiser, request: pb.GenerateRequest,
                 fingerprint: str) -> tuple[spb.HandoffHeader, list[torch.Tensor]]:
    """The header describing `state` (snapshotted), and the tensors in the order their bytes follow."""
    st = state.scheduler
    if st is None:
        raise RuntimeError("snapshot the scheduler before building a hand-off")
    config_sha, schedule_sha = denoiser.fingerprints()
    tensors = _state_tensors(state)
    infos = [spb.TensorInfo(name=name, dtype=messages.dtype_name(t.dtype), shape=list(t.shape),
                            nbytes=t.numel() * t.element_size()) for name, t in tensors]
    header = spb.HandoffHeader(
        protocol_version=PROTOCOL_VERSION, format_version=FORMAT_VERSION, model=request.model,
        model_fingerprint=fingerprint, request=request, next_step=state.next_step, total_steps=denoiser.total,
        scheduler=spb.SchedulerState(
            class_name=type(denoiser.scheduler).__name__, config_sha256=config_sha, schedule_sha256=schedule_sha,
            step_index=_int(st.step_index), begin_index=_int(st.begin_index), lower_order_nums=st.lower_order_nums,
            this_order=_int(st.this_order), timestep_list=[_int(t) for t in st.timestep_list]),
        tensors=infos, total_bytes=sum(i.nbytes for i in infos),
        compute_dtype=messages.dtype_name(denoiser.transformer_dtype))
    return header, [t for _, t in tensors]


def encode(header: spb.HandoffHeader, tensors: list[torch.Tensor], chunk_bytes: int = 0) -> Iterator[bytes]:
    """DenoiseEvent messages: the header, raw chunks, the trailer."""
    chunk_bytes = chunk_bytes or options.DEFAULT_CHUNK_BYTES
    yield messages.denoise_event(handoff=header)
    digest = xxhash.xxh3_64()
    total = 0
    for t in tensors:
        view = messages.tensor_bytes(t).data
        digest.update(view)
        total += view.nbytes
        for start in range(0, view.nbytes, chunk_bytes):
            yield wire.encode_chunk(view[start:start + chunk_bytes])
    yield messages.denoise_event(trailer=pb.StreamTrailer(frame_count=len(tensors), total_bytes=total,
                                                          checksum=digest.hexdigest()))


def _int(value: object) -> int:
    return -1 if value is None else int(value)  # type: ignore[call-overload]


def _opt(value: int) -> int | None:
    return None if value < 0 else value


class HandoffReceiver:
    """Reassembles a hand-off from its messages, checking it against this agent and the job."""

    def __init__(self, *, request: pb.GenerateRequest, fingerprint: str, max_bytes: int = MAX_HANDOFF_BYTES) -> None:
        self.request = request
        self.fingerprint = fingerprint
        self.max_bytes = max_bytes
        self.header: spb.HandoffHeader | None = None
        self._buffers: list[bytearray] = []
        self._index = 0
        self._fill = 0
        self._hash = xxhash.xxh3_64()
        self.bytes = 0
        self.done = False

    def on_header(self, h: spb.HandoffHeader) -> None:
        """Check versions, model and sizes before any byte of the tensors arrives."""
        if self.header is not None:
            raise StreamError("a second hand-off header arrived in the same stream")
        check_peer(h, self.request.model, self.fingerprint)
        if job_key(h.request) != job_key(self.request):
            raise RequestError("the hand-off is for a different job than this request (prompts, size, steps, "
                               "guidance or seed differ)")
        if not h.tensors or h.tensors[0].name != "latents":
            raise StreamError("a hand-off starts with the latents")
        total = 0
        for info in h.tensors:
            if info.dtype not in messages.DTYPES:
                raise StreamError(f"hand-off tensor {info.name} has unknown dtype {info.dtype!r}")
            if info.nbytes != messages.DTYPES[info.dtype].itemsize * math.prod(info.shape):
                raise StreamError(f"hand-off tensor {info.name}: {info.nbytes} bytes do not match "
                                  f"{info.dtype} {list(info.shape)}")
            total += info.nbytes
        if total != h.total_bytes or total > self.max_bytes:
            raise StreamError(f"hand-off announces {h.total_bytes} bytes for tensors of {total} bytes "
                              f"(limit {self.max_bytes})")
        self.header = h
        self._buffers = [bytearray(info.nbytes) for info in h.tensors]
        self._skip_empty()

    def _skip_empty(self) -> None:
        while self._index < len(self._buffers) and not self._buffers[self._index]:
            self._index += 1

    def on_chunk(self, view: memoryview) -> None:
        if self.header is None:
            raise StreamError("hand-off data arrived before its header")
        if self.done or self._index >= len(self._buffers):
            raise StreamError("more hand-off data than its header announced")
        buf = self._buffers[self._index]
        if self._fill + view.nbytes > len(buf):
            raise StreamError(f"hand-off tensor {self.header.tensors[self._index].name} is larger than announced")
        buf[self._fill:self._fill + view.nbytes] = view
        self._hash.update(view)
        self._fill += view.nbytes
        self.bytes += view.nbytes
        if self._fill == len(buf):
            self._index += 1
            self._fill = 0
            self._skip_empty()

    def on_trailer(self, trailer: pb.StreamTrailer) -> None:
        h = self.header
        if h is None:
            raise StreamError("hand-off trailer arrived before its header")
        if self._index != len(self._buffers) or self._fill:
            raise StreamError(f"hand-off ended after {self.bytes} of {h.total_bytes} bytes")
        if trailer.frame_count != len(h.tensors) or trailer.total_bytes != self.bytes:
            raise StreamError(f"hand-off trailer says {trailer.frame_count} tensors of {trailer.total_bytes} bytes; "
                              f"received {len(h.tensors)} of {self.bytes}")
        if trailer.checksum != self._hash.hexdigest():
            raise StreamError("hand-off checksum mismatch: the state was corrupted on the way")
        self.done = True

    def finish(self) -> Handoff:
        """The hand-off, once its trailer checked out."""
        if not self.done or self.header is None:
            raise StreamError(f"hand-off stream ended before its trailer ({self.bytes} bytes): truncated")
        h = self.header
        tensors = {info.name: messages.tensor_from(buf, info.dtype, tuple(info.shape))
                   for info, buf in zip(h.tensors, self._buffers, strict=True)}
        self._buffers = []
        s = h.scheduler
        outputs: list[torch.Tensor | None] = [tensors.pop(f"scheduler.model_outputs.{i}", None)
                                              for i in range(len(s.timestep_list))]
        sched = SchedulerState(model_outputs=outputs, timestep_list=[_opt(t) for t in s.timestep_list],
                               lower_order_nums=s.lower_order_nums, this_order=_opt(s.this_order),
                               last_sample=tensors.pop("scheduler.last_sample", None),
                               step_index=_opt(s.step_index), begin_index=_opt(s.begin_index))
        state = DenoiseState(next_step=h.next_step, latents=tensors.pop("latents"),
                             prompt_embeds=tensors.pop("prompt_embeds", None),
                             negative_prompt_embeds=tensors.pop("negative_prompt_embeds", None), scheduler=sched)
        if tensors:
            raise StreamError(f"hand-off carries unknown tensors: {', '.join(sorted(tensors))}")
        return Handoff(h, state, self.bytes)


def check_peer(h: spb.HandoffHeader, model: str, fingerprint: str) -> None:
    """Refuse a hand-off from an agent on another protocol or with other model files."""
    if h.protocol_version != PROTOCOL_VERSION or h.format_version != FORMAT_VERSION:
        raise PeerMismatch(f"the peer speaks protocol {h.protocol_version} (hand-off format {h.format_version}), "
                           f"this agent speaks {PROTOCOL_VERSION} (format {FORMAT_VERSION}): "
                           "run the same artifex-agent version on both PCs")
    if h.model != model:
        raise PeerMismatch(f"the hand-off is for model {h.model!r}, this job runs {model!r}")
    if h.model_fingerprint != fingerprint:
        raise PeerMismatch(f"model {model!r} differs between the two agents (fingerprint "
                           f"{h.model_fingerprint[:12]} there, {fingerprint[:12]} here): both need the same files")


def verify(handoff: Handoff, denoiser: Denoiser) -> None:
    """Check a hand-off against the pipeline that will resume it: scheduler, dtype, shapes, step."""
    h, st = handoff.header, handoff.state
    config_sha, schedule_sha = denoiser.fingerprints()
    name = type(denoiser.scheduler).__name__
    if h.scheduler.class_name != name or h.scheduler.config_sha256 != config_sha:
        raise PeerMismatch(f"the peer's scheduler ({h.scheduler.class_name}, config {h.scheduler.config_sha256[:12]}) "
                           f"differs from this agent's ({name}, config {config_sha[:12]})")
    if h.scheduler.schedule_sha256 != schedule_sha or h.total_steps != denoiser.total:
        raise PeerMismatch("the peer's scheduler computes other timesteps or sigmas for this job "
                           "(a different diffusers version?)")
    dtype = messages.dtype_name(denoiser.transformer_dtype)
    if h.compute_dtype != dtype:
        raise PeerMismatch(f"the peer computes in {h.compute_dtype}, this agent in {dtype}: set the same dtype on both")
    if not 0 <= h.next_step <= denoiser.total:
        raise RequestError(f"the hand-off resumes at step {h.next_step} of a {denoiser.total}-step job")
    want_step = h.next_step if h.next_step else None
    if st.scheduler is None or st.scheduler.step_index != want_step:
        raise RequestError(f"the hand-off's scheduler is at step {st.scheduler and st.scheduler.step_index}, "
                           f"its latents at step {h.next_step}")
    latent = denoiser.latent_shape()
    expect: dict[str, tuple[torch.Tensor | None, tuple[int, ...], str]] = {
        "latents": (st.latents, latent, "float32"),
        "prompt_embeds": (st.prompt_embeds, denoiser.embeds_shape(), dtype),
    }
    if denoiser.cfg:
        expect["negative_prompt_embeds"] = (st.negative_prompt_embeds, denoiser.embeds_shape(), dtype)
    for i, t in enumerate(st.scheduler.model_outputs):
        if t is not None:
            expect[f"scheduler.model_outputs.{i}"] = (t, latent, "float32")
    if st.scheduler.last_sample is not None:
        expect["scheduler.last_sample"] = (st.scheduler.last_sample, latent, "float32")
    for label, (tensor, shape, dt) in expect.items():
        if tensor is None:
            raise RequestError(f"the hand-off lacks {label}")
        got = (messages.dtype_name(tensor.dtype), tuple(tensor.shape))
        if got != (dt, shape):
            raise RequestError(f"hand-off tensor {label} is {got[0]} {list(got[1])}; this job needs {dt} {list(shape)}")
