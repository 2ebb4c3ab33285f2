"""An agent's part of a split job on its engine, run in a worker thread (no gRPC here; services/split.py streams it).

A Denoise part runs some steps, from the start or from a received hand-off, and ends with a
hand-off or the final latents. A CFG half runs one pass of every step and trades each
prediction with its peer: `emit` sends this agent's, a PeerInbox (split/inbound.py) holds the
peer's. A CUDA OOM in either answers RESOURCE_EXHAUSTED through engines/oom.py, as whole jobs do.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch

from artifex_agent.engines import oom
from artifex_agent.engines.generation import (
    GenerationCancelled,
    GenerationEngine,
    GenerationRequest,
    PreviewCallback,
)
from artifex_agent.engines.models import resolve_model
from artifex_agent.engines.previews import Previews, denoised_estimate
from artifex_agent.errors import RequestError
from artifex_agent.proto.artifex.v1 import split_pb2 as spb
from artifex_agent.split import cfg as cfg_split
from artifex_agent.split import handoff
from artifex_agent.split.denoise import Denoiser, Pass
from artifex_agent.split.inbound import PeerInbox

OOM_ADVICE = 'out of GPU memory in a split job; try fewer frames, a smaller size or offload = "auto"'
# (step, total, note): a denoising step done, as services/pump.Pump.on_step reports it.
Report = Callable[[int, int, str], None]
Handed = tuple[spb.HandoffHeader | None, list[torch.Tensor]]


def fingerprint(engine: GenerationEngine, model: str) -> str:
    """The model's files as the peer must see them too (split/handoff.py model_fingerprint)."""
    return handoff.model_fingerprint(resolve_model(engine.models_root, model).path)


def experts_needed(engine: GenerationEngine, req: GenerationRequest, spec: spb.DenoiseSpec,
                   start: int) -> frozenset[str] | None:
    """The experts this part runs (None: the model has one).

    Only those are kept resident here, so two 24 GB cards hold both A14B experts between them without swapping.
    """
    if spec.stop_at_boundary:
        return frozenset({"transformer"})
    return engine.experts_for_steps(req.model, req.steps, start, spec.stop_step or req.steps, req)


def denoise_part(engine: GenerationEngine, req: GenerationRequest, spec: spb.DenoiseSpec, got: handoff.Handoff | None,
                 fingerprint: str, experts: frozenset[str] | None, *, cancel: threading.Event,
                 report: Report, on_preview: PreviewCallback | None = None) -> Handed:
    """The part's steps; returns (hand-off header, its tensors) or (None, [final latents]), on the CPU.

    This agent holds the latents for these steps, so it sends their previews (req.preview_every).
    """
    def work() -> Handed:
        with engine.exclusive(req.model, req, experts=experts) as pipe:
            _check_cancel(cancel)
            d = Denoiser(pipe, req)
            if got is not None:
                handoff.verify(got, d)
                state = d.restore(got.state)
            else:
                state = d.start()
            if spec.stop_at_boundary and d.boundary_timestep is None:
                raise RequestError(f"an expert split needs a two-expert model (Wan2.2 A14B); {req.model} "
                                   "has one expert: use split 'cfg' or 'none'")
            stop = d.boundary_step() if spec.stop_at_boundary else min(spec.stop_step or d.total, d.total)
            if stop < state.next_step:
                raise RequestError(f"stop step {stop} is before the hand-off's step {state.next_step}")
            report(state.next_step, d.total, f"steps {state.next_step + 1}..{stop} of {d.total}")
            with _previews(engine.previews_for(req, on_preview), cancel) as previews:
                on_step = _stepper(report, previews, cancel, lambda: denoised_estimate(d.scheduler, state.latents),
                                   last=stop)
                d.run(state, stop, cancel=cancel, on_step=on_step)
            if spec.handoff:
                header, tensors = handoff.build_header(d.snapshot(state), d, spec.request, fingerprint)
                return header, [t.detach().to("cpu").contiguous() for t in tensors]
            return None, [state.latents.to("cpu", torch.float32).contiguous()]

    return oom.guarded(work, OOM_ADVICE)


def cfg_half(engine: GenerationEngine, req: GenerationRequest, role: Pass, fingerprint: str, inbox: PeerInbox, *,
             emit: Callable[[bytes], None], chunk_bytes: int, cancel: threading.Event, report: Report,
             on_preview: PreviewCallback | None = None) -> torch.Tensor:
    """Every step's `role` pass, traded with the peer's; returns the final latents on the CPU.

    Both halves hold the same latents; the conditional one sends the previews. It reads x0 from
    the scheduler (UniPC): run_half keeps its latents to itself, so a scheduler without x0
    (flow-match Euler) gives a CFG-parallel job no previews.
    """
    def send(step: int, tensor: torch.Tensor) -> None:
        for message in cfg_split.noise_messages(step, tensor, inbox.mine, model=req.model, chunk_bytes=chunk_bytes):
            emit(message)

    def work() -> torch.Tensor:
        with engine.exclusive(req.model, req) as pipe:
            _check_cancel(cancel)
            d = Denoiser(pipe, req)
            # This agent's identity, checked against every prediction the peer sends.
            inbox.mine.CopyFrom(cfg_split.identity(d, fingerprint))
            sink = on_preview if role == "cond" else None
            with _previews(engine.previews_for(req, sink), cancel) as previews:
                on_step = _stepper(report, previews, cancel, lambda: denoised_estimate(d.scheduler, None),
                                   last=d.total)
                state = cfg_split.run_half(d, role, send, inbox.receive, cancel=cancel, on_step=on_step)
            return state.latents.to("cpu", torch.float32).contiguous()

    return oom.guarded(work, OOM_ADVICE)


@contextlib.contextmanager
def _previews(previews: Previews | None, cancel: threading.Event) -> Iterator[Previews | None]:
    """The part's previews (None: not asked for), closed at its end; none are sent once the job is cancelled."""
    try:
        yield previews
    finally:
        if previews is not None:
            previews.close(drop=cancel.is_set())


def _stepper(report: Report, previews: Previews | None, cancel: threading.Event,
             estimate: Callable[[], torch.Tensor | None], *, last: int) -> Callable[[int, int], None]:
    """A part's step callback: report the step, then capture its preview if due (`last`: the part's end)."""
    def on_step(step: int, total: int) -> None:
        report(step, total, "")
        if previews is not None and previews.due(step) and not cancel.is_set():
            previews.capture(step, total, estimate(), last=step == last)

    return on_step


def _check_cancel(cancel: threading.Event) -> None:
    # Once the engine is held: the client may have gone while this job waited for it.
    if cancel.is_set():
        raise GenerationCancelled("cancelled while waiting for the engine")
