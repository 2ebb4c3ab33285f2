"""Job files: parse and check, submit once, move to inbox/accepted/, write the outcome beside it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from artifex_agent.coordinator.job import TERMINAL
from artifex_agent.errors import RequestError
from artifex_agent.jobspec import MAX_IMAGE_BYTES, JobSpec
from artifex_agent.watcher import files, names
from artifex_agent.watcher.attempts import Attempts
from artifex_agent.watcher.claim import Claim
from artifex_agent.watcher.files import Refused
from artifex_agent.watcher.ledger import Ledger, Record, item_key
from artifex_agent.watcher.names import Layout
from artifex_agent.watcher.submitter import JobSubmitter, ModelLookup, describe, is_refusal

logger = logging.getLogger(__name__)

# A job description is a few hundred bytes; the cap is above the largest legal JobSpec (README, Limits).
MAX_JOB_BYTES = 2 << 20  # the largest legal JobSpec is about 1.2 MB even in 4-byte UTF-8
# A JobSpec nests two levels (the file's table, then tags or prompts); the parsers recurse per level.
MAX_JOB_DEPTH = 8

# submitted: the coordinator took it just now; settled: accepted or quarantined without it;
# retry / pause: try again later (pause: the coordinator looks down for everyone).
Result = Literal["submitted", "settled", "retry", "pause"]


def parse_job(data: bytes, name: str) -> JobSpec:
    """The JobSpec a job file describes; Refused with a reason a person can act on."""
    if len(data) > MAX_JOB_BYTES:
        raise Refused(f"it is {len(data):,} bytes; a job file is a small .toml or .json (at most {MAX_JOB_BYTES:,})")
    try:
        text = data.decode("utf-8-sig")  # Notepad may start the file with a byte-order mark
    except UnicodeDecodeError as exc:
        raise Refused(f"it is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    too_deep = Refused(f"it is nested more than {MAX_JOB_DEPTH} levels deep; a job file is one table of fields")
    raw: Any
    if name.lower().endswith(".toml"):
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise Refused(f"it is not valid TOML: {exc}") from None
        except RecursionError:
            raise too_deep from None
    else:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise Refused(f"it is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        except RecursionError:
            raise too_deep from None
        if not isinstance(raw, dict):
            raise Refused("the JSON must be one object of job fields, e.g. {\"prompt\": \"a fox\"}")
    if _depth(raw) > MAX_JOB_DEPTH:
        raise too_deep
    try:
        return JobSpec.from_dict(raw)
    except (RequestError, TypeError) as exc:
        raise Refused(str(exc)) from None


def _depth(value: Any) -> int:
    """How deep lists and tables nest in `value` (without recursion; stops once past the limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= MAX_JOB_DEPTH:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


@dataclass
class JobFiles:
    """Everything a job file goes through after it was claimed."""

    layout: Layout
    ledger: Ledger
    submitter: JobSubmitter
    owner: str
    attempts: Attempts
    models: ModelLookup | None = None

    def process(self, c: Claim) -> Result:
        """Submit (once) and accept, or quarantine; a failure is retried as `attempts` says."""
        key = content = ""
        self.attempts.started(c)
        try:
            real = files.resolve_input(c.path, c.origin, self.layout.root)
            problem = names.name_problem(c.name)
            if problem:
                raise Refused(problem)
            if real.is_dir():
                raise Refused("it is a folder; inbox/ takes job files (.toml or .json), frame folders go into frames/")
            if not c.name.lower().endswith(names.JOB_SUFFIXES):
                raise Refused("only .toml and .json job files are read from inbox/ (see docs/watcher.md)")
            data = files.read_limited(real, MAX_JOB_BYTES, "a job file (a small .toml or .json)", label="it")
            spec = parse_job(data, c.name)
            spec, image = self._attach_image(spec)
            # The image is part of the input: a changed image is a new job, as a changed file is.
            content = hashlib.sha256(data + spec.image_data).hexdigest()
            key = item_key(c.relpath, content)
            rec = self.ledger.get(key)
            if rec is not None and rec.job_id:
                # Submitted before a crash or a restart (or the same file dropped again): no second job.
                logger.info("%s was already submitted as job %s", c.relpath, rec.job_id)
                self._accept(c, rec, image)
                self.attempts.finished(c, through=False)
                return "settled"
            self._check_model(spec)
            rec = self.ledger.record(Record(key, c.relpath, content, "job", "claimed",
                                            location=str(c.path), owner=self.owner))
            try:
                job_id = self.submitter.submit(spec, idempotency_key=f"drop-{key}")
            except Exception as exc:
                if is_refusal(exc):
                    raise Refused(f"the coordinator refused it: {describe(exc)}") from None
                raise
            self.ledger.update(key, state="submitted", job_id=job_id, job_state="queued")
            rec.job_id, rec.state = job_id, "submitted"
            logger.info("submitted %s as job %s", c.relpath, job_id)
            self._accept(c, rec, image)
            self.attempts.finished(c, through=True)
            return "submitted"
        except Refused as exc:
            reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - whose fault it is decides (attempts.classify)
            outcome = self.attempts.failed(c, exc)
            if not outcome.reason:
                return "pause" if outcome.pause else "retry"
            reason = outcome.reason
        self.quarantine(c, reason, key, content)
        return "settled"

    def quarantine(self, c: Claim, reason: str, key: str = "", content: str = "") -> None:
        """Move `c` to failed/ with `reason` beside it, and remember it as quarantined."""
        dest = files.quarantine(c, self.layout, reason, self.owner, tag=(key or c.token)[:8])
        # Refused before it could be read: remembered under its claim token, so --status counts it.
        self.ledger.record(Record(key or item_key(c.relpath, c.token), c.relpath, content, "job", "quarantined",
                                  location=str(dest), detail=reason, owner=self.owner))
        self.attempts.finished(c, through=False)

    def _check_model(self, spec: JobSpec) -> None:
        known = self.models() if self.models else None
        if known is not None and spec.model not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise Refused(f"no agent has the model {spec.model!r} (they have: {listed})")

    def _attach_image(self, spec: JobSpec) -> tuple[JobSpec, Path | None]:
        """An i2v job whose `image` names a file in inbox/ beside it: the image's bytes go with the job.

        No shared path is assumed: whichever agent generates receives the bytes. Any other `image`
        keeps its old meaning (a path under the agents' inputs folder).
        """
        name = spec.image
        if not name or "/" in name or "\\" in name or not names.is_job_image(name):
            return spec, None
        path = self.layout.inbox / name
        if not path.is_file() or path.is_symlink():
            return spec, None
        data = files.read_limited(path, MAX_IMAGE_BYTES, "an i2v image sent with a job", label=name)
        return dataclasses.replace(spec, image="", image_data=data), path

    def _accept(self, c: Claim, rec: Record, image: Path | None = None) -> None:
        """Move the claimed file to inbox/accepted/ with NAME.job holding the job id (and its image beside it)."""
        acc = self.layout.accepted
        acc.mkdir(parents=True, exist_ok=True)
        name = names.unique_name(acc, c.name, rec.key[:8])
        # The id is written first: a crash between the two steps leaves the file in processing/,
        # where the restart finds it and, through the ledger, the same job id.
        files.write_note(acc / (name + names.JOB_ID_SUFFIX), rec.job_id + "\n")
        self.ledger.update(rec.key, location=str(acc / name))
        c.path.rename(acc / name)
        if image is not None and image.exists():
            files.move_unique(image, acc, image.name, rec.key[:8])
        if rec.state in ("done", "failed"):
            # The same file dropped again after its job ended: the outcome goes beside this copy too.
            rec.location = str(acc / name)
            self._finish(rec, rec.state, rec.detail + "\n", rec.job_state)

    def poll(self) -> int:
        """Look up unfinished jobs; write NAME.result.txt or NAME.error.txt when one ends; returns how many run."""
        running = self.ledger.in_state("submitted", kind="job")
        left = len(running)
        for rec in running:
            try:
                job = self.submitter.get(rec.job_id)
            except Exception as exc:  # noqa: BLE001 - classified below
                if is_refusal(exc):
                    self._finish(rec, "failed", f"the coordinator no longer knows job {rec.job_id}: {describe(exc)}")
                    left -= 1
                    continue
                logger.info("cannot look up job %s yet: %s", rec.job_id, describe(exc))
                return left
            self.attempts.answered("job")
            state = str(job.state)
            if state in TERMINAL:
                if state == "done":
                    self._finish(rec, "done", "\n".join(job.outputs) + "\n")
                else:
                    self._finish(rec, "failed", f"job {rec.job_id} {state}: {job.error or 'no reason given'}",
                                 job_state=state)
                left -= 1
            elif state != rec.job_state:
                self.ledger.update(rec.key, job_state=state)
        return left

    def _finish(self, rec: Record, state: str, detail: str, job_state: str = "") -> None:
        where = Path(rec.location)
        if state == "done":
            files.write_note(where.with_name(where.name + names.RESULT_SUFFIX), detail)
            logger.info("job %s (%s) done: %s", rec.job_id, rec.relpath, detail.strip().replace("\n", ", "))
        else:
            hint = "Read the reason above; fix the job and drop it into inbox/ again (a changed file is a new job)."
            files.write_note(where.with_name(where.name + names.ERROR_SUFFIX),
                             files.error_text(rec.relpath, detail, self.owner, hint=hint))
            logger.warning("job %s (%s) %s", rec.job_id, rec.relpath, detail)
        self.ledger.update(rec.key, state=state, job_state=job_state or state, detail=detail.strip())
