"""Expert weights as single files (GGUF or safetensors) named by a model folder's experts.toml.

People with 24 GB cards download one quantized file per Wan2.2 expert (a community GGUF such as
"Wan2.2-T2V-A14B-HighNoise-Q8_0.gguf") rather than the sharded bf16 diffusers weights. A model
folder keeps its diffusers layout (model_index.json, vae/, text_encoder/, ..., transformer/config.json)
and may name those files in a small TOML file beside model_index.json:

    # experts.toml: single-file weights for the Wan2.2 experts, relative to this folder.
    transformer = "Wan2.2-T2V-A14B-HighNoise-Q8_0.gguf"
    transformer_2 = "Wan2.2-T2V-A14B-LowNoise-Q8_0.gguf"

Loading is diffusers' own (`from_single_file`, which converts the original Wan key names, with
`GGUFQuantizationConfig` for GGUF); this module only checks the names, reads headers and picks
the call. Headers are read without loading a tensor, so a 15 GB file is described in milliseconds.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from artifex_agent.errors import ConfigError, NotFoundError, RequestError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

EXPERTS_FILE = "experts.toml"
EXPERT_COMPONENTS = ("transformer", "transformer_2")
SINGLE_FILE_SUFFIXES = (".gguf", ".safetensors")
# A real header is a few hundred kB even for a 14B model; a bigger claim is a corrupt or foreign file.
MAX_HEADER_BYTES = 100 * 1024 * 1024
# A format is named by the type holding more than this share of the parameters, else it is "mixed".
DOMINANT_SHARE = 0.5

_PICKLE = "pickle checkpoints are not loaded: convert to .safetensors or use a GGUF"
# Suffixes people do download for Wan, and what to use instead.
_REFUSED_SUFFIXES = {
    ".pt": _PICKLE,
    ".pth": _PICKLE,
    ".ckpt": _PICKLE,
    ".bin": _PICKLE,
    ".pkl": _PICKLE,
    ".sft": "a .sft file is safetensors under a short name: rename it to .safetensors",
    ".onnx": "ONNX exports are not loaded: use a GGUF or .safetensors file",
}
_SAFETENSORS_LABELS = {
    "BF16": "bf16",
    "F16": "fp16",
    "F32": "fp32",
    "F64": "fp64",
    "F8_E4M3": "fp8",
    "F8_E5M2": "fp8",
}
_PARTIAL = "lacks weights the expert's config.json asks for: a partial file, or a model of another size"
_FP8_SCALED_ADVICE = (
    'use a GGUF (Q8_0 is closest to it), or the bf16 diffusers weights with weight_storage = "fp8"'
)


@dataclass(frozen=True)
class WeightInfo:
    """What a weights file (or a component folder's shards) holds, read from headers only."""

    format: str  # "bf16", "fp16", "fp32", "fp8", "fp8-scaled", "gguf-Q8_0", "gguf-Q4_K_M", "mixed", ...
    params: int  # elements over all tensors
    bytes: int  # tensor bytes on disk (headers and padding left out)
    largest_tensor_bytes: int
    files: tuple[Path, ...]
    tensors: int = 0
    # Parameters per on-disk tensor type ("BF16", "F8_E4M3", "Q8_0", ...), largest share first.
    types: tuple[tuple[str, int], ...] = ()
    architecture: str = ""  # GGUF general.architecture ("wan" for community Wan files); "" for safetensors

    @property
    def quantized(self) -> bool:
        """True for GGUF: the weights stay blockwise-quantized in memory and dequantize per layer."""
        return self.format.startswith("gguf-")

    def describe(self) -> str:
        """A one-line summary for logs, e.g. 'gguf-Q8_0, 14.29G params, 15.40 GB'."""
        return f"{self.format}, {self.params / 1e9:.2f}G params, {self.bytes / 1e9:.2f} GB"


def expert_files(folder: Path) -> dict[str, Path]:
    """The single weight files the model folder's experts.toml names, by component; {} without one.

    Every entry is checked here, so a bad file fails when the model is chosen, not mid-load.
    """
    folder = Path(folder)
    file = folder / EXPERTS_FILE
    if not file.exists() and not file.is_symlink():
        return {}
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file} cannot be read: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{file} is not valid TOML ({exc}); write one line per expert, "
            f'e.g. transformer = "Wan2.2-T2V-A14B-HighNoise-Q8_0.gguf"'
        ) from exc
    experts = _model_experts(folder)
    found: dict[str, Path] = {}
    for key, value in data.items():
        if key not in EXPERT_COMPONENTS:
            raise ConfigError(f"{file}: unknown key {key!r} (use {' or '.join(experts)})")
        if key not in experts:
            raise ConfigError(
                f"{file}: {key} is named, but this model has one expert (model_index.json has no {key}); "
                f"remove the {key} line"
            )
        found[key] = _expert_path(folder, file, key, value)
    return found


def component_weights(folder: Path, component: str) -> WeightInfo:
    """The weights a component loads from: its experts.toml file when named there, else its folder."""
    folder = Path(folder)
    file = expert_files(folder).get(component)
    return inspect_weights(file if file is not None else folder / component)


def inspect_weights(path: Path) -> WeightInfo:
    """Describe a .safetensors file, a .gguf file or a component folder of safetensors shards."""
    path = Path(path)
    if path.is_dir():
        return _inspect_safetensors(_folder_shards(path))
    if not path.is_file():
        raise NotFoundError(f"weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _inspect_safetensors([path])
    if suffix == ".gguf":
        return _inspect_gguf(path)
    raise ConfigError(f"{path}: {_suffix_problem(path)}")


def load_expert(folder: Path, component: str, *, dtype: torch.dtype) -> torch.nn.Module:
    """Load one Wan expert (a diffusers WanTransformer3DModel) from its experts.toml file or its folder.

    The component's config.json always comes from the model folder: a single file holds weights only.
    """
    from diffusers import WanTransformer3DModel

    folder = Path(folder)
    if component not in EXPERT_COMPONENTS:
        raise RequestError(f"{component!r} is not a Wan expert (use {' or '.join(EXPERT_COMPONENTS)})")
    file = expert_files(folder).get(component)
    if file is None:
        return _guarded(
            folder / component,
            lambda: WanTransformer3DModel.from_pretrained(
                str(folder), subfolder=component, torch_dtype=dtype, local_files_only=True
            ),
        )
    info = inspect_weights(file)
    if info.format == "fp8-scaled":
        raise ConfigError(
            f"{file} is a ComfyUI scaled-fp8 checkpoint (fp8-scaled: per-tensor scale_weight factors), "
            f"which diffusers cannot apply; {_FP8_SCALED_ADVICE}"
        )
    kwargs: dict[str, Any] = {
        "config": str(folder),
        "subfolder": component,
        "torch_dtype": dtype,
        "local_files_only": True,
    }
    if info.quantized:
        if info.architecture and not info.architecture.lower().startswith("wan"):
            raise ConfigError(f"{file} is a GGUF of a {info.architecture!r} model, not a Wan transformer")
        _require_gguf(file)
        from diffusers import GGUFQuantizationConfig

        kwargs["quantization_config"] = GGUFQuantizationConfig(compute_dtype=dtype)
    logger.info("loading %s from %s (%s)", component, file.name, info.describe())
    model = _guarded(file, lambda: WanTransformer3DModel.from_single_file(str(file), **kwargs))
    # Backstop: a file short of some weights leaves them on the meta device; diffusers 0.42 then usually
    # fails on its own ("Cannot copy out of meta tensor", turned into the same message in _guarded).
    missing = [name for name, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ConfigError(f"{file} {_PARTIAL} (no {', '.join(missing[:3])})")
    return model


def _guarded(source: Path, load: Any) -> Any:
    """Run a diffusers load, turning its errors for a wrong or partial file into one that names the file."""
    import torch
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    try:
        return load()
    except torch.cuda.OutOfMemoryError:
        raise
    except SingleFileComponentError as exc:
        raise ConfigError(f"{source} holds no Wan transformer weights: {exc.message}") from exc
    except NotImplementedError as exc:
        # "Cannot copy out of meta tensor": diffusers left a weight the file lacks on the meta device.
        if "meta tensor" not in str(exc):
            raise
        raise ConfigError(f"{source} {_PARTIAL}") from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ConfigError(f"{source} cannot be loaded as a Wan expert: {exc}") from exc


def _model_experts(folder: Path) -> tuple[str, ...]:
    """The expert components model_index.json names (transformer_2 only for the two-expert A14B models)."""
    index_file = folder / "model_index.json"
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        if not isinstance(index, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{folder} has {EXPERTS_FILE} but model_index.json cannot be read: {exc}") from exc
    named = tuple(
        c for c in EXPERT_COMPONENTS if isinstance(index.get(c), list) and all(isinstance(s, str) for s in index[c])
    )
    return named or ("transformer",)


def _expert_path(folder: Path, file: Path, key: str, value: Any) -> Path:
    """Check one experts.toml entry: a file name or relative path inside the model folder."""
    where = f"{file}: {key}"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f'{where} must be a file name in quotes, e.g. {key} = "Wan2.2-T2V-A14B-Q8_0.gguf"')
    if "\\" in value:
        raise ConfigError(f"{where} = {value!r}: use '/' between folder names")
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute() or PureWindowsPath(value).drive:
        raise ConfigError(f"{where} = {value!r} is an absolute path; put the file in {folder} and name it relative")
    if ".." in PurePosixPath(value).parts:
        raise ConfigError(f"{where} = {value!r} climbs out with '..'; put the file inside {folder}")
    path = folder / value
    problem = _suffix_problem(path)
    if problem:
        raise ConfigError(f"{where} = {value!r}: {problem}")
    root = folder.resolve()
    if not path.resolve().is_relative_to(root):
        raise ConfigError(f"{where} = {value!r} resolves to {path.resolve()}, outside the model folder {root}")
    if not path.exists():
        raise NotFoundError(f"{where} names {value!r}, which is not in {folder} (still downloading?)")
    if not path.is_file():
        raise ConfigError(f"{where} = {value!r} is not a regular file")
    if not (folder / key / "config.json").is_file():
        raise NotFoundError(
            f"{where} = {value!r} needs {key}/config.json in {folder}: a single file holds weights only, "
            f"the expert's shape comes from the diffusers config (copy it from the diffusers model)"
        )
    return path


def _suffix_problem(path: Path) -> str:
    """Why a file's format cannot load as an expert, or ''."""
    suffix = path.suffix.lower()
    if suffix in SINGLE_FILE_SUFFIXES:
        return ""
    if suffix in _REFUSED_SUFFIXES:
        return f"format {suffix}: {_REFUSED_SUFFIXES[suffix]}"
    shown = suffix or "(no suffix)"
    return f"format {shown} is not loaded: use a {' or '.join(SINGLE_FILE_SUFFIXES)} file"


def _require_gguf(file: Path) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"{file} is a GGUF file, which needs the gguf package: pip install gguf")


def _folder_shards(folder: Path) -> list[Path]:
    """The safetensors files diffusers' from_pretrained reads from a component folder."""
    single = folder / "diffusion_pytorch_model.safetensors"
    if single.is_file():
        return [single]
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    default = folder / "diffusion_pytorch_model.safetensors.index.json"
    index_file = default if default.is_file() else indexes[0] if len(indexes) == 1 else None
    if index_file is not None:
        try:
            names = sorted(set(json.loads(index_file.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{index_file} cannot be read: {exc}") from exc
        shards = [folder / str(name) for name in names]
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise NotFoundError(f"{folder} is missing weight shard(s): {', '.join(missing)}")
        return shards
    shards = sorted(p for p in folder.glob("*.safetensors") if p.is_file() and not p.name.startswith("."))
    if not shards:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in _REFUSED_SUFFIXES)
        if pickles:
            raise ConfigError(f"{folder} holds {', '.join(pickles)}: {_PICKLE}")
        raise NotFoundError(f"{folder} has no *.safetensors weights")
    return shards


def _inspect_safetensors(files: list[Path]) -> WeightInfo:
    params: Counter[str] = Counter()
    total_bytes = largest = count = 0
    scaled = False
    for file in files:
        for name, dtype, numel, nbytes in _safetensors_tensors(file):
            params[dtype] += numel
            total_bytes += nbytes
            largest = max(largest, nbytes)
            count += 1
            # ComfyUI's scaled fp8: a "scaled_fp8" marker tensor and a scale_weight beside each fp8 weight.
            scaled = scaled or name == "scaled_fp8" or name.endswith(".scale_weight")
    by_label: Counter[str] = Counter()
    for dtype, n in params.items():
        by_label[_SAFETENSORS_LABELS.get(dtype, dtype.lower())] += n
    label = "fp8-scaled" if scaled else _dominant(by_label) or "mixed"
    return WeightInfo(
        format=label,
        params=sum(params.values()),
        bytes=total_bytes,
        largest_tensor_bytes=largest,
        files=tuple(files),
        tensors=count,
        types=tuple(params.most_common()),
    )


def _safetensors_tensors(file: Path) -> list[tuple[str, str, int, int]]:
    """(name, dtype, elements, bytes) per tensor, from the JSON header alone; truncation is an error."""
    size = file.stat().st_size
    with file.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ConfigError(f"{file} is not a safetensors file: {size} bytes, too short for a header (truncated?)")
        header_len = int.from_bytes(head, "little")
        if header_len > MAX_HEADER_BYTES:
            raise ConfigError(
                f"{file}: the safetensors header claims {header_len} bytes, over the {MAX_HEADER_BYTES} byte limit "
                f"(not a safetensors file, or corrupt)"
            )
        if 8 + header_len > size:
            raise ConfigError(
                f"{file} is truncated: its header needs {header_len} bytes but the file has {size - 8} "
                f"after the length (re-download it)"
            )
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"{file}: the safetensors header is not valid JSON ({exc}); the file is corrupt") from exc
    data_size = size - 8 - header_len
    tensors: list[tuple[str, str, int, int]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = str(entry["dtype"])
            numel = math.prod(int(d) for d in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{file}: tensor {name!r} has a malformed header entry ({exc})") from exc
        if not 0 <= begin <= end:
            raise ConfigError(f"{file}: tensor {name!r} has bad data offsets {begin}..{end}")
        if end > data_size:
            raise ConfigError(
                f"{file} is truncated: tensor {name!r} ends at byte {end} of the data, "
                f"but the file holds {data_size} (re-download it)"
            )
        tensors.append((name, dtype, numel, end - begin))
    return tensors


def _inspect_gguf(file: Path) -> WeightInfo:
    _require_gguf(file)
    import gguf

    # GGUFReader memory-maps the file: tensor types and sizes come from the header, no data is read.
    try:
        reader = gguf.GGUFReader(file, "r")
    except Exception as exc:
        # A third-party parser on a corrupt or truncated file raises whatever its unpacking hits.
        raise ConfigError(f"{file} is not a readable GGUF file ({type(exc).__name__}: {exc}); re-download it") from exc
    try:
        params: Counter[str] = Counter()
        total_bytes = largest = 0
        for tensor in reader.tensors:
            params[tensor.tensor_type.name] += int(tensor.n_elements)
            total_bytes += int(tensor.n_bytes)
            largest = max(largest, int(tensor.n_bytes))
        count = len(reader.tensors)
        architecture = _gguf_field(gguf, reader, "general.architecture")
        file_type = _gguf_field(gguf, reader, "general.file_type")
    finally:
        del reader  # drop the memory map (Windows keeps a mapped file locked)
    label = _gguf_file_type(gguf, file_type) or _dominant(params) or "mixed"
    return WeightInfo(
        format=f"gguf-{label}",
        params=sum(params.values()),
        bytes=total_bytes,
        largest_tensor_bytes=largest,
        files=(file,),
        tensors=count,
        types=tuple(params.most_common()),
        architecture=str(architecture or ""),
    )


def _gguf_field(gguf: Any, reader: Any, key: str) -> Any:
    """A scalar or string metadata value, or None (parts/data: the reader API since gguf 0.10)."""
    field = reader.fields.get(key)
    if field is None or not field.data or not field.types:
        return None
    value = field.parts[field.data[0]]
    if field.types[0] == gguf.GGUFValueType.STRING:
        return bytes(value).decode("utf-8", errors="replace")
    return value[0].item() if len(value) == 1 else None


def _gguf_file_type(gguf: Any, value: Any) -> str:
    """'Q8_0' for general.file_type MOSTLY_Q8_0; '' when absent, guessed or unknown."""
    if not isinstance(value, int):
        return ""
    try:
        name = gguf.LlamaFileType(value).name
    except ValueError:
        return ""
    if name == "GUESSED":
        return ""
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _dominant(params: Counter[str]) -> str:
    """The type holding more than DOMINANT_SHARE of the parameters, or ''."""
    total = sum(params.values())
    if not total:
        return ""
    label, n = params.most_common(1)[0]
    return label if n > DOMINANT_SHARE * total else ""
