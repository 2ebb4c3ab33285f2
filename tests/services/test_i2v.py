"""Image-to-video over the wire: the image as bytes or as a path confined to the inputs folder."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import grpc
import pytest
from PIL import Image

from artifex_agent.engines.checkpoint import ensure_tiny_checkpoint
from artifex_agent.local_cluster import LocalCluster
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport.channel import AgentStub, open_channel
from artifex_agent.transport.post_call import RemoteError
from bench.relay import generate_and_post
from tests.services.conftest import TOKEN

I2V = "wan2.2-tiny-i2v-a14b"


@pytest.fixture(scope="module")
def i2v_pair(pair: LocalCluster) -> LocalCluster:
    ensure_tiny_checkpoint(pair.models_root, name=I2V, variant="i2v-a14b")
    return pair


def _png(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 24), color).save(buf, format="PNG")
    return buf.getvalue()


def _run(cluster: LocalCluster, name: str, **kw: object) -> pb.PostResult:
    async def go() -> pb.PostResult:
        gen, post = open_channel(cluster.address("gen")), open_channel(cluster.address("post"))
        try:
            request = pb.GenerateRequest(model=I2V, task=pb.TASK_I2V, prompts=["it moves"], width=32, height=32,
                                         num_frames=5, steps=2, seed=1, **kw)  # type: ignore[arg-type]
            r = await generate_and_post(AgentStub(gen, TOKEN), AgentStub(post, TOKEN), request,
                                        pb.PostSpec(output_name=name, encode=True), gen_name="gen")
            return r.result
        finally:
            await gen.close()
            await post.close()
    return asyncio.run(go())


def test_i2v_with_image_bytes(i2v_pair: LocalCluster) -> None:
    res = _run(i2v_pair, "i2v/bytes", image=_png())
    assert res.frames == 5 and Path(res.output_paths[0]).is_file()


def test_i2v_with_image_path_under_inputs(i2v_pair: LocalCluster) -> None:
    inputs = i2v_pair.workdir / "inputs"
    inputs.mkdir(exist_ok=True)
    (inputs / "first.png").write_bytes(_png((10, 200, 10)))
    res = _run(i2v_pair, "i2v/path", image_path="first.png")
    assert res.frames == 5


@pytest.mark.parametrize("kw, words", [
    ({"image_path": "../cluster.toml"}, ""),
    ({"image_path": "missing.png"}, "not a file"),
    ({"image": b"not an image"}, "cannot be read"),
    ({}, "needs an image"),
])
def test_bad_i2v_images_are_invalid_argument(i2v_pair: LocalCluster, kw: dict, words: str) -> None:
    with pytest.raises(RemoteError) as err:
        _run(i2v_pair, "i2v/bad", **kw)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert words in err.value.details
