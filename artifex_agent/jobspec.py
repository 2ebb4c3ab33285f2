"""A job as a user describes it (CLI flags, drop-folder files, the Jobs API), validated once."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from artifex_agent.errors import RequestError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb

CODECS = ("h264", "hevc", "h265", "av1", "vp9")
ENCODERS = ("auto", "software", "nvenc")
SPLITS = ("none", "experts", "cfg", "auto")
DECODE_ON = ("generate", "post")

# Limits on what one job may carry (README "Limits"). They keep a job's message small (a List
# page holds many), every name within what file systems accept, and prompts well beyond what
# Wan reads: its umT5 encoder keeps 512 tokens, about 2,000 characters of English.
MAX_PROMPTS = 32  # one clip each
MAX_PROMPT_CHARS = 8192  # each prompt, and the negative prompt
# model, preset, and each folder or file name in output, image, upscale_model: NAME_MAX is
# 255 bytes, and an output name still gets suffixes (clip number, ".mp4", a temporary suffix).
MAX_NAME_BYTES = 128
MAX_PATH_CHARS = 512  # output, image, upscale_model as a whole
MAX_TAGS = 32
MAX_TAG_KEY_CHARS = 64
MAX_TAG_VALUE_CHARS = 1024
MAX_IDEMPOTENCY_KEY_CHARS = 200

_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", list: "a list of strings",
               dict: "a table of strings"}


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
    # i2v: a path under the generating agent's inputs root (the drop folder copies images there).
    image: str = ""
    upscale: int = 1
    upscale_model: str = ""
    codec: Literal["h264", "hevc", "h265", "av1", "vp9"] = "h264"
    crf: int = 18
    preset: str = ""
    encoder: Literal["auto", "software", "nvenc"] = "auto"
    # Output name under the post agent's output root (no "..", not absolute); empty: from the job id.
    output: str = ""
    # How to run it (not part of the output's identity).
    priority: int = 0
    split: Literal["none", "experts", "cfg", "auto"] = "none"
    decode_on: Literal["generate", "post"] = "generate"
    tags: dict[str, str] = field(default_factory=dict)

    # Fields that do not change the pixels of the output.
    _RUN_ONLY = ("priority", "split", "decode_on", "tags", "output")

    def validate(self) -> JobSpec:
        """Cheap checks any client can run; agents check model-specific limits again."""
        self._check_types()
        if not self.prompts or not all(p.strip() for p in self.prompts):
            raise RequestError("a job needs at least one non-empty prompt")
        self._check_sizes()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.model or ""):
            raise RequestError(f"model name {self.model!r} must be a folder name (letters, digits, . _ -)")
        for name, value, lo, hi in (("width", self.width, 16, 4096), ("height", self.height, 16, 4096),
                                    ("frames", self.frames, 1, 1001), ("steps", self.steps, 1, 200),
                                    ("upscale", self.upscale, 1, 8), ("crf", self.crf, 0, 63)):
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise RequestError(f"{name} must be an integer within {lo}..{hi}; got {value!r}")
        if self.frames % 4 != 1:
            raise RequestError(f"frames must be 4k+1 (e.g. 81); got {self.frames}")
        if not all(math.isfinite(v) for v in (self.guidance, self.guidance_2, self.fps)):
            raise RequestError("guidance, guidance_2 and fps must be finite numbers")
        if self.guidance < 1.0 or (self.guidance_2 and self.guidance_2 < 1.0):
            raise RequestError("guidance must be at least 1.0")
        if not 1.0 <= self.fps <= 240.0:
            raise RequestError(f"fps must be within 1..240; got {self.fps}")
        choices: tuple[tuple[str, str, tuple[str, ...]], ...] = (
            ("codec", self.codec, CODECS), ("encoder", self.encoder, ENCODERS), ("split", self.split, SPLITS),
            ("decode_on", self.decode_on, DECODE_ON))
        for name, choice, allowed in choices:
            if choice not in allowed:
                raise RequestError(f"{name} {choice!r} is not one of {', '.join(allowed)}")
        if self.split == "cfg" and self.guidance <= 1.0:
            raise RequestError("split 'cfg' needs guidance > 1 (with guidance 1 there is no unconditional pass)")
        for name, text in (("output", self.output), ("image", self.image), ("upscale_model", self.upscale_model)):
            if text and (".." in Path(text.replace("\\", "/")).parts or Path(text).is_absolute()
                         or re.match(r"^[A-Za-z]:|^[\\/]", text)):
                raise RequestError(f"{name} {text!r} must be a relative name without '..'")
        return self

    def _check_types(self) -> None:
        """Wrong types refused with the field named (a TOML `[tags] x = 1` must not reach the wire)."""
        for name, want in _TYPES.items():
            value = getattr(self, name)
            if want is float and type(value) is int:
                setattr(self, name, float(value))
            elif not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise RequestError(f"field {name!r} must be {_TYPE_WORDS[want]}; got {type(value).__name__}")
        for i, prompt in enumerate(self.prompts):
            if not isinstance(prompt, str):
                raise RequestError(f"prompts[{i}] must be a string; got {type(prompt).__name__}")
        for key, value in self.tags.items():
            if not isinstance(key, str):
                raise RequestError(f"tag names must be strings; got {type(key).__name__}")
            if not isinstance(value, str):
                raise RequestError(f"tags[{key!r}] must be a string; got {type(value).__name__} (quote the value)")

    def _check_sizes(self) -> None:
        """Every string and list bounded (README "Limits"), so no job can outgrow a message."""
        if len(self.prompts) > MAX_PROMPTS:
            raise RequestError(f"a job takes at most {MAX_PROMPTS} prompts (one clip each); got {len(self.prompts)}")
        for i, prompt in enumerate(self.prompts):
            _check_text(f"prompts[{i}]", prompt, MAX_PROMPT_CHARS)
        _check_text("negative", self.negative, MAX_PROMPT_CHARS)
        _check_text("model", self.model, MAX_NAME_BYTES)
        _check_text("preset", self.preset, MAX_NAME_BYTES)
        for name in ("output", "image", "upscale_model"):
            text = getattr(self, name)
            _check_text(name, text, MAX_PATH_CHARS)
            if any(ord(c) < 32 for c in text):
                raise RequestError(f"{name} {text[:80]!r} holds control characters")
            for part in re.split(r"[\\/]", text):
                if len(part.encode()) > MAX_NAME_BYTES:
                    raise RequestError(f"{name}: the name {part[:40]!r}... is {len(part.encode())} bytes; "
                                       f"each folder or file name may have at most {MAX_NAME_BYTES}")
        if len(self.tags) > MAX_TAGS:
            raise RequestError(f"a job takes at most {MAX_TAGS} tags; got {len(self.tags)}")
        for key, value in self.tags.items():
            _check_text(f"tag name {key[:40]!r}", key, MAX_TAG_KEY_CHARS)
            _check_text(f"tags[{key!r}]", value, MAX_TAG_VALUE_CHARS)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> JobSpec:
        """From a parsed TOML/JSON table; unknown fields and wrong types are errors."""
        if not isinstance(raw, dict):
            raise RequestError("a job must be a table of fields")
        raw = dict(raw)
        if "prompt" in raw:
            if "prompts" in raw:
                raise RequestError("give 'prompt' or 'prompts', not both")
            raw["prompts"] = [raw.pop("prompt")]
        if "size" in raw:
            m = re.fullmatch(r"(\d+)x(\d+)", str(raw.pop("size")))
            if not m:
                raise RequestError("size must look like 1280x720")
            raw["width"], raw["height"] = int(m.group(1)), int(m.group(2))
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.name.startswith("_")}
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise RequestError(f"unknown field(s): {', '.join(unknown)} (known: {', '.join(sorted(fields))})")
        if "prompts" not in raw:
            raise RequestError("missing field 'prompt' (or 'prompts')")
        return cls(**raw).validate()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}

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
        return cls(**json.loads(text))

    def content_key(self) -> str:
        """sha256 of everything that determines the output's pixels and encoding (the results cache key)."""
        identity = {k: v for k, v in self.to_dict().items() if k not in self._RUN_ONLY}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def batch_key(self) -> tuple[Any, ...]:
        """Jobs with the same key can share one pipeline call (same model, size, frames, steps, guidance)."""
        return (self.model, self.width, self.height, self.frames, self.steps, self.guidance, self.guidance_2,
                self.negative, self.image)

    def generate_request(self, *, job_id: str = "", prompts: list[str] | None = None,
                         output: pb.PayloadKind = pb.PAYLOAD_KIND_RGB24) -> pb.GenerateRequest:
        return pb.GenerateRequest(
            model=self.model, task=pb.TASK_I2V if self.image else pb.TASK_T2V, prompts=prompts or self.prompts,
            negative_prompt=self.negative, width=self.width, height=self.height, num_frames=self.frames,
            steps=self.steps, guidance_scale=self.guidance, guidance_scale_2=self.guidance_2, seed=self.seed,
            fps=self.fps, image_path=self.image, output=output, job_id=job_id)

    def post_spec(self, output_name: str, *, job_id: str = "", split_clips: bool | None = None) -> pb.PostSpec:
        return pb.PostSpec(output_name=output_name, upscale=self.upscale, upscale_model=self.upscale_model,
                           codec=self.codec, crf=self.crf, preset=self.preset, fps=self.fps, encoder=self.encoder,
                           encode=True, job_id=job_id,
                           split_clips=len(self.prompts) > 1 if split_clips is None else split_clips)


_TYPES: dict[str, type] = {name: type(value) for name, value in JobSpec(prompts=[""]).to_dict().items()}


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
