"""Jobs and agents as the pages show them: plain dicts (for templates and the event stream's JSON)."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from artifex_agent.coordinator.agents import AgentHandle, AgentPool
from artifex_agent.coordinator.job import Job
from artifex_agent.coordinator.messages import JobEvent
from artifex_agent.coordinator.previews import Preview, PreviewStore
from artifex_agent.coordinator.scheduler import Scheduler
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.timeleft import fmt_seconds as fmt_seconds
from artifex_agent.timeleft import seconds_left

HEALTH_HINT = "run artifex-agent health"


@dataclass
class Progress:
    """A running job's last progress step, as the agents reported it."""

    stage: str
    step: int
    total: int
    since: float  # when this stage's first step was seen (for the ETA)
    time: float


class ProgressBoard:
    """Each running job's latest progress, so a page loaded mid-run shows its bar where it is; and when each
    agent stage (denoise, decode, stream, post...) began, for the job page's stage times.

    The store keeps a job's state changes, not its progress: stage times are known for the last
    MAX_TIMED jobs seen running since the coordinator started.
    """

    MAX_TIMED = 1000

    def __init__(self) -> None:
        self.jobs: dict[str, Progress] = {}
        # job id -> [stage, began, ended or None], oldest job first.
        self.stages: OrderedDict[str, list[list[Any]]] = OrderedDict()

    async def follow(self, scheduler: Scheduler) -> None:
        """Note every job's events until cancelled (the web server runs this as a task)."""
        with scheduler.subscribe("") as queue:
            while True:
                self.note(await queue.get())

    def note(self, event: JobEvent) -> None:
        if event.kind == "progress" and event.total:
            last = self.jobs.get(event.job_id)
            since = last.since if last is not None and last.stage == event.stage else event.time
            self.jobs[event.job_id] = Progress(event.stage, event.step, event.total, since, event.time)
            self._mark(event.job_id, event.stage, event.time)
        elif event.kind == "state" and event.state != "running":
            self.jobs.pop(event.job_id, None)
            self._mark(event.job_id, "", event.time)

    def _mark(self, job_id: str, stage: str, now: float) -> None:
        """`stage` began at `now` (""  : the job stopped running); the stage before it ended then."""
        marks = self.stages.get(job_id)
        if marks is None:
            if not stage:
                return
            marks = self.stages[job_id] = []
            while len(self.stages) > self.MAX_TIMED:
                self.stages.popitem(last=False)
        if marks and marks[-1][0] == stage:
            return
        if marks and marks[-1][2] is None:
            marks[-1][2] = now
        if stage:
            marks.append([stage, now, None])

    def stage_times(self, job: Job, history: list[JobEvent], now: float | None = None) -> list[tuple[str, str]]:
        """(stage, time taken) for the job page: queued, then each agent stage (or, for a job this board did not
        see run, the stages its stored events name)."""
        now = now or time.time()
        rows = [("queued", fmt_seconds(job.queued_s))] if job.queued_s else []
        marks = self.stages.get(job.id)
        if marks is None:  # from the store: each state change's stage lasts until the next one
            marks = []
            for ev in history:
                if ev.stage and ev.stage not in ("queued", "done", "failed", "cancelled") \
                        and (not marks or marks[-1][0] != ev.stage):
                    marks.append([ev.stage, ev.time, None])
                elif marks and marks[-1][2] is None and ev.stage != marks[-1][0]:
                    marks[-1][2] = ev.time
        for stage, began, ended in marks:
            rows.append((stage, fmt_seconds((ended or job.finished or now) - began)))
        return rows


def preview_url(job_id: str, preview: Preview | None) -> str:
    """Where a page fetches the job's newest preview (`v` changes with each new one, so no cache serves an old one)."""
    return f"/jobs/{job_id}/preview?v={preview.version}" if preview is not None else ""


def job_view(job: Job, progress: Progress | None = None, now: float | None = None,
             preview: Preview | None = None) -> dict[str, Any]:
    """What a queue row, the job page and an event need to know about a job."""
    now = now or time.time()
    end = job.finished or now
    elapsed = end - job.started if job.started else None
    percent = 100.0 if job.state == "done" else 0.0
    # The agents' own estimate (the whole job: steps, decode, upscale, encode); else this stage's pace.
    eta = seconds_left(job, now)
    if progress is not None and job.state == "running":
        percent = 100.0 * progress.step / max(progress.total, 1)
        if eta is None and progress.step and progress.time > progress.since:
            rate = (progress.time - progress.since) / progress.step
            eta = rate * (progress.total - progress.step)
    spec = job.spec
    return {
        "id": job.id, "state": job.state, "stage": job.stage, "agent": job.agent, "post_agent": job.post_agent,
        "priority": spec.priority, "prompt": spec.prompts[0] if spec.prompts else spec.post_input,
        "prompts": len(spec.prompts), "model": spec.model, "size": f"{spec.width}x{spec.height}",
        "frames": spec.frames, "percent": round(percent, 1),
        "step": progress.step if progress else 0, "total": progress.total if progress else 0,
        "elapsed": fmt_seconds(elapsed), "eta": fmt_seconds(eta), "error": job.error,
        "waiting": job.why_waiting(now), "outputs": len(job.outputs), "created": job.created,
        "terminal": job.terminal, "cached": job.cached, "attempts": job.attempts,
        "preview": preview_url(job.id, preview) if job.state == "running" else "",
    }


def event_view(event: JobEvent, board: ProgressBoard, previews: PreviewStore | None = None) -> dict[str, Any]:
    """One event for the pages' event stream (the job's row as it is now, when the event carries the job).

    Small whatever the event carries: a preview goes as the URL of its bytes, never as the bytes.
    """
    out: dict[str, Any] = {"job_id": event.job_id, "kind": event.kind, "state": event.state, "stage": event.stage,
                           "step": event.step, "total": event.total, "message": event.message,
                           "agent": event.agent, "time": event.time}
    progress = board.jobs.get(event.job_id)
    if event.kind == "progress" and event.total:
        out["percent"] = round(100.0 * event.step / event.total, 1)
        if event.eta_s > 0:
            out["eta"] = fmt_seconds(event.eta_s)
        # The board follows the bus on its own task: it may not have seen this very event yet.
        elif progress is not None and progress.stage == event.stage and event.step and event.time > progress.since:
            out["eta"] = fmt_seconds((event.time - progress.since) / event.step * (event.total - event.step))
    preview = previews.get(event.job_id) if previews is not None else None
    if event.preview and preview is not None:
        out["preview"] = preview_url(event.job_id, preview)
    if event.job is not None:
        out["job"] = job_view(event.job, progress, preview=preview)
    return out


def link_views(pool: AgentPool, name: str, now: float | None = None) -> list[dict[str, Any]]:
    """Agent `name`'s link to each other agent, as the coordinator last had one of the pair probe the other
    (coordinator/links.py): RTT p50 always, bandwidth only where the pool streams (three agents or more)."""
    now = time.monotonic() if now is None else now
    out: list[dict[str, Any]] = []
    for other in pool:
        if other.name == name:
            continue
        link = pool.links.get(name, other.name)
        if link is None:
            out.append({"peer": other.name, "ok": None, "text": f"to {other.name}: not measured yet"})
            continue
        ago = f"{fmt_seconds(max(now - link.measured, 0.0))} ago"
        if link.ok:
            rate = f", {link.gbit:.2f} Gbit/s" if link.gbit else ""
            text = f"to {other.name}: RTT p50 {link.rtt_ms:.3f} ms{rate} ({ago})"
        else:
            text = f"to {other.name}: unreachable: {link.error} ({ago})"
        out.append({"peer": other.name, "ok": link.ok, "rtt_ms": link.rtt_ms if link.ok else None,
                    "gbit": link.gbit or None, "text": text})
    return out


def agent_view(agent: AgentHandle, running: list[str], links: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One agent's card: state, GPUs, current jobs and the link figures the coordinator has."""
    info = agent.info
    gpus = []
    for gpu in info.gpus if info is not None else ():
        gpus.append({"name": gpu.name, "used_gib": round(gpu.memory_used / 2**30, 1),
                     "total_gib": round(gpu.memory_total / 2**30, 1),
                     "percent": round(100.0 * gpu.memory_used / gpu.memory_total, 1) if gpu.memory_total else 0.0,
                     "temperature_c": gpu.temperature_c, "utilization_pct": gpu.utilization_pct})
    state = "up" if agent.up else ("checking" if not agent.checked else "down")
    busy = "generating" if agent.generating else ("post-processing" if agent.posting else "idle")
    return {
        "name": agent.name, "state": state, "problem": agent.problem, "busy": busy if agent.up else "",
        "address": agent.cfg.dial_address, "roles": list(agent.cfg.roles), "prefer": list(agent.cfg.prefer),
        "gpus": gpus, "gpu_problem": info.gpu_problem if info is not None else "",
        "hostname": info.hostname if info is not None else "", "version": info.version if info is not None else "",
        "models": [m.name for m in info.models if m.complete and m.model_kind != pb.MODEL_KIND_UPSCALE]
        if info is not None else [],
        "encoders": list(info.encoders) if info is not None else [],
        "mtu": info.link_mtu if info is not None else 0,
        "interface": info.link_interface if info is not None else "",
        "jobs": running, "links": links or [], "link_hint": HEALTH_HINT,
    }


def agents_view(pool: AgentPool, scheduler: Scheduler) -> list[dict[str, Any]]:
    """Every agent's card, with the jobs running on it now."""
    running: dict[str, list[str]] = {}
    for entry in scheduler.entries.values():
        job = entry.job
        if job.state == "running":
            running.setdefault(job.agent, []).append(job.id)
            if job.post_agent and job.post_agent != job.agent:
                running.setdefault(job.post_agent, []).append(job.id)
    now = time.monotonic()
    return [agent_view(a, running.get(a.name, []), link_views(pool, a.name, now)) for a in pool]


def video_models(pool: AgentPool) -> list[dict[str, Any]]:
    """The complete video models the agents report: name, kind, size rules (for the submit form)."""
    found: dict[str, dict[str, Any]] = {}
    for agent in pool:
        for m in agent.info.models if agent.info is not None else ():
            if not m.complete or m.model_kind == pb.MODEL_KIND_UPSCALE or m.name in found:
                continue
            kind = {pb.MODEL_KIND_T2V: "t2v", pb.MODEL_KIND_I2V: "i2v"}.get(m.model_kind, "t2v+i2v")
            found[m.name] = {"name": m.name, "kind": kind, "spatial": m.size_multiple or 16,
                             "temporal": m.frame_step or 4, "max_positions": m.max_positions or 1024}
    return sorted(found.values(), key=lambda m: m["name"])
