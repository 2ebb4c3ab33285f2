"""A job as a user describes it (CLI flags, drop-folder files, the Jobs API), validated once."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from artifex_agent.engines.models import WAN_SIZE_RULES, SizeRules
from artifex_agent.errors import RequestError
from artifex_agent.lora_ref import LoraRef, check_loras, check_scheduler
from artifex_agent.vocabulary import (
    DECODE_ON,
    ENCODERS,
    MAX_NAME_BYTES,
    SPLITS,
    CodecName,
    DecodeOn,
    EncoderChoice,
    Split,
    canonical_codec,
    check_seeds,
    clip_seeds,
)

# Limits on what one job may carry (README "Limits"). They keep a job's message small (a List
# page holds many), every name within what file systems accept, and prompts well beyond what
# Wan reads: its umT5 encoder keeps 512 tokens, about 2,000 characters of English.
MAX_PROMPTS = 32  # one clip each
MAX_PROMPT_CHARS = 8192  # each prompt, and the negative prompt
# model, preset, encode_preset, scheduler, and each folder or file name in output, image, upscale_model are
# bounded by vocabulary.MAX_NAME_BYTES (the agents' limit too).
MAX_PATH_CHARS = 512  # output, image, upscale_model as a whole
# An i2v image carried with the job (image_data): one message holds it, and the coordinator's store keeps it.
MAX_IMAGE_BYTES = 16 << 20
MAX_TAGS = 32
MAX_TAG_KEY_CHARS = 64
MAX_TAG_VALUE_CHARS = 1024
MAX_IDEMPOTENCY_KEY_CHARS = 200
MAX_PREVIEW_EVERY = 200  # steps between live previews (docs/previews.md); as many as a job's steps may be

_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", list: "a list of strings",
               dict: "a table of strings", bytes: "bytes (base64 in JSON)"}
# Fields a generation preset may set (artifex_agent/presets.py); a preset sets no others.
PRESET_FIELDS = ("steps", "guidance", "guidance_2", "loras", "scheduler", "shift", "boundary_ratio")
MAX_SHIFT = 100.0


class JobProblems(RequestError):
    """Everything wrong with one job, each problem naming its field: one answer lists them all."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            super().__init__(self.problems[0])
        else:
            super().__init__(f"{len(self.problems)} problems with this job:\n"
                             + "\n".join(f"  - {p}" for p in self.problems))


class Problems:
    """Collects a job's problems as the checks find them, so a user fixes them in one go, not one per try."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, problem: str) -> None:
        self.items.append(problem)

    def run(self, check: Callable[..., object], *args: Any) -> None:
        """Run a check that raises RequestError, keeping its problem(s) instead."""
        try:
            check(*args)
        except JobProblems as exc:
            self.items.extend(exc.problems)
        except RequestError as exc:
            self.items.append(str(exc))

    def raise_any(self) -> None:
        if self.items:
            raise JobProblems(self.items)


class KnownModels(Protocol):
    """What the cluster's agents say about their models (the coordinator's AgentPool)."""

    def size_rules(self, model: str) -> SizeRules | None:
        """The model's size rules as an agent read them (None: no agent said)."""

    def job_problems(self, spec: JobSpec) -> list[str]:
        """Why no agent could run `spec` (unknown model, wrong kind...); empty when one could, or none has said."""


@dataclass
class JobSpec:
    """Everything that determines a job's output, plus how to run it."""

    prompts: list[str]
    model: str = "wan2.2-t2v-a14b"
    width: int = 1280
    height: int = 720
    frames: int = 81
    steps: int = 40
    guidance: float = 4.0
    guidance_2: float = 0.0
    negative: str = ""
    seed: int = 0
    fps: float = 16.0
    # i2v: a path under the generating agent's inputs root, or the image itself in image_data
    # (PNG/JPEG bytes that travel with the job to whichever agent generates it; not both).
    image: str = ""
    image_data: bytes = b""
    # A post-only job: a frame folder or video file relative to the post agents' inputs root (the
    # shared cache), upscaled and encoded there; nothing is generated and prompts may be empty.
    post_input: str = ""
    upscale: int = 1
    upscale_model: str = ""
    # A codec or its alias ("h265"); validate() keeps the codec it names ("hevc").
    codec: CodecName = "h264"
    crf: int = 18
    encode_preset: str = ""
    encoder: EncoderChoice = "auto"
    # Output name under the post agent's output root (no "..", not absolute); empty: from the job id.
    output: str = ""
    # How to run it (not part of the output's identity).
    priority: int = 0
    split: Split = "none"
    decode_on: DecodeOn = "generate"
    tags: dict[str, str] = field(default_factory=dict)
    # LoRAs under the agents' models_root/loras/ (artifex_agent/lora_ref.py), NAME[:STRENGTH[:high|low|both]].
    loras: list[LoraRef] = field(default_factory=list)
    # "": the model's own scheduler; "unipc"; "euler" (flow-match Euler, for step-distilled LoRAs).
    scheduler: str = ""
    # The scheduler's flow shift and the two-expert switch point (0: the model's own).
    shift: float = 0.0
    boundary_ratio: float = 0.0
    # A generation preset (artifex_agent/presets.py); the coordinator fills the fields left unset from it.
    preset: str = ""
    # A live preview every this many denoising steps (docs/previews.md); 0: none. Run-only: no pixel changes.
    preview_every: int = 0
    # The fields a client set (from_dict's keys); None: those that differ from their defaults. A
    # preset fills only the others, so they travel unset (spec_to_pb) until the preset is resolved.
    _given: frozenset[str] | None = field(default=None, repr=False, compare=False)

    # Fields that do not change the pixels of the output.
    _RUN_ONLY = ("priority", "split", "decode_on", "tags", "output", "preview_every")

    def __post_init__(self) -> None:
        if isinstance(self.loras, (list, tuple)):
            self.loras = [_lora(item, i) for i, item in enumerate(self.loras)]

    def given(self, name: str) -> bool:
        """Whether the client set this field: named in from_dict's table, or else different from its default."""
        if self._given is not None:
            return name in self._given
        return bool(getattr(self, name) != _DEFAULTS[name])

    def with_fields(self, **changes: Any) -> JobSpec:
        """A copy with `changes` applied, in which every field counts as given (a resolved preset)."""
        return dataclasses.replace(self, **changes, _given=frozenset(_DEFAULTS))

    def validate(self, cluster: KnownModels | None = None) -> JobSpec:
        """Cheap checks any client can run, every problem at once (JobProblems); agents check again.

        With `cluster` (the coordinator's agents) also the model's own size rules, and whether any agent has it.
        """
        self._check_types()
        found = Problems()
        if (not self.prompts and not self.post_input) or not all(p.strip() for p in self.prompts):
            found.add("a job needs at least one non-empty prompt")
        self._check_sizes(found)
        found.run(lambda: check_seeds(clip_seeds(self.seed, len(self.prompts))))
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.model or ""):
            found.add(f"model name {self.model!r} must be a folder name (letters, digits, . _ -)")
        in_range = set()
        for name, value, lo, hi in (("width", self.width, 16, 4096), ("height", self.height, 16, 4096),
                                    ("frames", self.frames, 1, 1001), ("steps", self.steps, 1, 200),
                                    ("upscale", self.upscale, 1, 8), ("crf", self.crf, 0, 63),
                                    ("preview_every", self.preview_every, 0, MAX_PREVIEW_EVERY)):
            if lo <= value <= hi:
                in_range.add(name)
            else:
                found.add(f"{name} must be an integer within {lo}..{hi}; got {value!r}")
        if {"width", "height", "frames"} <= in_range:
            rules = cluster.size_rules(self.model) if cluster is not None and not self.post_input else None
            for problem in (rules or WAN_SIZE_RULES).problems(self.width, self.height, self.frames, self.model):
                found.add(problem)
        if not all(math.isfinite(v) for v in (self.guidance, self.guidance_2, self.fps, self.shift,
                                              self.boundary_ratio)):
            found.add("guidance, guidance_2, fps, shift and boundary_ratio must be finite numbers")
        else:
            if self.guidance < 1.0 or (self.guidance_2 and self.guidance_2 < 1.0):
                found.add("guidance must be at least 1.0")
            if not 1.0 <= self.fps <= 240.0:
                found.add(f"fps must be within 1..240; got {self.fps}")
            if self.split == "cfg" and self.guidance <= 1.0:
                found.add("split 'cfg' needs guidance > 1 (with guidance 1 there is no unconditional pass)")
            found.run(lambda: check_sampling(self.loras, self.scheduler, self.shift, self.boundary_ratio))
        try:
            self.codec = canonical_codec(self.codec)
        except RequestError as exc:
            found.add(str(exc))
        choices: tuple[tuple[str, str, tuple[str, ...]], ...] = (
            ("encoder", self.encoder, ENCODERS), ("split", self.split, SPLITS),
            ("decode_on", self.decode_on, DECODE_ON))
        for name, choice, allowed in choices:
            if choice not in allowed:
                found.add(f"{name} {choice!r} is not one of {', '.join(allowed)}")
        if self.image and self.image_data:
            found.add("give the i2v image as a path (image) or as its bytes (image_data), not both")
        if self.preset and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.preset):
            found.add(f"preset name {self.preset!r} must be a plain name (letters, digits, . _ -)")
        for name, text in (("output", self.output), ("image", self.image), ("upscale_model", self.upscale_model),
                           ("post_input", self.post_input)):
            if text and (".." in Path(text.replace("\\", "/")).parts or Path(text).is_absolute()
                         or re.match(r"^[A-Za-z]:|^[\\/]", text)):
                found.add(f"{name} {text!r} must be a relative name without '..'")
        if cluster is not None:
            for problem in cluster.job_problems(self):
                found.add(problem)
        found.raise_any()
        return self

    def _check_types(self) -> None:
        """Wrong types refused with the field named (a TOML `[tags] x = 1` must not reach the wire)."""
        found = Problems()
        for name, want in _TYPES.items():
            value = getattr(self, name)
            if want is float and type(value) is int:
                setattr(self, name, float(value))
            elif not isinstance(value, want) or (want is int and isinstance(value, bool)):
                found.add(f"field {name!r} must be {_TYPE_WORDS[want]}; got {type(value).__name__}")
        for i, ref in enumerate(self.loras):
            if not isinstance(ref, LoraRef):
                found.add(f"loras[{i}] must be NAME[:STRENGTH[:high|low|both]] or a table")
        for i, prompt in enumerate(self.prompts if isinstance(self.prompts, list) else ()):
            if not isinstance(prompt, str):
                found.add(f"prompts[{i}] must be a string; got {type(prompt).__name__}")
        for key, value in (self.tags.items() if isinstance(self.tags, dict) else ()):
            if not isinstance(key, str):
                found.add(f"tag names must be strings; got {type(key).__name__}")
            elif not isinstance(value, str):
                found.add(f"tags[{key!r}] must be a string; got {type(value).__name__} (quote the value)")
        # The checks after this one compare and measure values: they need the right types.
        found.raise_any()

    def _check_sizes(self, found: Problems) -> None:
        """Every string and list bounded (README "Limits"), so no job can outgrow a message."""
        if len(self.prompts) > MAX_PROMPTS:
            found.add(f"a job takes at most {MAX_PROMPTS} prompts (one clip each); got {len(self.prompts)}")
        for i, prompt in enumerate(self.prompts):
            found.run(_check_text, f"prompts[{i}]", prompt, MAX_PROMPT_CHARS)
        found.run(_check_text, "negative", self.negative, MAX_PROMPT_CHARS)
        found.run(_check_text, "model", self.model, MAX_NAME_BYTES)
        for name in ("preset", "encode_preset", "scheduler"):
            found.run(_check_text, name, getattr(self, name), MAX_NAME_BYTES)
        for name in ("output", "image", "upscale_model", "post_input"):
            text = getattr(self, name)
            found.run(_check_text, name, text, MAX_PATH_CHARS)
            if any(ord(c) < 32 for c in text):
                found.add(f"{name} {text[:80]!r} holds control characters")
            for part in re.split(r"[\\/]", text):
                if len(part.encode(errors="replace")) > MAX_NAME_BYTES:
                    found.add(f"{name}: the name {part[:40]!r}... is {len(part.encode(errors='replace'))} bytes; "
                              f"each folder or file name may have at most {MAX_NAME_BYTES}")
        if len(self.image_data) > MAX_IMAGE_BYTES:
            found.add(f"the i2v image is {len(self.image_data):,} bytes; the limit is {MAX_IMAGE_BYTES:,}")
        if len(self.tags) > MAX_TAGS:
            found.add(f"a job takes at most {MAX_TAGS} tags; got {len(self.tags)}")
        for key, value in self.tags.items():
            found.run(_check_text, f"tag name {key[:40]!r}", key, MAX_TAG_KEY_CHARS)
            found.run(_check_text, f"tags[{key!r}]", value, MAX_TAG_VALUE_CHARS)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], cluster: KnownModels | None = None) -> JobSpec:
        """From a parsed TOML/JSON table; unknown fields, wrong types and bad values: every one in one JobProblems."""
        if not isinstance(raw, dict):
            raise RequestError("a job must be a table of fields")
        raw = dict(raw)
        found = Problems()
        if "prompt" in raw:
            if "prompts" in raw:
                found.add("give 'prompt' or 'prompts', not both")
                raw.pop("prompt")
            else:
                raw["prompts"] = [raw.pop("prompt")]
        if "size" in raw:
            size = raw.pop("size")
            m = re.fullmatch(r"(\d+)x(\d+)", str(size))
            if m:
                raw["width"], raw["height"] = int(m.group(1)), int(m.group(2))
            else:
                found.add(f"size must look like 1280x720; got {size!r}")
        fields = {f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")}
        unknown = sorted(set(raw) - fields)
        if unknown:
            found.add(_unknown_fields(unknown, fields))
            for name in unknown:
                raw.pop(name)
        if "prompts" not in raw:
            found.add("missing field 'prompt' (or 'prompts')")
            raw["prompts"] = ["-"]  # checked as if it had one, so the other problems are listed too
        if isinstance(raw.get("image_data"), str):
            try:
                raw["image_data"] = _unbase64(raw["image_data"])
            except RequestError as exc:
                found.add(str(exc))
                raw.pop("image_data")
        if isinstance(raw.get("loras"), (str, dict)):
            found.add("loras must be a list: loras = [\"NAME:STRENGTH:high\", ...]")
            raw.pop("loras")
        try:
            spec = cls(**raw, _given=frozenset(raw))
        except RequestError as exc:  # a LoRA that does not parse
            raise JobProblems([*found.items, str(exc)]) from None
        found.run(spec.validate, cluster)
        found.raise_any()
        return spec

    def to_dict(self) -> dict[str, Any]:
        """Plain values (LoRAs as NAME:STRENGTH:EXPERT strings), as JSON and TOML write them."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}
        out["loras"] = [str(ref) for ref in self.loras]
        del out["image_data"]
        if not self.post_input:  # absent when unset, so a job's JSON and content key stay as they were
            del out["post_input"]
        if not self.preview_every:  # likewise
            del out["preview_every"]
        if self.image_data:  # base64 for JSON; absent when empty, so a job's JSON stays as it was
            out["image_data"] = base64.b64encode(self.image_data).decode("ascii")
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise RequestError(f"job is not valid JSON: {exc}") from None

    @classmethod
    def from_stored(cls, text: str) -> JobSpec:
        """A spec the coordinator stored itself: not checked again, since limits may have tightened since."""
        raw = json.loads(text)
        if "encode_preset" not in raw:
            # Stored before generation presets: `preset` was the encoder's.
            raw["encode_preset"] = raw.pop("preset", "")
        raw["image_data"] = base64.b64decode(raw.get("image_data", ""))
        return cls(**raw)

    def content_key(self) -> str:
        """sha256 of everything that determines the output's pixels and encoding (the results cache key)."""
        identity = {k: v for k, v in self.to_dict().items() if k not in self._RUN_ONLY}
        # The image by its digest; a job without one keeps the key it had before image_data existed.
        identity.pop("image_data", None)
        if self.image_data:
            identity["image_sha256"] = self.image_digest()
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def batch_key(self) -> tuple[Any, ...]:
        """Jobs with the same key can share one pipeline call (same model, size, frames, steps, guidance, LoRAs...)."""
        return (self.model, self.width, self.height, self.frames, self.steps, self.guidance, self.guidance_2,
                self.negative, self.image, tuple(str(ref) for ref in self.loras), self.scheduler, self.shift,
                self.boundary_ratio, self.preset, self.image_digest())

    @property
    def i2v(self) -> bool:
        """An image-to-video job: its image named by path or carried as bytes."""
        return bool(self.image or self.image_data)

    def image_digest(self) -> str:
        """sha256 of image_data ("" without one)."""
        return hashlib.sha256(self.image_data).hexdigest() if self.image_data else ""



_DEFAULTS: dict[str, Any] = {f.name: getattr(JobSpec(prompts=[""]), f.name)
                             for f in dataclasses.fields(JobSpec) if not f.name.startswith("_")}
_TYPES: dict[str, type] = {name: type(value) for name, value in JobSpec(prompts=[""]).to_dict().items()}
_TYPES["image_data"] = bytes  # to_dict writes it as base64 text
_TYPES["post_input"] = str
_TYPES["preview_every"] = int


def check_sampling(loras: list[LoraRef] | tuple[LoraRef, ...], scheduler: str, shift: float,
                   boundary_ratio: float) -> None:
    """LoRAs, scheduler, shift and expert boundary as a job or a GenerateRequest carries them (0: the model's own)."""
    check_loras(loras)
    check_scheduler(scheduler)
    if not math.isfinite(shift) or (shift and not 0.0 < shift <= MAX_SHIFT):
        raise RequestError(f"shift must be within 0..{MAX_SHIFT:g} (0: the model's own); got {shift}")
    if not math.isfinite(boundary_ratio) or (boundary_ratio and not 0.0 < boundary_ratio < 1.0):
        raise RequestError(f"boundary_ratio must be between 0 and 1 (0: the model's own); got {boundary_ratio}")


def _lora(item: Any, i: int) -> LoraRef:
    """A LoRA as a job file or the wire writes it: "NAME[:STRENGTH[:EXPERT]]", a table, or a LoraRef."""
    if isinstance(item, LoraRef):
        return item
    if isinstance(item, str):
        return LoraRef.parse(item)
    if isinstance(item, dict):
        unknown = sorted(set(item) - {"name", "strength", "expert"})
        if unknown or not isinstance(item.get("name"), str):
            raise RequestError(f"loras[{i}]: a table takes name (required), strength, expert; "
                               f"got {', '.join(map(str, item)) or 'nothing'}")
        strength = item.get("strength", 1.0)
        if not isinstance(strength, (int, float)) or isinstance(strength, bool):
            raise RequestError(f"loras[{i}]: strength must be a number")
        expert = item.get("expert", "both")
        ref = LoraRef(item["name"], float(strength), expert)
        ref.validate()
        return ref
    raise RequestError(f"loras[{i}] must be NAME[:STRENGTH[:high|low|both]] or a table; got {type(item).__name__}")


# Names a job file may use besides JobSpec's fields (from_dict turns them into those).
ALIASES = ("prompt", "size")


def _unknown_fields(names: list[str], fields: set[str]) -> str:
    """The problem for unknown fields: the closest known name of each, and the whole list."""
    known = sorted(fields | set(ALIASES))
    hints = [f"{close[0]!r} for {name!r}" for name in names
             if (close := difflib.get_close_matches(name, known, n=1))]
    hint = f"; did you mean {', '.join(hints)}?" if hints else ""
    return f"unknown field(s): {', '.join(map(str, names))}{hint} (known: {', '.join(known)})"


def _unbase64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("image_data must be base64 text (or bytes)") from None


def _check_text(name: str, text: str, limit: int) -> None:
    if len(text) > limit:
        raise RequestError(f"{name} is {len(text):,} characters; the limit is {limit:,}")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise RequestError(f"{name} is not valid Unicode text (a lone surrogate?)") from None


def check_idempotency_key(key: str) -> str:
    """The key a client may resend a Submit with; RequestError when it is not a short string."""
    if not isinstance(key, str) or len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise RequestError(f"idempotency_key must be a string of at most {MAX_IDEMPOTENCY_KEY_CHARS} characters")
    return key
