"""PostProcess reading a post-only job's frames itself (PostSpec.source_path), confined to the inputs root."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import av
import grpc
import numpy as np
import pytest
from PIL import Image

from artifex_agent.local_cluster import LocalCluster
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport.channel import AgentStub, open_channel
from artifex_agent.transport.post_call import RemoteError, post_process
from tests.services.conftest import TOKEN


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield


def _post(cluster: LocalCluster, source: str, name: str) -> pb.PostResult:
    async def go() -> pb.PostResult:
        channel = open_channel(cluster.address("post"))
        try:
            spec = pb.PostSpec(output_name=name, encode=True, fps=8.0, upscale=2, source_path=source)
            return await post_process(AgentStub(channel, TOKEN), "post", spec, _nothing())
        finally:
            await channel.close()
    return asyncio.run(go())


def test_agent_reads_a_frame_folder_from_its_inputs_root(pair: LocalCluster) -> None:
    folder = pair.workdir / "inputs" / "post-source" / "shot"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        Image.fromarray(np.full((16, 24, 3), 60 * i, np.uint8)).save(folder / f"{i + 1}.png")
    res = _post(pair, "post-source/shot", "post-source/shot")
    assert res.frames == 3 and (res.width, res.height) == (48, 32)
    with av.open(res.output_paths[0]) as c:
        assert sum(1 for _ in c.decode(video=0)) == 3


@pytest.mark.parametrize("source", ["../outside", "/etc", "post-source/escape"])
def test_a_source_outside_the_inputs_root_is_refused(pair: LocalCluster, tmp_path: Path, source: str) -> None:
    inputs = pair.workdir / "inputs" / "post-source"
    inputs.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "frames"
    outside.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(outside / "1.png")
    if not (inputs / "escape").is_symlink():
        (inputs / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RemoteError) as err:
        _post(pair, source, "post-source/never")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert not list((pair.workdir / "outputs").rglob("never*"))
