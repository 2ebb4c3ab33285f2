"""Generation presets: the built-ins, the cluster file's [presets.NAME] tables, and resolving a job's preset."""

from __future__ import annotations

import pytest

from artifex_agent.config import ClusterConfig
from artifex_agent.errors import ConfigError, RequestError
from artifex_agent.jobspec import JobSpec
from artifex_agent.lora_ref import LoraRef
from artifex_agent.presets import builtin, resolve


def test_fast_is_four_steps_without_cfg_on_the_lightning_lora_pair() -> None:
    fast = resolve(JobSpec.from_dict({"prompt": "a fox", "preset": "fast"}), builtin())
    assert (fast.steps, fast.guidance, fast.guidance_2, fast.scheduler, fast.shift) == (4, 1.0, 1.0, "euler", 5.0)
    assert [(r.expert, r.strength) for r in fast.loras] == [("high", 1.0), ("low", 1.0)]
    assert fast.boundary_ratio == 0.875 and fast.preset == "fast"
    i2v = resolve(JobSpec.from_dict({"prompt": "a fox", "preset": "fast", "image": "in/a.png"}), builtin())
    assert i2v.boundary_ratio == 0.9 and all("i2v" in r.name for r in i2v.loras)


def test_quality_keeps_the_models_defaults() -> None:
    quality = resolve(JobSpec.from_dict({"prompt": "a fox", "preset": "quality"}), builtin())
    assert quality == JobSpec(prompts=["a fox"], preset="quality")


def test_fields_the_job_sets_win_over_the_preset() -> None:
    raw = {"prompt": "a fox", "preset": "fast", "steps": 40, "loras": ["style:0.6"], "shift": 3}
    spec = resolve(JobSpec.from_dict(raw), builtin())
    # 40 is also JobSpec's default: it counts because the job file named it.
    assert (spec.steps, spec.shift, spec.guidance) == (40, 3.0, 1.0)
    assert spec.loras == [LoraRef("style", 0.6, "both")]


def test_a_spec_built_in_python_takes_the_preset_for_fields_left_at_their_defaults() -> None:
    spec = resolve(JobSpec(prompts=["a fox"], preset="fast", steps=6), builtin())
    assert (spec.steps, spec.guidance, spec.scheduler) == (6, 1.0, "euler")


def test_unknown_presets_name_the_known_ones_and_point_encoder_presets_elsewhere() -> None:
    with pytest.raises(RequestError, match="known: fast, quality"):
        resolve(JobSpec(prompts=["a fox"], preset="turbo"), builtin())
    with pytest.raises(RequestError, match="encode_preset"):
        resolve(JobSpec(prompts=["a fox"], preset="veryslow"), builtin())


def test_the_cluster_file_overrides_and_extends_the_builtins() -> None:
    cfg = ClusterConfig.from_dict({"presets": {
        "fast": {"steps": 6, "t2v": {"loras": ["my-high:1:high", "my-low:0.9:low"]}},
        "style": {"description": "ink", "loras": ["ink:0.7"], "guidance": 3.5}}})
    fast = resolve(JobSpec(prompts=["a fox"], preset="fast"), cfg.presets)
    assert (fast.steps, fast.scheduler, fast.boundary_ratio) == (6, "euler", 0.875)
    assert [r.name for r in fast.loras] == ["my-high", "my-low"]
    style = resolve(JobSpec(prompts=["a fox"], preset="style"), cfg.presets)
    assert (style.guidance, style.loras) == (3.5, [LoraRef("ink", 0.7)])
    assert set(cfg.presets) == {"fast", "quality", "style"}
    assert ClusterConfig().presets.keys() == {"fast", "quality"}


@pytest.mark.parametrize("table, words", [
    ({"fast": {"codec": "av1"}}, r"\[presets.fast\] unknown key\(s\): codec"),
    ({"x": {"steps": "four"}}, r"\[presets.x\].*steps"),
    ({"x": {"loras": ["a:9"]}}, r"\[presets.x\].*strength"),
    ({"x": {"scheduler": "ddim"}}, r"\[presets.x\].*scheduler"),
    ({"x": {"t2v": {"seed": 1}}}, r"\[presets.x.t2v\] unknown key"),
    ({"x": {"boundary_ratio": 1.5}}, r"\[presets.x\].*boundary_ratio"),
    ({"x": 3}, r"\[presets.x\] must be a table"),
])
def test_bad_preset_tables_are_refused_with_the_table_named(table: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        ClusterConfig.from_dict({"presets": table})
