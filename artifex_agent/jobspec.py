"""A job as a user describes it (CLI flags, drop-folder files, the Jobs API), validated once."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from artifex_agent.errors import RequestError
from artifex_agent.lora_ref import LoraRef, check_loras, check_scheduler
from artifex_agent.vocabulary import (
    CODEC_NAMES,
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

_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", list: "a list of strings",
               dict: "a table of strings", bytes: "bytes (base64 in JSON)"}
# Fields a generation preset may set (artifex_agent/presets.py); a preset sets no others.
PRESET_FIELDS = ("steps", "guidance", "guidance_2", "loras", "scheduler", "shift", "boundary_ratio")
MAX_SHIFT = 100.0


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
    # The fields a client set (from_dict's keys); None: those that differ from their defaults. A
    # preset fills only the others, so they travel unset (spec_to_pb) until the preset is resolved.
    _given: frozenset[str] | None = field(default=None, repr=False, compare=False)

    # Fields that do not change the pixels of the output.
    _RUN_ONLY = ("priority", "split", "decode_on", "tags", "output")

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

    def validate(self) -> JobSpec:
        """Cheap checks any client can run; agents check model-specific limits again."""
        self._check_types()
        if (not self.prompts and not self.post_input) or not all(p.strip() for p in self.prompts):
            raise RequestError("a job needs at least one non-empty prompt")
        self._check_sizes()
        check_seeds(clip_seeds(self.seed, len(self.prompts)))
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.model or ""):
            raise RequestError(f"model name {self.model!r} must be a folder name (letters, digits, . _ -)")
        for name, value, lo, hi in (("width", self.width, 16, 4096), ("height", self.height, 16, 4096),
                                    ("frames", self.frames, 1, 1001), ("steps", self.steps, 1, 200),
                                    ("upscale", self.upscale, 1, 8), ("crf", self.crf, 0, 63)):
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise RequestError(f"{name} must be an integer within {lo}..{hi}; got {value!r}")
        if self.frames % 4 != 1:
            raise RequestError(f"frames must be 4k+1 (e.g. 81); got {self.frames}")
        if not all(math.isfinite(v) for v in (self.guidance, self.guidance_2, self.fps, self.shift,
                                              self.boundary_ratio)):
            raise RequestError("guidance, guidance_2, fps, shift and boundary_ratio must be finite numbers")
        if self.guidance < 1.0 or (self.guidance_2 and self.guidance_2 < 1.0):
            raise RequestError("guidance must be at least 1.0")
        if not 1.0 <= self.fps <= 240.0:
            raise RequestError(f"fps must be within 1..240; got {self.fps}")
        self.codec = canonical_codec(self.codec)
        choices: tuple[tuple[str, str, tuple[str, ...]], ...] = (
            ("codec", self.codec, CODEC_NAMES), ("encoder", self.encoder, ENCODERS), ("split", self.split, SPLITS),
            ("decode_on", self.decode_on, DECODE_ON))
        for name, choice, allowed in choices:
            if choice not in allowed:
                raise RequestError(f"{name} {choice!r} is not one of {', '.join(allowed)}")
        check_sampling(self.loras, self.scheduler, self.shift, self.boundary_ratio)
        if self.image and self.image_data:
            raise RequestError("give the i2v image as a path (image) or as its bytes (image_data), not both")
        if self.preset and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.preset):
            raise RequestError(f"preset name {self.preset!r} must be a plain name (letters, digits, . _ -)")
        if self.split == "cfg" and self.guidance <= 1.0:
            raise RequestError("split 'cfg' needs guidance > 1 (with guidance 1 there is no unconditional pass)")
        for name, text in (("output", self.output), ("image", self.image), ("upscale_model", self.upscale_model),
                           ("post_input", self.post_input)):
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
        for i, ref in enumerate(self.loras):
            if not isinstance(ref, LoraRef):
                raise RequestError(f"loras[{i}] must be NAME[:STRENGTH[:high|low|both]] or a table")
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
        for name in ("preset", "encode_preset", "scheduler"):
            _check_text(name, getattr(self, name), MAX_NAME_BYTES)
        for name in ("output", "image", "upscale_model", "post_input"):
            text = getattr(self, name)
            _check_text(name, text, MAX_PATH_CHARS)
            if any(ord(c) < 32 for c in text):
                raise RequestError(f"{name} {text[:80]!r} holds control characters")
            for part in re.split(r"[\\/]", text):
                if len(part.encode()) > MAX_NAME_BYTES:
                    raise RequestError(f"{name}: the name {part[:40]!r}... is {len(part.encode())} bytes; "
                                       f"each folder or file name may have at most {MAX_NAME_BYTES}")
        if len(self.image_data) > MAX_IMAGE_BYTES:
            raise RequestError(f"the i2v image is {len(self.image_data):,} bytes; the limit is {MAX_IMAGE_BYTES:,}")
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
        if isinstance(raw.get("image_data"), str):
            raw["image_data"] = _unbase64(raw["image_data"])
        if isinstance(raw.get("loras"), (str, dict)):
            raise RequestError("loras must be a list: loras = [\"NAME:STRENGTH:high\", ...]")
        return cls(**raw, _given=frozenset(raw)).validate()

    def to_dict(self) -> dict[str, Any]:
        """Plain values (LoRAs as NAME:STRENGTH:EXPERT strings), as JSON and TOML write them."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}
        out["loras"] = [str(ref) for ref in self.loras]
        del out["image_data"]
        if not self.post_input:  # absent when unset, so a job's JSON and content key stay as they were
            del out["post_input"]
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
