"""One thread that post-processes claimed frame folders and videos, one at a time (bounded memory)."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from artifex_agent.config import AgentConfig, ClusterConfig
from artifex_agent.errors import ConfigError
from artifex_agent.jobspec import JobSpec
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.watcher import files, names
from artifex_agent.watcher.attempts import Attempts
from artifex_agent.watcher.claim import Claim
from artifex_agent.watcher.files import Refused, Retry
from artifex_agent.watcher.frames import FramePlan, plan_folder, plan_video, post_spec, stream_plan
from artifex_agent.watcher.ledger import Ledger, Record, item_key
from artifex_agent.watcher.names import Layout
from artifex_agent.watcher.submitter import describe, is_refusal
from artifex_agent.wire_enums import result_codec, result_encoder

logger = logging.getLogger(__name__)

# Agent answers that may change on another try; any other code refuses the input at once.
# Which of these count against the input is attempts.classify's to say.
RETRY_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
               grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DATA_LOSS,
               grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNKNOWN}


def post_agent(cluster: ClusterConfig) -> AgentConfig:
    """The agent frame folders go to: watcher.post_agent, else one preferring post, else one able to."""
    if cluster.watcher.post_agent:
        return cluster.agent(cluster.watcher.post_agent)
    for pick in (lambda a: "post" in a.prefer, lambda a: "post" in a.roles):
        for agent in cluster.agents:
            if pick(agent):
                return agent
    raise ConfigError("no agent has the role 'post'; set [watcher] post_agent")


@dataclass
class FrameWorker:
    """Takes claims from a queue; moves each to done/ (with NAME.result.txt) or failed/ (NAME.error.txt)."""

    cluster: ClusterConfig
    layout: Layout
    ledger: Ledger
    owner: str
    attempts: Attempts
    # Called with (claim, retry?) when a claim leaves the worker.
    on_finished: Callable[[Claim, bool], None] = lambda c, retry: None
    _queue: queue.Queue[Claim | None] = field(default_factory=queue.Queue)
    _thread: threading.Thread | None = None
    current: Claim | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="frames", daemon=True)
        self._thread.start()

    def put(self, c: Claim) -> None:
        self._queue.put(c)

    def stop(self, timeout: float | None = None) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while (c := self._queue.get()) is not None:
            self.current = c
            try:
                retry = not self.process(c)
            except Exception:  # quarantining it failed (failed/ not writable?): not the input's fault
                logger.exception("cannot move %s out of processing/; trying again later", c.relpath)
                self.attempts.back_off(c)
                retry = True
            finally:
                self.current = None
            self.on_finished(c, retry)

    def process(self, c: Claim) -> bool:
        """Post-process `c`, or quarantine it; False when it stays claimed for another try."""
        cfg = self.cluster.watcher
        key = ""
        plan: FramePlan | None = None
        self.attempts.started(c)
        try:
            problem = names.name_problem(c.name)
            if problem:
                raise Refused(problem)
            real = files.resolve_input(c.path, c.origin, self.layout.root)
            stem = c.name
            if real.is_dir():
                plan = plan_folder(real, self.layout.root, cfg)
            elif c.name.lower().endswith(names.VIDEO_SUFFIXES):
                side = files.sidecar_of(c)
                plan = plan_video(real, self.layout.root, cfg, sidecar=side if side.exists() else None,
                                  name=c.name)
                stem = Path(c.name).stem
            else:
                raise Refused("frames/ takes folders of numbered PNG/JPEG frames or a video file "
                              f"({', '.join(names.VIDEO_SUFFIXES)})")
            key = item_key(c.relpath, plan.content_hash)
            rec = self.ledger.get(key)
            if rec is not None and rec.state == "done":
                logger.info("%s was already post-processed: %s", c.relpath, rec.detail.replace("\n", ", "))
                self._done(c, rec, rec.detail)
                self.attempts.finished(c, through=False)
                return True
            rec = self.ledger.record(Record(key, c.relpath, plan.content_hash, "frames", "submitted",
                                            job_state="running", location=str(c.path), owner=self.owner))
            spec = post_spec(plan, stem, cfg, job_id=f"drop-{key[:16]}")
            logger.info("post-processing %s: %d frames %dx%d -> %s", c.relpath, plan.count, plan.width,
                        plan.height, spec.output_name)
            shared = self._shared_path(real)
            if shared is not None:
                detail = self._through_coordinator(plan, spec, shared, key)
            else:
                detail = _result_text(asyncio.run(self._send(plan, spec)))
            self._done(c, rec, detail)
            self.attempts.finished(c, through=True)
            return True
        except Refused as exc:
            reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - whose fault it is decides (attempts.classify)
            if isinstance(exc, grpc.aio.AioRpcError) and exc.code() not in RETRY_CODES:
                reason = f"the post agent refused it: {describe(exc)}"
            else:
                cause: Exception = exc
                if isinstance(exc, OSError) and not c.path.exists() and not c.path.is_symlink():
                    cause = Retry(f"{c.path} vanished: {exc}")  # taken over or removed: not the input's fault
                outcome = self.attempts.failed(c, cause)
                if not outcome.reason:
                    return False
                reason = outcome.reason
        self._fail(c, key, plan, reason)
        self.attempts.finished(c, through=False)
        return True

    def _shared_path(self, real: Path) -> str | None:
        """`real` relative to a post agent's inputs root (the shared cache), or None when it lies under none."""
        for agent in self.cluster.agents:
            if "post" in agent.roles and real.resolve().is_relative_to(agent.inputs_root.resolve()):
                return real.resolve().relative_to(agent.inputs_root.resolve()).as_posix()
        return None

    def _through_coordinator(self, plan: FramePlan, spec: pb.PostSpec, shared: str, key: str) -> str:
        """A post-only job at the coordinator (queued, retried, failed over); its outcome as the result note.

        The same input gets the same job (idempotency key), so a restart waits for the job it
        submitted before. A job that failed for good makes the input Refused (to failed/).
        """
        from artifex_agent.client import JobsClient

        job_spec = post_only_spec(plan, spec, shared)
        with JobsClient.from_config(self.cluster) as client:
            try:
                job_id = client.submit(job_spec, idempotency_key=f"drop-{key}")
            except Exception as exc:
                if is_refusal(exc):
                    raise Refused(f"the coordinator refused it: {describe(exc)}") from None
                raise  # the coordinator is away or busy: attempts.classify says when to try again
            logger.info("%s submitted as post-only job %s (%s)", plan.label, job_id, shared)
            job = client.wait(job_id)
        if job.state != "done":
            raise Refused(f"job {job_id} {job.state}: {job.error or 'no reason given'}")
        lines = [*job.outputs, "", f"job: {job_id}  frames: {plan.count}"]
        lines += [f"sha256: {digest}" for digest in job.sha256]
        return "\n".join(lines) + "\n"

    async def _send(self, plan: FramePlan, spec: pb.PostSpec) -> pb.PostResult:
        from artifex_agent.transport.channel import AgentStub, open_channel

        agent = post_agent(self.cluster)
        channel = open_channel(agent.dial_address, self.cluster.security)
        try:
            stub = AgentStub(channel, self.cluster.security.secrets.token)
            return await stream_plan(stub, plan, spec, chunk_bytes=self.cluster.network.chunk_bytes)
        finally:
            await channel.close()

    def _done(self, c: Claim, rec: Record, detail: str) -> None:
        dest = files.move_unique(c.path, self.layout.done, c.name, rec.key[:8])
        side = files.sidecar_of(c)
        if side.exists():
            files.move_unique(side, self.layout.done, files.side_name(c.name), rec.key[:8])
        files.write_note(dest.with_name(dest.name + names.RESULT_SUFFIX), detail)
        self.ledger.update(rec.key, state="done", job_state="done", location=str(dest), detail=detail.strip())
        logger.info("%s done -> %s", c.relpath, detail.strip().splitlines()[0] if detail.strip() else "")

    def _fail(self, c: Claim, key: str, plan: FramePlan | None, reason: str) -> None:
        tag = (key or c.token)[:8]
        dest = files.quarantine(c, self.layout, reason, self.owner, tag=tag)
        if key:
            state = "failed" if self.ledger.get(key) else "quarantined"
            self.ledger.record(Record(key, c.relpath, plan.content_hash if plan else "", "frames", state,  # type: ignore[arg-type]
                                      job_state=state, location=str(dest), detail=reason, owner=self.owner))
        else:
            # Refused before it could be hashed: remember it under its claim token.
            self.ledger.record(Record(item_key(c.relpath, c.token), c.relpath, "", "frames", "quarantined",
                                      location=str(dest), detail=reason, owner=self.owner))


def post_only_spec(plan: FramePlan, spec: pb.PostSpec, shared: str) -> JobSpec:
    """The coordinator's post-only job for a checked input at `shared` (relative to the inputs root)."""
    o = plan.options
    return JobSpec.from_dict({"prompts": [], "post_input": shared, "upscale": o.upscale,
                              "upscale_model": o.upscale_model, "codec": o.codec, "crf": o.crf,
                              "encode_preset": o.preset, "encoder": o.encoder, "fps": plan.fps,
                              "output": spec.output_name})


def _result_text(result: pb.PostResult) -> str:
    lines = [*result.output_paths, "",
             f"frames: {result.frames}  size: {result.width}x{result.height}  codec: {result_codec(result)} "
             f"({result_encoder(result)})  bytes: {result.output_bytes}"]
    lines += [f"sha256: {digest}" for digest in result.sha256]
    return "\n".join(lines) + "\n"
