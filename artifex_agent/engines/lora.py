"""LoRAs per job: the library under models_root/loras/, header inspection, and adapters kept resident per model.

Files come from strangers: only `.safetensors` is read (a header of JSON and raw tensors, no code);
every other suffix is refused before the file is opened. Loading goes through diffusers'
`load_lora_weights`, so the key formats people download (diffusers/PEFT, ComfyUI/kijai/lightx2v
`diffusion_model.*`, musubi `lora_unet_*`) are converted exactly as diffusers converts them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
import warnings
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from artifex_agent.engines.models import LORA_DIR
from artifex_agent.engines.paths import confined_path
from artifex_agent.errors import NotFoundError, RequestError
from artifex_agent.lora_ref import LoraRef

logger = logging.getLogger(__name__)

FOLDER = LORA_DIR
SUFFIX = ".safetensors"
# Pickle-based formats run code when opened: never touched.
REFUSED_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
DEFAULT_BUDGET_BYTES = 2 * 1024**3
MAX_HEADER_BYTES = 64 * 1024**2
# Inner (hidden) width of each Wan model family's transformer.
FAMILIES = {5120: "Wan2.2 A14B", 3072: "Wan2.2 TI2V-5B"}
# Which transformer attribute each LoraRef.expert names.
TARGETS = {"high": ("transformer",), "low": ("transformer_2",), "both": ("transformer", "transformer_2")}


@dataclass(frozen=True)
class LoraInfo:
    """What the header of one LoRA file says: key format, rank, and the model family its shapes fit."""

    name: str
    path: Path
    size: int
    format: str
    rank: int
    inner_dim: int

    @property
    def family(self) -> str:
        if not self.inner_dim:
            return "?"
        return FAMILIES.get(self.inner_dim, f"dim {self.inner_dim}")


def folder(models_root: Path) -> Path:
    return Path(models_root) / FOLDER


def find(models_root: Path, name: str) -> Path:
    """The file of LoRA `name` (with or without .safetensors); refused unopened when it is not safetensors."""
    root = folder(models_root)
    base = name[: -len(SUFFIX)] if name.lower().endswith(SUFFIX) else name
    if base.lower().endswith(REFUSED_SUFFIXES):
        raise RequestError(f"LoRA {name!r}: only .safetensors files are loaded (pickle formats can run code)")
    path = confined_path(root, base + SUFFIX)
    if path.is_file():
        return path
    others = [base + s for s in REFUSED_SUFFIXES if (root / (base + s)).exists()]
    if others:
        raise RequestError(f"LoRA {name!r}: {others[0]} is not loaded; only .safetensors files are "
                           "(pickle formats can run code): convert it to safetensors")
    raise NotFoundError(f"LoRA {name!r} is not in {root} (looked for {base + SUFFIX})")


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes), without reading any tensor."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise RequestError(f"LoRA {path.name}: not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER_BYTES:
            raise RequestError(f"LoRA {path.name}: safetensors header of {length} bytes is implausible")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RequestError(f"LoRA {path.name}: not a safetensors file (bad header)") from None
    if not isinstance(header, dict):
        raise RequestError(f"LoRA {path.name}: not a safetensors file (bad header)")
    header.pop("__metadata__", None)
    return header


def key_format(keys: Iterable[str]) -> str:
    keys = list(keys)
    if any(k.startswith("diffusion_model.") for k in keys):
        return "comfyui"
    if any(k.startswith("lora_unet_") for k in keys):
        return "musubi"
    if any(".lora_A." in k or ".lora_B." in k for k in keys):
        return "diffusers"
    return "unknown"


def inspect(path: Path, name: str | None = None) -> LoraInfo:
    """Format, rank and inner width of a LoRA file, from its header only."""
    header = read_header(path)
    shapes = {k: v.get("shape", []) for k, v in header.items() if isinstance(v, dict)}
    downs = [s for k, s in shapes.items() if re.search(r"\.(lora_A|lora_down)\.weight$", k) and len(s) == 2]
    ups = {k: s for k, s in shapes.items() if re.search(r"\.(lora_B|lora_up)\.weight$", k) and len(s) == 2}
    rank = Counter(s[0] for s in downs).most_common(1)[0][0] if downs else 0
    # Self-attention query projections are (inner, inner) in every Wan family: their output is the width.
    queries = [s[0] for k, s in ups.items() if re.search(r"(self_attn[._]q|attn1\.to_q)[._]", k)]
    widths = queries or [s[0] for s in ups.values()]
    inner = Counter(widths).most_common(1)[0][0] if widths else 0
    return LoraInfo(name or path.name.removesuffix(SUFFIX), path, path.stat().st_size, key_format(shapes),
                    int(rank), int(inner))


def list_loras(models_root: Path) -> list[LoraInfo]:
    """Every safetensors LoRA under models_root/loras/ (unreadable ones listed with format "?")."""
    root = folder(models_root)
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.glob("*" + SUFFIX)):
        name = path.name[: -len(SUFFIX)]
        try:
            found.append(inspect(confined_path(root, path.name), name))
        except (OSError, RequestError) as exc:
            logger.warning("LoRA %s: %s", path, exc)
            found.append(LoraInfo(name, path, 0, "?", 0, 0))
    return sorted(found, key=lambda info: info.name)


def check_request(models_root: Path, loras: Iterable[LoraRef], *, two_experts: bool, model: str) -> None:
    """Cheap checks before a job queues: each file exists, is safetensors, and names an expert the model has."""
    for ref in loras:
        if ref.expert == "low" and not two_experts:
            raise RequestError(f"LoRA {ref.name!r} is for the low-noise expert, but {model} has one expert: "
                               "use expert both (or high)")
        find(models_root, ref.name)


def adapter_name(name: str) -> str:
    """A PEFT adapter name for a LoRA (module-dict keys cannot hold dots)."""
    digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return "lora_" + re.sub(r"\W", "_", name)[:40] + "_" + digest


def read(pipe: Any, path: Path, name: str) -> dict[str, torch.Tensor]:
    """A LoRA file's tensors under diffusers' `transformer.*` keys, converted as load_lora_weights would."""
    import safetensors.torch

    try:
        return dict(type(pipe).lora_state_dict(safetensors.torch.load_file(str(path), device="cpu")))
    except (ValueError, KeyError, IndexError, safetensors.SafetensorError) as exc:
        # Files from strangers: a broken file or keys diffusers cannot convert is the request's problem.
        raise RequestError(f"LoRA {name!r} cannot be read as a Wan LoRA: {exc}") from None


def check_shapes(converted: dict[str, torch.Tensor], transformer: torch.nn.Module, *, lora: str, expert: str,
                 model: str) -> None:
    """Refuse a LoRA whose layers do not fit this transformer, naming the first that does not."""
    matched = 0
    for key, tensor in converted.items():
        m = re.match(r"transformer\.(.+)\.lora_([AB])\.weight$", key)
        if not m:
            continue
        path, side = m.groups()
        try:
            module = transformer.get_submodule(path)
        except AttributeError:
            continue
        inner = getattr(module, "base_layer", module)
        in_f, out_f = getattr(inner, "in_features", None), getattr(inner, "out_features", None)
        if in_f is None or out_f is None:
            raise RequestError(f"LoRA {lora!r}: layer {path} of {model} is not a linear layer")
        shape = tuple(tensor.shape)
        if len(shape) != 2 or (shape[1] != in_f if side == "A" else shape[0] != out_f):
            want = f"(rank, {in_f})" if side == "A" else f"({out_f}, rank)"
            raise RequestError(f"LoRA {lora!r} does not fit {model}'s {expert}: layer {path} lora_{side} has shape "
                               f"{list(shape)}, the model's layer needs {want}")
        matched += 1
    if not matched:
        raise RequestError(f"LoRA {lora!r} matches no layer of {model}: it is for another model family")


@dataclass
class _Loaded:
    adapter: str
    nbytes: int


class Adapters:
    """The LoRAs loaded into one resident pipeline: an LRU per transformer within a byte budget."""

    def __init__(self, models_root: Path, budget_bytes: int = DEFAULT_BUDGET_BYTES, *,
                 dtype: torch.dtype = torch.float32, policy: str = "none") -> None:
        self.models_root = Path(models_root)
        self.budget_bytes = int(budget_bytes)
        # LoRA weights compute in this dtype, also beside fp8-stored base weights.
        self.dtype, self.policy = dtype, policy
        # (transformer attribute, LoRA name) -> loaded adapter, least recently used first.
        self._lru: OrderedDict[tuple[str, str], _Loaded] = OrderedDict()
        # What each transformer has active now ((name, weight), ...; () = adapters off): PEFT's switches walk
        # every module, so an unchanged set is not set again.
        self._active: dict[str, tuple[tuple[str, float], ...]] = {}
        self.loads = 0

    @property
    def resident_bytes(self) -> int:
        return sum(item.nbytes for item in self._lru.values())

    def resident(self) -> list[tuple[str, str]]:
        return list(self._lru)

    def apply(self, pipe: Any, loras: Iterable[LoraRef], *, model: str) -> None:
        """Make exactly `loras` active at their strengths on the transformers `pipe` holds; all others off."""
        present: dict[str, Any] = {
            name: m for name in TARGETS["both"] if isinstance(m := getattr(pipe, name, None), torch.nn.Module)
        }
        wanted: dict[str, list[tuple[str, float]]] = {name: [] for name in present}
        for ref in loras:
            # Only the transformers this pipeline holds: one-expert models, one side of an expert split.
            for target in TARGETS[ref.expert]:
                # Strength 0 is no LoRA at all: base bits, not base plus zeros.
                if target in present and ref.strength != 0:
                    wanted[target].append((ref.name, float(ref.strength)))
        for items in wanted.values():
            if items and self.policy == "sequential":
                raise RequestError(f"LoRA {items[0][0]!r}: LoRAs are not applied under offload = \"sequential\" "
                                   "(its weights live on the meta device); use offload group or model")
        for target, wanted_items in wanted.items():
            for name, _ in wanted_items:
                self._ensure(pipe, present, target, name, model)
        self._evict(pipe, present, keep={(t, n) for t, items in wanted.items() for n, _ in items})
        for target, module in present.items():
            active = tuple(wanted[target])
            if not getattr(module, "_hf_peft_config_loaded", False) or self._active.get(target) == active:
                continue
            if active:
                module.enable_adapters()
                module.set_adapters([self._lru[(target, n)].adapter for n, _ in active], [w for _, w in active])
            else:
                module.disable_adapters()
            self._active[target] = active

    def clear(self, pipe: Any) -> None:
        """Turn every adapter off, leaving them loaded for the next job."""
        self.apply(pipe, (), model="")

    def _ensure(self, pipe: Any, present: dict[str, Any], target: str, name: str, model: str) -> None:
        key = (target, name)
        if key in self._lru:
            self._lru.move_to_end(key)
            return
        converted = read(pipe, find(self.models_root, name), name)
        check_shapes(converted, present[target], lora=name, expert=f"{_label(target)} expert", model=model)
        adapter = adapter_name(name)
        # Loading activates the new adapter: the active set is unknown until set again.
        self._active.pop(target, None)
        load_adapter(pipe, converted, adapter, target, offloaded=self.policy == "model")
        _cast_adapter(present[target], adapter, self.dtype)
        self.loads += 1
        self._lru[key] = _Loaded(adapter, sum(t.numel() * t.element_size() for t in converted.values()))
        logger.info("loaded LoRA %s into %s of %s", name, target, model)

    def _evict(self, pipe: Any, present: dict[str, Any], keep: set[tuple[str, str]]) -> None:
        for key in list(self._lru):
            if self.resident_bytes <= self.budget_bytes:
                break
            if key in keep:
                continue
            item = self._lru.pop(key)
            module = present.get(key[0])
            if module is not None:
                self._active.pop(key[0], None)
                module.delete_adapters(item.adapter)
            logger.info("evicted LoRA %s from %s", key[1], key[0])


def load_adapter(pipe: Any, converted: dict[str, torch.Tensor], adapter: str, target: str, *,
                 offloaded: bool = False) -> None:
    """Load a converted LoRA into one transformer of `pipe` through diffusers' Wan loader.

    The same steps as `pipe.load_lora_weights(..., load_into_transformer_2=...)` after its key conversion,
    but on the named transformer (a split agent may hold only transformer_2, which load_lora_weights
    cannot address alone) and, under model offload, without diffusers re-enabling the offload on its
    default device: between jobs the whole expert sits on the CPU and its hook moves the LoRA with it.
    """
    module = getattr(pipe, target)
    state = type(pipe)._maybe_expand_t2v_lora_for_i2v(transformer=module, state_dict=dict(converted))
    with warnings.catch_warnings():
        # PEFT warns on every adapter after the first; several adapters per model is the point here.
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        pipe.load_lora_into_transformer(state, transformer=module, adapter_name=adapter,
                                        _pipeline=None if offloaded else pipe)


def _cast_adapter(module: torch.nn.Module, adapter: str, dtype: torch.dtype) -> None:
    """PEFT gives a LoRA its base weight's dtype; beside fp8-stored weights it must compute in `dtype`."""
    for layer in module.modules():
        for part in ("lora_A", "lora_B"):
            parts = getattr(layer, part, None)
            if isinstance(parts, torch.nn.ModuleDict) and adapter in parts and parts[adapter].weight.dtype != dtype:
                parts[adapter].to(dtype)


def tiny_lora(model_folder: Path, *, seed: int, rank: int = 4,
              targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")) -> dict[str, torch.Tensor]:
    """A random PEFT LoRA for a (tiny) checkpoint's transformer, diffusers keys, lora_B non-zero (tests, bench)."""
    from diffusers import WanTransformer3DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer = WanTransformer3DModel.from_pretrained(str(Path(model_folder) / "transformer"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # lora_alpha = rank: scale 1, as diffusers assumes for a file without alphas.
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), init_lora_weights=False)
        transformer.add_adapter(config)
    return {f"transformer.{k}": v.contiguous() for k, v in get_peft_model_state_dict(transformer).items()}


def _label(target: str) -> str:
    return "low-noise" if target == "transformer_2" else "high-noise"
