"""Submit refuses a job no agent could run, at once and with every problem listed (issue 14, item 1).

Against a real coordinator and the shared real agents, one of which also holds the tiny TI2V
checkpoint, whose sizes go in steps of 32 (its VAE is 16x, not 8x): a rule only the agents know.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import grpc
import pytest

from artifex_agent.cli.main import main
from artifex_agent.config import AgentConfig, ClusterConfig
from artifex_agent.coordinator.agents import AgentHandle, AgentPool
from artifex_agent.coordinator.messages import spec_to_pb
from artifex_agent.errors import ExitCode, RequestError
from artifex_agent.jobspec import JobSpec
from artifex_agent.local_cluster import DEMO_MODEL, LocalCluster, free_port, write_cluster_toml
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import jobs_pb2 as jpb
from artifex_agent.proto.artifex.v1 import jobs_pb2_grpc
from tests.coordinator.conftest import Coordinator, ensure_up, spec
from tests.processes import stop_together

TI2V = "wan2.2-tiny-ti2v"


@pytest.fixture(scope="module")
def checking(agents: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """A coordinator that has heard from both agents, which hold the tiny T2V and TI2V models."""
    from artifex_agent.engines.checkpoint import ensure_tiny_checkpoint

    # Before the coordinator starts, so the agents' first Info lists it.
    ensure_tiny_checkpoint(agents.models_root, name=TI2V, variant="ti2v")
    ensure_up(agents)
    c = Coordinator(tmp_path_factory.mktemp("checking"), agents).start()
    try:
        with c.client() as client:
            c.wait_for_agents(client)
        yield c
    finally:
        stop_together([c.child] if c.child is not None else [])


def _other(model: str, **kw: Any) -> JobSpec:
    """The tiny job for another model."""
    return dataclasses.replace(spec(**kw), model=model)


def _ti2v(**kw: Any) -> JobSpec:
    return _other(TI2V, **kw)


def _raw_submit(coordinator: Coordinator, message: jpb.JobSpec) -> grpc.RpcError:
    """Submit as a program in another language would (no client-side checks); the error it gets."""
    with grpc.insecure_channel(coordinator.address) as channel:
        with pytest.raises(grpc.RpcError) as err:
            jobs_pb2_grpc.JobsStub(channel).Submit(jpb.SubmitRequest(spec=message), timeout=10)
    return err.value


def test_a_bad_size_is_refused_at_submit_with_every_problem(checking: Coordinator) -> None:
    message = spec_to_pb(spec())
    message.width, message.num_frames = 250, 18
    err = _raw_submit(checking, message)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.details() or ""
    assert "2 problems" in details
    assert f"width must be a multiple of 16 for {DEMO_MODEL}; got 250 (try 240 or 256)" in details
    assert "frames must be 4k+1, e.g. 17; got 18" in details
    with checking.client() as client:
        assert client.list() == []


def test_the_python_client_refuses_before_sending(checking: Coordinator) -> None:
    with checking.client() as client:
        with pytest.raises(RequestError) as err:
            client.submit(spec(width=250, frames=18))
        assert "(try 240 or 256)" in str(err.value) and "4k+1" in str(err.value)
        assert client.list() == []


def test_the_size_rules_come_from_the_agents_model(checking: Coordinator) -> None:
    # 48 passes every Wan2.2 model's 16, so only the agents' word for this model refuses it.
    with checking.client() as client:
        with pytest.raises(RequestError, match=rf"width must be a multiple of 32 for {TI2V}; got 48 \(try 32 or 64\)"):
            client.submit(_ti2v(width=48))
        message = spec_to_pb(_ti2v(width=48))
        message.num_frames = 6
        details = _raw_submit(checking, message).details() or ""
        assert "multiple of 32" in details and "4k+1, e.g. 5; got 6" in details
        assert client.list() == []


def test_a_model_no_agent_has_is_refused_naming_those_they_have(checking: Coordinator) -> None:
    with checking.client() as client:
        with pytest.raises(RequestError) as err:
            client.submit(_other("wan2.2-tiny-t2v-a41b"))
        text = str(err.value)
        assert "model 'wan2.2-tiny-t2v-a41b' is on no agent" in text
        assert f"did you mean {DEMO_MODEL!r}?" in text and TI2V in text
        message = spec_to_pb(_other("wan2.2-tiny-t2v-a41b"))
        message.width = 250
        details = _raw_submit(checking, message).details() or ""
        assert "is on no agent" in details and "(try 240 or 256)" in details  # with the job's other problems
        assert client.list() == []


def test_an_image_for_a_text_only_model_is_refused(checking: Coordinator) -> None:
    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(png, format="PNG")
    with checking.client() as client:
        # The image models the agents hold: tests/coordinator/test_job_kinds.py adds an i2v one to the shared agents.
        with pytest.raises(RequestError, match=f"model {DEMO_MODEL!r} is text-to-video: drop the image, or use "
                                               f"(\\S+ or )?{TI2V}"):
            client.submit(spec(image_data=png.getvalue()))
        assert client.list() == []


def test_a_job_queues_while_no_agent_has_said_what_it_holds(tmp_path: Path) -> None:
    # Today's behaviour, kept: a coordinator started before its agents cannot judge the model yet.
    path = write_cluster_toml(tmp_path / "ghost.toml", {"ghost": {"listen": f"127.0.0.1:{free_port()}"}})
    cluster = cast(Any, SimpleNamespace(config=ClusterConfig.load(path)))
    (tmp_path / "coordinator").mkdir()
    c = Coordinator(tmp_path / "coordinator", cluster).start()
    try:
        with c.client() as client:
            job = client.get(client.submit(_other("some-model-to-come")))
            assert job.state == "queued"
            with pytest.raises(RequestError, match="4k"):  # what needs no agent is still checked
                client.submit(_other("some-model-to-come", frames=6))
    finally:
        stop_together([c.child] if c.child is not None else [])


def test_direct_mode_refuses_every_problem_before_calling_an_agent(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # Nothing listens at these addresses: a refusal has to come before any call.
    path = write_cluster_toml(tmp_path / "pair.toml", {"a": {"listen": f"127.0.0.1:{free_port()}"},
                                                       "b": {"listen": f"127.0.0.1:{free_port()}"}})
    code = main(["submit", "a fox", "--config", str(path), "--generate-on", "a", "--post-on", "b",
                 "--size", "250x256", "--frames", "18", "--no-progress"])
    err = capsys.readouterr().err
    assert code == ExitCode.FAILURE
    assert "(try 240 or 256)" in err and "4k+1, e.g. 17; got 18" in err


def _pool(infos: dict[str, pb.AgentInfo | None], roles: dict[str, list[str]]) -> AgentPool:
    """A pool as the coordinator holds it after its agents' Info calls (no channels: nothing is called)."""
    cluster = ClusterConfig()
    pool = AgentPool(cluster)
    for name, info in infos.items():
        cfg = AgentConfig(name=name, roles=roles[name])
        pool.agents[name] = AgentHandle(cfg, cast(Any, None), cast(Any, None), up=True, info=info)
    return pool


def test_a_codec_no_post_agent_writes_is_refused_with_the_rest() -> None:
    t2v = pb.ModelInfo(name="m", complete=True, model_kind=pb.MODEL_KIND_T2V, size_multiple=16, frame_step=4)
    pool = _pool({"g": pb.AgentInfo(models=[t2v], encoders=["libx264"]),
                  "p": pb.AgentInfo(encoders=["libx264"])}, {"g": ["generate"], "p": ["post"]})
    with pytest.raises(RequestError) as err:
        JobSpec(prompts=["a fox"], model="m", codec="av1", frames=6).validate(pool)
    assert "codec 'av1' with encoder 'auto' needs av1_nvenc or libsvtav1" in str(err.value)
    assert "4k+1" in str(err.value)
    JobSpec(prompts=["a fox"], model="m").validate(pool)
    # A post agent not heard from yet may have the encoder: the job queues.
    JobSpec(prompts=["a fox"], model="m", codec="av1").validate(
        _pool({"g": pb.AgentInfo(models=[t2v]), "p": None}, {"g": ["generate"], "p": ["post"]}))
