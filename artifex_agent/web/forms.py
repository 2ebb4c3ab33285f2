"""The submit form: its fields to a JobSpec, and each validation problem put beside the field it names.

The checks themselves are JobSpec.validate's and the coordinator's (JobQueue.submit): the page only turns
form text into typed values and sorts the problems those checks report by the field they name.
"""

from __future__ import annotations

import io
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from artifex_agent.engines.models import SizeRules
from artifex_agent.jobspec import MAX_IMAGE_BYTES, JobSpec
from artifex_agent.vocabulary import CODEC_NAMES, MAX_SEED, SPLITS

# Sizes offered for a model (landscape, portrait, square); only those its size rules accept are shown.
SIZE_PRESETS = ((1280, 720), (720, 1280), (960, 960), (832, 480), (480, 832), (640, 640), (512, 512), (64, 64))
UPSCALES = (1, 2, 4)
# The page shows a live preview unless the form says 0 (docs/previews.md); the CLI's default is none.
PREVIEW_EVERY = 5
# Form fields, in the order they are shown; problems are placed beside the first one they name.
FIELDS = ("prompt", "negative", "model", "size", "width", "height", "frames", "steps", "guidance", "seed",
          "upscale", "codec", "split", "priority", "preview_every", "image")
# Words a problem may use for a field (JobSpec names them after its own fields).
_ALIASES = {"prompts": "prompt", "image_data": "image", "guidance_2": "guidance"}
_WORD = re.compile(r"[A-Za-z_]+")
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


@dataclass
class SubmitForm:
    """The form's values as typed (strings), and the problems found, by field ("" : not about one field)."""

    values: dict[str, str]
    problems: dict[str, list[str]] = field(default_factory=dict)
    image: bytes = b""

    def add(self, problem: str) -> None:
        self.problems.setdefault(field_of(problem), []).append(problem)

    @property
    def ok(self) -> bool:
        return not self.problems


def defaults(spec: JobSpec | None = None, model: str = "") -> dict[str, str]:
    """The form's values for a new job (a fresh random seed, shown) or for `spec` again with changes."""
    if spec is None:
        spec = JobSpec(prompts=[""], model=model or JobSpec.model, seed=secrets.randbelow(2**31),
                       preview_every=PREVIEW_EVERY)
    return {"prompt": spec.prompts[0] if spec.prompts else "", "negative": spec.negative, "model": spec.model,
            "size": f"{spec.width}x{spec.height}", "width": str(spec.width), "height": str(spec.height),
            "frames": str(spec.frames), "steps": str(spec.steps), "guidance": f"{spec.guidance:g}",
            "seed": str(spec.seed), "upscale": str(spec.upscale), "codec": spec.codec, "split": spec.split,
            "priority": str(spec.priority), "preview_every": str(spec.preview_every)}


def field_of(problem: str) -> str:
    """The form field a problem names first ("" when it names none)."""
    for word in _WORD.findall(problem):
        name = _ALIASES.get(word, word)
        if name in FIELDS and name != "size":
            return name
    return ""


def parse(values: dict[str, str], image: bytes, upload_limit: int) -> tuple[SubmitForm, JobSpec | None]:
    """The form's text as a JobSpec (not yet validated: the queue does that), or the fields that are not numbers."""
    form = SubmitForm(values)
    size = values.get("size", "custom")
    if size != "custom":
        width, _, height = size.partition("x")
        values["width"], values["height"] = width, height
    numbers: dict[str, Any] = {}
    for name, kind in (("width", int), ("height", int), ("frames", int), ("steps", int), ("guidance", float),
                       ("seed", int), ("upscale", int), ("priority", int), ("preview_every", int)):
        text = values.get(name, "").strip()
        if name == "preview_every" and not text:
            continue  # left empty (or a form from before previews): none
        try:
            numbers[name] = kind(text)
        except ValueError:
            form.add(f"{name} must be {'a whole number' if kind is int else 'a number'}; got {text[:40]!r}")
    if "seed" in numbers and not 0 <= numbers["seed"] <= MAX_SEED:
        form.add(f"seed must be within 0..{MAX_SEED}")
    if image:
        check_image(form, image, min(upload_limit, MAX_IMAGE_BYTES))
    if not form.ok:
        return form, None
    spec = JobSpec(prompts=[values.get("prompt", "")], negative=values.get("negative", ""),
                   model=values.get("model", ""), codec=values.get("codec", "h264"),  # type: ignore[arg-type]
                   split=values.get("split", "none"), image_data=image, **numbers)  # type: ignore[arg-type]
    return form, spec


def check_image(form: SubmitForm, data: bytes, limit: int) -> None:
    """An i2v upload: at most `limit` bytes, and a PNG or JPEG that decodes (nothing else is kept)."""
    if len(data) > limit:
        form.add(f"image is {len(data) / 2**20:.1f} MiB; the limit is {limit / 2**20:.0f} MiB")
        return
    if not data.startswith(_IMAGE_MAGIC):
        form.add("image must be a PNG or JPEG file")
        return
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        form.add(f"image does not decode as a PNG or JPEG ({exc})")


def sizes_for(rules: SizeRules) -> list[str]:
    """The presets a model's size rules accept, as "WxH"."""
    return [f"{w}x{h}" for w, h in SIZE_PRESETS if not rules.problems(w, h, 1, "")]


CHOICES = {"codec": CODEC_NAMES, "split": SPLITS, "upscale": tuple(str(u) for u in UPSCALES)}
