"""Model discovery under a models root: diffusers folders for video, weight files for upscaling."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from artifex_agent.engines.weights import expert_files
from artifex_agent.errors import ArtifexError, NotFoundError, RequestError
from artifex_agent.vocabulary import MAX_NAME_BYTES as MAX_NAME_BYTES
from artifex_agent.vocabulary import ModelKind as ModelKind

logger = logging.getLogger(__name__)


UPSCALE_DIR = "upscale"
# LoRA files (engines/lora.py): a folder beside the models, never a model itself.
LORA_DIR = "loras"
UPSCALE_SUFFIXES = (".safetensors", ".pth")
PIPELINE_KINDS: dict[str, ModelKind] = {"WanPipeline": "t2v", "WanImageToVideoPipeline": "i2v"}
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Model names become one file or folder name: bounded (vocabulary.MAX_NAME_BYTES, as jobs are) well
# under the 255 bytes file systems allow, so a longer name is refused as such, not with ENAMETOOLONG.


@dataclass
class ModelEntry:
    """One model found under the models root."""

    name: str
    path: Path
    kind: ModelKind
    complete: bool
    problem: str = ""
    two_experts: bool = False


@dataclass(frozen=True)
class SizeRules:
    """What sizes a video model accepts."""

    spatial: int  # width and height must be multiples: vae spatial scale x transformer patch
    temporal: int  # num_frames must be temporal * k + 1: vae temporal scale
    # RoPE positions per axis (latent frames, height and width patches must fit).
    max_positions: int = 1024

    def problems(self, width: int, height: int, frames: int, model: str,
                 frames_label: str = "frames") -> list[str]:
        """Every way a clip of this size breaks the rules, each with the field named and sizes that would do."""
        found = []
        for label, value in (("width", width), ("height", height)):
            if value % self.spatial:
                lower = max(value // self.spatial * self.spatial, self.spatial)
                found.append(f"{label} must be a multiple of {self.spatial} for {model}; "
                             f"got {value} (try {lower} or {lower + self.spatial})")
        k = self.temporal
        if (frames - 1) % k:
            near = max(round((frames - 1) / k), 0) * k + 1
            found.append(f"{frames_label} must be {k}k+1, e.g. {near}; got {frames}")
        elif max((frames - 1) // k + 1, width // self.spatial, height // self.spatial) > self.max_positions:
            found.append(f"{frames} frames at {width}x{height} is more than {model}'s position embedding "
                         f"covers ({self.max_positions} positions per axis)")
        return found


# What every Wan2.2 model accepts (VAE 8x x patch 2 in space, VAE 4x in time; TI2V-5B asks more,
# 32): what a client checks before it knows which rules the agents read from the model itself.
WAN_SIZE_RULES = SizeRules(spatial=16, temporal=4)


def size_rules(entry: ModelEntry) -> SizeRules:
    """Size rules read from a model's vae and transformer configs (Wan defaults where absent)."""
    vae = read_config(entry.path / "vae" / "config.json")
    transformer = read_config(entry.path / "transformer" / "config.json") or read_config(
        entry.path / "transformer_2" / "config.json"
    )
    patch = transformer.get("patch_size") or [1, 2, 2]
    spatial = int(vae.get("scale_factor_spatial") or 8) * int(max(patch[1], patch[2]))
    return SizeRules(spatial=spatial, temporal=int(vae.get("scale_factor_temporal") or 4),
                     max_positions=int(transformer.get("rope_max_seq_len") or 1024))


def list_models(root: Path) -> list[ModelEntry]:
    """Every model under `root`, complete or not, sorted by name; a missing root has none."""
    root = Path(root)
    if not root.is_dir():
        return []
    entries: list[ModelEntry] = []
    for child in sorted(root.iterdir()):
        # Hidden names are half-built or foreign (".tmp", ".cache"); never offer them.
        if child.name.startswith(".") or not child.is_dir():
            continue
        if child.name == LORA_DIR:
            # LoRAs are listed on their own (engines/lora.py), not as an incomplete model.
            continue
        if child.name == UPSCALE_DIR:
            entries.extend(_upscale_models(child))
        else:
            entries.append(inspect_model(child))
    entries.sort(key=lambda e: e.name)
    return entries


def resolve_model(root: Path, name: str) -> ModelEntry:
    """The complete model called `name` under `root`, or an error that says what is wrong."""
    check_model_name(name)
    root = Path(root)
    folder = root / name
    entry: ModelEntry | None
    if folder.is_dir() and name not in (UPSCALE_DIR, LORA_DIR):
        entry = inspect_model(folder)
    else:
        entry = next((e for e in _upscale_models(root / UPSCALE_DIR) if e.name == name), None)
        if entry is None:
            available = [e.name for e in list_models(root) if e.complete]
            listing = ", ".join(available) if available else "none"
            raise NotFoundError(f"model {name!r} is not in {root} (available: {listing})")
    if not entry.complete:
        raise NotFoundError(f"model {name!r} is incomplete: {entry.problem}")
    return entry


def check_name_length(name: str, what: str = "model name") -> None:
    """Refuse a name longer than MAX_NAME_BYTES (UTF-8) before it reaches the file system."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise RequestError(f"{what} is {size} bytes long; the limit is {MAX_NAME_BYTES}")


def check_model_name(name: str) -> None:
    """Refuse names that are not a single plain folder or file name (no paths, no '..')."""
    if not isinstance(name, str) or not name.strip():
        raise RequestError("model name is empty")
    check_name_length(name)
    if (
        name in (".", "..")
        or ".." in name
        or "/" in name
        or "\\" in name
        or PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).is_absolute()
        or PureWindowsPath(name).drive
        or name.startswith(".")
    ):
        raise RequestError(f"model name {name!r} must be a plain name such as 'Wan2.2-T2V-A14B-Diffusers', not a path")


def inspect_model(folder: Path) -> ModelEntry:
    """Describe one diffusers model folder, saying what is missing when it is incomplete."""
    entry = ModelEntry(name=folder.name, path=folder, kind="t2v", complete=False)
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        entry.problem = "no model_index.json (not a diffusers model folder)"
        return entry
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        if not isinstance(index, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        entry.problem = f"model_index.json cannot be read: {exc}"
        return entry
    class_name = index.get("_class_name")
    kind = PIPELINE_KINDS.get(str(class_name))
    if kind is None:
        entry.problem = f"pipeline {class_name!r} is not supported (use {', '.join(PIPELINE_KINDS)})"
        return entry
    # TI2V-5B is a WanPipeline with per-token timesteps; it does both text- and image-to-video.
    entry.kind = "ti2v" if index.get("expand_timesteps") else kind
    entry.two_experts = _names_component(index.get("transformer_2")) and index.get("boundary_ratio") is not None
    # Experts named in experts.toml (GGUF or single files) keep only their config.json in the folder.
    try:
        single_files = expert_files(folder)
    except ArtifexError as exc:
        entry.problem = str(exc)
        return entry
    for component, spec in sorted(index.items()):
        if component.startswith("_") or not _names_component(spec):
            continue
        problem = _component_problem(folder / component, component, spec, weights=component not in single_files)
        if problem:
            entry.problem = problem
            return entry
    entry.complete = True
    return entry


def _names_component(spec: Any) -> bool:
    """True for a ["library", "Class"] entry; [null, null] marks an optional component left out."""
    return isinstance(spec, list) and len(spec) == 2 and all(isinstance(s, str) for s in spec)


def _component_problem(path: Path, component: str, spec: list[str], *, weights: bool = True) -> str:
    """Why one component folder cannot load, or ''."""
    class_name = spec[1]
    if not path.is_dir():
        return f"component {component}/ ({class_name}) is missing"
    if class_name.endswith("Scheduler"):
        configs: tuple[str, ...] = ("scheduler_config.json",)
    elif "Tokenizer" in class_name:
        configs = ("tokenizer_config.json", "tokenizer.json")
    elif class_name.endswith(("ImageProcessor", "FeatureExtractor")):
        configs = ("preprocessor_config.json",)
    else:
        if not (path / "config.json").is_file():
            return f"component {component}/ has no config.json"
        return _weights_problem(path, component) if weights else ""
    if not any((path / c).is_file() for c in configs):
        return f"component {component}/ has no {' or '.join(configs)}"
    return ""


def _weights_problem(path: Path, component: str) -> str:
    """Why a model component's weights are missing or partial, or ''."""
    indexes = sorted(path.glob("*.index.json"))
    for index_file in indexes:
        try:
            shards = set(json.loads(index_file.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return f"component {component}/{index_file.name} cannot be read: {exc}"
        missing = sorted(s for s in shards if not (path / s).is_file())
        if missing:
            return f"component {component}/ is missing weight shard(s): {', '.join(missing)}"
    if indexes:
        return ""
    weights = [p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()]
    if not weights:
        return f"component {component}/ has no weights file (*.safetensors)"
    if all(p.stat().st_size == 0 for p in weights):
        return f"component {component}/ weights file is empty"
    return ""


def read_config(file: Path) -> dict[str, Any]:
    """A JSON object from a model folder ({} when the file is missing, unreadable or not an object)."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _upscale_models(folder: Path) -> list[ModelEntry]:
    """Upscaler weight files under root/upscale/, named by their stem."""
    if not folder.is_dir():
        return []
    found: dict[str, ModelEntry] = {}
    # .safetensors sorts before .pth for the same stem, so the safer format wins a tie.
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in UPSCALE_SUFFIXES and not p.name.startswith(".")),
        key=lambda p: (p.stem, UPSCALE_SUFFIXES.index(p.suffix.lower())),
    )
    for file in files:
        if file.stem in found or not file.is_file():
            continue
        empty = file.stat().st_size == 0
        found[file.stem] = ModelEntry(
            name=file.stem,
            path=file,
            kind="upscale",
            complete=not empty,
            problem="weights file is empty" if empty else "",
        )
    return list(found.values())
