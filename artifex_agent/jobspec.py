"""A job as a user describes it (CLI flags, drop-folder files, the Jobs API), validated once."""

from __future__ import annotations

import dataclasses
import hashlib
import json
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
        if not self.prompts or not all(isinstance(p, str) and p.strip() for p in self.prompts):
            raise RequestError("a job needs at least one non-empty prompt")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.model or ""):
            raise RequestError(f"model name {self.model!r} must be a folder name (letters, digits, . _ -)")
        for name, value, lo, hi in (("width", self.width, 16, 4096), ("height", self.height, 16, 4096),
                                    ("frames", self.frames, 1, 1001), ("steps", self.steps, 1, 200),
                                    ("upscale", self.upscale, 1, 8), ("crf", self.crf, 0, 63)):
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise RequestError(f"{name} must be an integer within {lo}..{hi}; got {value!r}")
        if self.frames % 4 != 1:
            raise RequestError(f"frames must be 4k+1 (e.g. 81); got {self.frames}")
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
        if isinstance(raw["prompts"], str) or not isinstance(raw["prompts"], list):
            raise RequestError("'prompts' must be a list of strings")
        defaults = cls(prompts=["x"])
        for key, value in raw.items():
            want = type(getattr(defaults, key))
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                raw[key] = float(value)
            elif want is not list and want is not dict and not isinstance(value, want):
                raise RequestError(f"field {key!r} must be {want.__name__}; got {type(value).__name__}")
        if not isinstance(raw.get("tags", {}), dict):
            raise RequestError("'tags' must be a table of strings")
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
