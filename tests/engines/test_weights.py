"""experts.toml, header-only weight inspection and single-file expert loading (GGUF, fp8) on CPU."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from artifex_agent.engines.weights import (
    MAX_HEADER_BYTES,
    WeightInfo,
    component_weights,
    expert_files,
    inspect_weights,
    load_expert,
)
from artifex_agent.errors import ConfigError, NotFoundError, RequestError
from tests.engines.gguf_fixture import original_wan_name, write_fp8_expert, write_gguf_expert

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-expert tiny model whose matrices have rows of 32 or 64: whole Q8_0/Q4_0 blocks (32 values)."""
    from artifex_agent.engines.checkpoint import build_tiny_checkpoint

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("weights") / "wan2.2-tiny-t2v-a14b-32"
    return build_tiny_checkpoint(path, variant="t2v-a14b", heads=2, head_dim=16, ffn_dim=64, text_dim=32)


@pytest.fixture(scope="module")
def ggufs(model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The high-noise expert as Q8_0 and Q4_0 GGUFs, written once."""
    out = tmp_path_factory.mktemp("ggufs")
    return {q: write_gguf_expert(model, "transformer", out / f"HighNoise-{q}.gguf", q) for q in ("Q8_0", "Q4_0")}


@pytest.fixture
def folder(model: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model, free to change."""
    return Path(shutil.copytree(model, tmp_path / model.name))


@pytest.fixture(scope="module")
def reference_output(model: Path) -> torch.Tensor:
    """The fp32 diffusers expert's output on a fixed random input."""
    return _forward(load_expert(model, "transformer", dtype=torch.float32))


def _forward(expert: torch.nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 2, 8, 8, generator=g)
    text = torch.randn(1, 8, 32, generator=g)
    with torch.no_grad():
        return expert(latents, torch.tensor([500.0]), text).sample


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


def _place(folder: Path, source: Path, name: str | None = None) -> str:
    """Copy a weight file into the model folder; its name there."""
    name = name or source.name
    shutil.copyfile(source, folder / name)
    return name


def _experts_toml(folder: Path, text: str) -> None:
    (folder / "experts.toml").write_text(text, encoding="utf-8")


# --- experts.toml ---------------------------------------------------------------------------------


def test_no_experts_toml_names_nothing(model: Path) -> None:
    assert expert_files(model) == {}


def test_valid_experts_toml_gives_paths(folder: Path, ggufs: dict[str, Path]) -> None:
    (folder / "gguf").mkdir()
    high = _place(folder, ggufs["Q8_0"])
    low = _place(folder / "gguf", ggufs["Q4_0"], "LowNoise-Q4_0.gguf")
    _experts_toml(folder, f'# the community GGUFs\ntransformer = "{high}"\ntransformer_2 = "gguf/{low}"\n')
    assert expert_files(folder) == {"transformer": folder / high, "transformer_2": folder / "gguf" / low}


@pytest.mark.parametrize(
    ("text", "error", "words"),
    [
        ('transformer_3 = "x.gguf"\n', ConfigError, ["unknown key 'transformer_3'", "transformer or transformer_2"]),
        ('transformer = "../x.gguf"\n', ConfigError, ["'..'", "inside"]),
        ('transformer = "/tmp/x.gguf"\n', ConfigError, ["absolute path"]),
        ('transformer = "C:/models/x.gguf"\n', ConfigError, ["absolute path"]),
        ('transformer = "sub\\\\x.gguf"\n', ConfigError, ["'/'"]),
        ('transformer = "missing-Q8_0.gguf"\n', NotFoundError, ["missing-Q8_0.gguf", "not in"]),
        ('transformer = "wan.pth"\n', ConfigError, ["wan.pth", "pickle checkpoints are not loaded",
                                                    "convert to .safetensors or use a GGUF"]),
        ('transformer = "wan.ckpt"\n', ConfigError, ["pickle checkpoints are not loaded"]),
        ('transformer = "wan.onnx"\n', ConfigError, ["ONNX"]),
        ('transformer = "wan.txt"\n', ConfigError, ["format .txt", ".gguf or .safetensors"]),
        ('transformer = ""\n', ConfigError, ["file name in quotes"]),
        ("transformer = 3\n", ConfigError, ["file name in quotes"]),
        ("transformer: wan.gguf\n", ConfigError, ["not valid TOML", 'transformer = "']),
    ],
)
def test_bad_experts_toml_is_refused(folder: Path, text: str, error: type[Exception], words: list[str]) -> None:
    _experts_toml(folder, text)
    with pytest.raises(error) as exc_info:
        expert_files(folder)
    message = str(exc_info.value)
    assert "experts.toml" in message
    for word in words:
        assert word in message


def test_transformer_2_on_a_one_expert_model_is_refused(folder: Path, ggufs: dict[str, Path]) -> None:
    index = json.loads((folder / "model_index.json").read_text())
    index["transformer_2"] = [None, None]  # how diffusers marks a component left out
    (folder / "model_index.json").write_text(json.dumps(index))
    _experts_toml(folder, f'transformer_2 = "{_place(folder, ggufs["Q8_0"])}"\n')
    with pytest.raises(ConfigError, match="one expert.*remove the transformer_2 line"):
        expert_files(folder)


def test_symlink_out_of_the_folder_is_refused(folder: Path, ggufs: dict[str, Path]) -> None:
    (folder / "link.gguf").symlink_to(ggufs["Q8_0"])
    _experts_toml(folder, 'transformer = "link.gguf"\n')
    with pytest.raises(ConfigError, match="outside the model folder"):
        expert_files(folder)
    # A link that stays inside the folder is fine.
    (folder / "inside.gguf").symlink_to(_place(folder, ggufs["Q8_0"]))
    _experts_toml(folder, 'transformer = "inside.gguf"\n')
    assert expert_files(folder) == {"transformer": folder / "inside.gguf"}


def test_a_folder_named_as_weights_is_refused(folder: Path) -> None:
    (folder / "dir.gguf").mkdir()
    _experts_toml(folder, 'transformer = "dir.gguf"\n')
    with pytest.raises(ConfigError, match="not a regular file"):
        expert_files(folder)


def test_the_component_config_must_stay(folder: Path, ggufs: dict[str, Path]) -> None:
    _experts_toml(folder, f'transformer = "{_place(folder, ggufs["Q8_0"])}"\n')
    # The component's weights may go; its config.json may not.
    (folder / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    assert "transformer" in expert_files(folder)
    (folder / "transformer" / "config.json").unlink()
    with pytest.raises(NotFoundError, match=r"needs transformer/config\.json"):
        expert_files(folder)


# --- header-only inspection -----------------------------------------------------------------------


def test_inspect_safetensors_counts_every_tensor(model: Path) -> None:
    from safetensors.torch import load_file

    file = model / "transformer" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(file)
    info = inspect_weights(file)
    assert info.format == "fp32"
    assert info.params == sum(t.numel() for t in tensors.values())
    assert info.bytes == sum(t.numel() * t.element_size() for t in tensors.values())
    assert info.largest_tensor_bytes == max(t.numel() * t.element_size() for t in tensors.values())
    assert info.tensors == len(tensors)
    assert info.files == (file,)
    assert not info.quantized
    # The component folder and component_weights (no experts.toml) say the same.
    assert inspect_weights(model / "transformer") == info
    assert component_weights(model, "transformer") == info


def test_inspect_sharded_folder(model: Path, tmp_path: Path) -> None:
    from diffusers import WanTransformer3DModel

    expert = WanTransformer3DModel.from_pretrained(model, subfolder="transformer", local_files_only=True)
    expert.to(torch.bfloat16).save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    shards = sorted((tmp_path / "sharded").glob("*.safetensors"))
    assert len(shards) > 1
    info = inspect_weights(tmp_path / "sharded")
    whole = inspect_weights(model / "transformer")
    assert info.files == tuple(shards)
    assert (info.format, info.params, info.tensors) == ("bf16", whole.params, whole.tensors)
    assert info.bytes == whole.bytes // 2


def test_inspect_gguf_reads_types_not_data(model: Path, ggufs: dict[str, Path]) -> None:
    import gguf

    info = inspect_weights(ggufs["Q8_0"])
    assert info.format == "gguf-Q8_0"
    assert info.quantized
    assert info.architecture == "wan"
    assert info.params == inspect_weights(model / "transformer").params
    reader = gguf.GGUFReader(ggufs["Q8_0"])
    assert info.bytes == sum(int(t.n_bytes) for t in reader.tensors)
    assert info.largest_tensor_bytes == max(int(t.n_bytes) for t in reader.tensors)
    # The rest of the file is the header, metadata and alignment padding.
    assert 0 < ggufs["Q8_0"].stat().st_size - info.bytes < 16 * 1024
    # Q8_0 stores 32 values in 34 bytes; biases, norms and modulation stay F32; the 5-D patch embedding F16.
    types = dict(info.types)
    assert set(types) == {"Q8_0", "F32", "F16"}
    assert types["Q8_0"] > 0.8 * info.params
    assert inspect_weights(ggufs["Q4_0"]).format == "gguf-Q4_0"


def test_gguf_label_falls_back_to_the_majority_type(folder: Path) -> None:
    import gguf
    import numpy as np

    def write(name: str, arrays: dict[str, tuple[np.ndarray, gguf.GGMLQuantizationType]]) -> Path:
        writer = gguf.GGUFWriter(path=None, arch="wan")  # no general.file_type
        for key, (array, qtype) in arrays.items():
            writer.add_tensor(key, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        writer.write_header_to_file(path=folder / name)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return folder / name

    q8, f16 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.F16
    big, small = np.ones((64, 64), np.float32), np.ones((8, 32), np.float32)
    assert inspect_weights(write("a.gguf", {"a": (big, q8), "b": (small, f16)})).format == "gguf-Q8_0"
    assert inspect_weights(write("b.gguf", {"a": (small, q8), "b": (small, f16)})).format == "gguf-mixed"


def test_truncated_safetensors_is_a_clear_error(model: Path, tmp_path: Path) -> None:
    data = (model / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(ConfigError, match=r"cut\.safetensors is truncated: tensor .*re-download"):
        inspect_weights(cut)
    cut.write_bytes(data[:200])  # inside the header
    with pytest.raises(ConfigError, match=r"truncated: its header needs"):
        inspect_weights(cut)
    cut.write_bytes(data[:5])
    with pytest.raises(ConfigError, match="too short"):
        inspect_weights(cut)


def test_huge_header_claim_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes((MAX_HEADER_BYTES + 1).to_bytes(8, "little") + b"{" * 64)
    with pytest.raises(ConfigError, match="header claims .* over the .* limit"):
        inspect_weights(bogus)
    # A claim under the limit but past the end of the file is refused before any read of that size.
    bogus.write_bytes((1 << 26).to_bytes(8, "little") + b"{}")
    with pytest.raises(ConfigError, match="truncated"):
        inspect_weights(bogus)
    bogus.write_bytes((4).to_bytes(8, "little") + b"\xff\xfe{]")
    with pytest.raises(ConfigError, match="not valid JSON"):
        inspect_weights(bogus)


def test_inspect_refuses_other_formats(tmp_path: Path) -> None:
    (tmp_path / "wan.pth").write_bytes(b"x")
    with pytest.raises(ConfigError, match="pickle checkpoints are not loaded"):
        inspect_weights(tmp_path / "wan.pth")
    with pytest.raises(NotFoundError, match="does not exist"):
        inspect_weights(tmp_path / "nothing.gguf")
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\0" * 10)
    with pytest.raises(ConfigError, match="not a readable GGUF"):
        inspect_weights(tmp_path / "bad.gguf")


def test_component_weights_follows_experts_toml(folder: Path, ggufs: dict[str, Path]) -> None:
    _experts_toml(folder, f'transformer_2 = "{_place(folder, ggufs["Q4_0"])}"\n')
    assert component_weights(folder, "transformer_2").format == "gguf-Q4_0"
    assert component_weights(folder, "transformer").format == "fp32"


def test_weight_info_describes_itself() -> None:
    info = WeightInfo(format="gguf-Q8_0", params=14_290_000_000, bytes=15_400_000_000, largest_tensor_bytes=1,
                      files=())
    assert info.describe() == "gguf-Q8_0, 14.29G params, 15.40 GB"


# --- loading --------------------------------------------------------------------------------------


def test_fixture_names_are_the_original_wan_names() -> None:
    # The names community files use (city96's Wan detection keys among them).
    assert original_wan_name("blocks.0.attn1.to_q.weight") == "blocks.0.self_attn.q.weight"
    assert original_wan_name("blocks.0.attn2.to_out.0.bias") == "blocks.0.cross_attn.o.bias"
    assert original_wan_name("blocks.0.norm2.weight") == "blocks.0.norm3.weight"
    assert original_wan_name("blocks.0.scale_shift_table") == "blocks.0.modulation"
    assert original_wan_name("scale_shift_table") == "head.modulation"
    assert original_wan_name("proj_out.weight") == "head.head.weight"
    assert original_wan_name("condition_embedder.text_embedder.linear_2.weight") == "text_embedding.2.weight"
    assert original_wan_name("patch_embedding.weight") == "patch_embedding.weight"


def test_q8_0_weights_are_within_the_block_bound(model: Path, ggufs: dict[str, Path]) -> None:
    """Q8_0: one fp16 scale d = max|block|/127 per 32 values, so |w - q*d| <= max/254 (+ the scale's fp16 rounding)."""
    import gguf
    from safetensors.torch import load_file

    originals = {original_wan_name(k): v for k, v in
                 load_file(model / "transformer" / "diffusion_pytorch_model.safetensors").items()}
    checked = 0
    for tensor in gguf.GGUFReader(ggufs["Q8_0"]).tensors:
        if tensor.tensor_type != gguf.GGMLQuantizationType.Q8_0:
            continue
        original = originals[tensor.name].numpy()
        restored = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(original.shape)
        blocks = original.reshape(-1, 32)
        bound = abs(blocks).max(axis=1, keepdims=True) * (1 / 254 + 1 / 2048)
        assert (abs(restored.reshape(-1, 32) - blocks) <= bound + 1e-12).all(), tensor.name
        checked += 1
    assert checked >= 10


def test_gguf_expert_loads_and_matches(folder: Path, ggufs: dict[str, Path], reference_output: torch.Tensor) -> None:
    """Tolerances, measured with this tiny model (fp32 compute on CPU):

    Q8_0: per-weight error <= max|block|/254; for these uniformly initialised weights its RMS is
    (max/127)/sqrt(12) against a weight RMS of max/sqrt(3), i.e. 1/254 = 0.39%. The few linear
    layers in series keep the output near that: measured 0.38% relative L2, bounded at 1%.
    Q4_0 (16 levels per block, ~16x coarser) measured 6.7%, cosine 0.998: it must be worse than
    Q8_0 and still clearly the same function (relative L2 < 20%, cosine > 0.98).
    """
    _experts_toml(folder, f'transformer = "{_place(folder, ggufs["Q8_0"])}"\n'
                          f'transformer_2 = "{_place(folder, ggufs["Q4_0"])}"\n')
    from diffusers import WanTransformer3DModel
    from diffusers.quantizers.gguf.utils import GGUFParameter

    q8: Any = load_expert(folder, "transformer", dtype=torch.float32)
    assert type(q8).__name__ == WanTransformer3DModel.__name__
    # Still quantized in memory: that is the point of a GGUF on a 24 GB card.
    assert isinstance(q8.blocks[0].attn1.to_q.weight, GGUFParameter)
    q8_error = _relative_error(reference_output, _forward(q8))
    assert q8_error < 0.01

    # transformer_2 here holds the high-noise weights as Q4_0, so it compares to the same reference.
    q4_output = _forward(load_expert(folder, "transformer_2", dtype=torch.float32))
    q4_error = _relative_error(reference_output, q4_output)
    cosine = torch.nn.functional.cosine_similarity(reference_output.flatten(), q4_output.flatten(), dim=0)
    assert q8_error < q4_error < 0.2
    assert cosine > 0.98


def test_gguf_expert_loads_in_bf16(folder: Path, ggufs: dict[str, Path], reference_output: torch.Tensor) -> None:
    _experts_toml(folder, f'transformer = "{_place(folder, ggufs["Q8_0"])}"\n')
    expert: Any = load_expert(folder, "transformer", dtype=torch.bfloat16)
    assert expert.patch_embedding.weight.dtype == torch.bfloat16
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 2, 8, 8, generator=g).to(torch.bfloat16)
    text = torch.randn(1, 8, 32, generator=g).to(torch.bfloat16)
    with torch.no_grad():
        output = expert(latents, torch.tensor([500.0]), text).sample.float()
    # bf16 keeps 8 mantissa bits (~0.4% per rounding): a looser bound than fp32 compute.
    assert _relative_error(reference_output, output) < 0.05


def test_no_experts_toml_loads_the_diffusers_folder(model: Path, reference_output: torch.Tensor) -> None:
    expert: Any = load_expert(model, "transformer_2", dtype=torch.float32)
    assert expert.blocks[0].attn1.to_q.weight.dtype == torch.float32
    assert not torch.equal(_forward(expert), reference_output)  # the other expert: its own weights


def test_plain_fp8_single_file_loads(folder: Path, reference_output: torch.Tensor) -> None:
    """diffusers 0.42 loads an fp8 (e4m3fn) single file and casts it to torch_dtype.

    e4m3 keeps 3 mantissa bits: each weight is off by up to 2^-4 (6.25%) relative, ~3.6% RMS;
    measured 2.9% relative L2 on the output, bounded at 6%.
    """
    name = write_fp8_expert(folder, "transformer", folder / "HighNoise-fp8_e4m3fn.safetensors").name
    assert inspect_weights(folder / name).format == "fp8"
    _experts_toml(folder, f'transformer = "{name}"\n')
    expert: Any = load_expert(folder, "transformer", dtype=torch.float32)
    assert expert.blocks[0].attn1.to_q.weight.dtype == torch.float32
    assert _relative_error(reference_output, _forward(expert)) < 0.06


def test_scaled_fp8_is_refused(folder: Path) -> None:
    name = write_fp8_expert(folder, "transformer", folder / "HighNoise-fp8_scaled.safetensors", scaled=True).name
    assert inspect_weights(folder / name).format == "fp8-scaled"
    _experts_toml(folder, f'transformer = "{name}"\n')
    with pytest.raises(ConfigError, match=r"fp8_scaled\.safetensors is a ComfyUI scaled-fp8.*GGUF.*weight_storage"):
        load_expert(folder, "transformer", dtype=torch.float32)


def test_gguf_without_the_gguf_package(folder: Path, ggufs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _experts_toml(folder, f'transformer = "{_place(folder, ggufs["Q8_0"])}"\n')
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install gguf"):
        load_expert(folder, "transformer", dtype=torch.float32)


def test_gguf_of_another_size_names_the_file(folder: Path, ggufs: dict[str, Path]) -> None:
    _experts_toml(folder, f'transformer = "{_place(folder, ggufs["Q8_0"])}"\n')
    config_file = folder / "transformer" / "config.json"
    config = json.loads(config_file.read_text())
    config["ffn_dim"] = 96  # a model of another size than the file
    config_file.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"HighNoise-Q8_0\.gguf cannot be loaded as a Wan expert"):
        load_expert(folder, "transformer", dtype=torch.float32)


def test_gguf_missing_a_tensor_is_refused(folder: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    partial = tmp_path / "partial"
    (partial / "transformer").mkdir(parents=True)
    state = load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors")
    del state["blocks.0.attn1.to_q.weight"]
    save_file(state, str(partial / "transformer" / "diffusion_pytorch_model.safetensors"))
    name = write_gguf_expert(partial, "transformer", folder / "partial-Q8_0.gguf").name
    _experts_toml(folder, f'transformer = "{name}"\n')
    with pytest.raises(ConfigError, match=r"partial-Q8_0\.gguf lacks weights.*partial file"):
        load_expert(folder, "transformer", dtype=torch.float32)


def test_safetensors_missing_a_tensor_is_refused(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    name = write_fp8_expert(folder, "transformer", folder / "fp8.safetensors").name
    state = load_file(folder / name)
    del state["blocks.0.self_attn.q.weight"]
    save_file(state, str(folder / name))
    _experts_toml(folder, f'transformer = "{name}"\n')
    with pytest.raises(ConfigError, match=r"fp8\.safetensors lacks weights"):
        load_expert(folder, "transformer", dtype=torch.float32)


def test_load_refuses_a_non_expert_component(model: Path) -> None:
    with pytest.raises(RequestError, match="not a Wan expert"):
        load_expert(model, "vae", dtype=torch.float32)


def test_inspect_safetensors_reads_the_header_only(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture files are tiny, so count what is read: the length and the JSON header, no tensor bytes."""
    file = model / "transformer" / "diffusion_pytorch_model.safetensors"
    header_len = int.from_bytes(file.read_bytes()[:8], "little")
    reads: list[int] = []
    real_open = Path.open

    class Counting:
        def __init__(self, f: Any) -> None:
            self.f = f

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def read(self, n: int = -1) -> bytes:
            data = self.f.read(n)
            reads.append(len(data))
            return data

    monkeypatch.setattr(Path, "open", lambda self, *a, **k: Counting(real_open(self, *a, **k)))
    inspect_weights(file)
    assert sum(reads) == 8 + header_len < file.stat().st_size
