"""The agent pair end to end: generate on one agent, stream, post-process on the other."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import av
import grpc
import numpy as np
import pytest

from artifex_agent.local_cluster import LocalCluster
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport import frames, wire
from artifex_agent.transport.channel import AgentStub, open_channel
from artifex_agent.transport.post_call import RemoteError, status_code
from bench.relay import generate_and_post
from tests.services.conftest import TOKEN, outputs


def _request(cluster: LocalCluster, **kw: object) -> pb.GenerateRequest:
    fields = dict(model=cluster.model, task=pb.TASK_T2V, prompts=["a fox"], width=32, height=32, num_frames=5,
                  steps=2, guidance_scale=1.0, seed=3, fps=8, output=pb.PAYLOAD_KIND_RGB24)
    fields.update(kw)
    return pb.GenerateRequest(**fields)


async def _relay(cluster: LocalCluster, request: pb.GenerateRequest, spec: pb.PostSpec,
                 token: str = TOKEN) -> object:
    gen = open_channel(cluster.address("gen"))
    post = open_channel(cluster.address("post"))
    try:
        return await generate_and_post(AgentStub(gen, token), AgentStub(post, token), request, spec,
                                       gen_name="gen", post_name="post")
    finally:
        await gen.close()
        await post.close()


def _no_parts(cluster: LocalCluster) -> list[Path]:
    return list((cluster.workdir / "outputs").rglob("*.part"))


def test_generate_then_upscale_and_encode_gives_a_real_mp4(pair: LocalCluster) -> None:
    spec = pb.PostSpec(output_name="e2e/clip", upscale=2, video_codec=pb.CODEC_H264, crf=20, encode=True)
    relay = asyncio.run(_relay(pair, _request(pair), spec))
    res = relay.result
    path = Path(res.output_paths[0])
    assert path == outputs(pair) / "e2e" / "clip.mp4" and path.is_file()
    assert (res.frames, res.width, res.height, res.video_codec) == (5, 64, 64, pb.CODEC_H264)
    with av.open(str(path)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 5 and decoded[0].shape == (64, 64, 3)
    assert not _no_parts(pair)


def test_batch_of_prompts_gives_one_output_per_clip(pair: LocalCluster) -> None:
    spec = pb.PostSpec(output_name="batch/b", upscale=1, encode=True, split_clips=True)
    relay = asyncio.run(_relay(pair, _request(pair, prompts=["a fox", "a cat"]), spec))
    assert [Path(p).name for p in relay.result.output_paths] == ["b_0.mp4", "b_1.mp4"]
    assert relay.result.frames == 10


@pytest.mark.parametrize("kw, code, words", [
    ({"model": "no-such-model"}, grpc.StatusCode.NOT_FOUND, "no-such-model"),
    ({"model": "../etc"}, grpc.StatusCode.INVALID_ARGUMENT, ""),
    ({"num_frames": 6}, grpc.StatusCode.INVALID_ARGUMENT, "4k+1"),
    ({"width": 30}, grpc.StatusCode.INVALID_ARGUMENT, "width"),
    ({"prompts": []}, grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
])
def test_bad_generate_requests_get_clear_errors_and_write_nothing(pair: LocalCluster, kw: dict, code: grpc.StatusCode,
                                                                   words: str) -> None:
    spec = pb.PostSpec(output_name=f"bad-{code.name}-{len(kw)}", encode=True)
    with pytest.raises(RemoteError) as err:
        asyncio.run(_relay(pair, _request(pair, **kw), spec))
    assert err.value.agent == "gen" and err.value.code == code
    assert words in err.value.details
    assert not list(outputs(pair).rglob(f"bad-{code.name}*"))


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a/../../b", "C:\\x"])
def test_output_names_outside_the_output_folder_are_refused(pair: LocalCluster, name: str) -> None:
    with pytest.raises(RemoteError) as err:
        asyncio.run(_relay(pair, _request(pair), pb.PostSpec(output_name=name, encode=True)))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("token", ["", "wrong"])
def test_wrong_or_missing_token_is_unauthenticated(pair: LocalCluster, token: str) -> None:
    async def call() -> None:
        async with open_channel(pair.address("gen")) as ch:
            await AgentStub(ch, token).info()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        asyncio.run(call())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


# ------------------------------------------------------------------ raw PostProcess streams

def _stream(n: int = 3, w: int = 16, h: int = 16) -> list[bytes]:
    sender = frames.FrameSender(frames.rgb_header(w, h, n, 8.0))
    out = [sender.header_message()]
    for i in range(n):
        out += list(sender.frame_messages(np.full((h, w, 3), i * 20, np.uint8)))
    return [*out, sender.trailer_message()]


async def _post(cluster: LocalCluster, messages: list[bytes], *, stop_after: int | None = None) -> pb.PostResult:
    async def gen() -> AsyncIterator[bytes]:
        for i, m in enumerate(messages):
            if stop_after is not None and i == stop_after:
                await asyncio.sleep(3600)  # hold the stream open: the client will cancel
            yield m

    async with open_channel(cluster.address("post")) as ch:
        call = AgentStub(ch, TOKEN).post_process(gen())
        if stop_after is not None:
            async for _ in call:
                await asyncio.sleep(0.3)
                call.cancel()
                break
            return pb.PostResult()
        result = None
        async for event in call:
            if event.HasField("error"):
                # The agent's own status: grpc may tell a client still writing INTERNAL instead.
                raise RemoteError("post", status_code(event.error.code), event.error.message)
            if event.HasField("result"):
                result = event.result
        assert result is not None
        return result


def _expect(cluster: LocalCluster, messages: list[bytes], code: grpc.StatusCode, words: str) -> None:
    with pytest.raises(RemoteError) as err:
        asyncio.run(_post(cluster, messages))
    assert err.value.code == code, err.value.details
    assert words in err.value.details
    assert not _no_parts(cluster)


def _spec(name: str) -> bytes:
    return wire.encode_spec(pb.PostSpec(output_name=name, encode=True))


def test_raw_stream_of_frames_is_encoded(pair: LocalCluster) -> None:
    res = asyncio.run(_post(pair, [_spec("raw/ok"), *_stream()]))
    assert res.frames == 3 and Path(res.output_paths[0]).is_file()


def test_first_message_must_be_a_spec(pair: LocalCluster) -> None:
    _expect(pair, _stream(), grpc.StatusCode.INVALID_ARGUMENT, "PostSpec")


def test_frame_of_the_wrong_size_is_rejected(pair: LocalCluster) -> None:
    messages = [_spec("raw/wrong"), *_stream()]
    messages[3] = wire.encode_chunk(bytes(16 * 15 * 3))
    _expect(pair, messages, grpc.StatusCode.DATA_LOSS, "larger")
    assert not (outputs(pair) / "raw" / "wrong.mp4").exists()


def test_stream_cut_before_its_trailer_is_rejected(pair: LocalCluster) -> None:
    _expect(pair, [_spec("raw/cut"), *_stream()[:-1]], grpc.StatusCode.DATA_LOSS, "trailer")
    assert not (outputs(pair) / "raw" / "cut.mp4").exists()


def test_checksum_mismatch_is_rejected(pair: LocalCluster) -> None:
    messages = [_spec("raw/sum"), *_stream()]
    messages[2] = wire.encode_chunk(b"\x07" * (16 * 16 * 3))  # frame 0 is all zeros: change it
    _expect(pair, messages, grpc.StatusCode.DATA_LOSS, "checksum")
    assert not (outputs(pair) / "raw" / "sum.mp4").exists()


def test_client_that_vanishes_mid_stream_leaves_nothing_and_agent_serves_on(pair: LocalCluster) -> None:
    asyncio.run(_post(pair, [_spec("raw/vanish"), *_stream(n=8)], stop_after=5))
    # The agent notices the cancelled stream and removes its .part.
    for _ in range(50):
        if not _no_parts(pair):
            break
        asyncio.run(asyncio.sleep(0.1))
    assert not _no_parts(pair)
    assert not (outputs(pair) / "raw" / "vanish.mp4").exists()
    res = asyncio.run(_post(pair, [_spec("raw/after"), *_stream()]))
    assert res.frames == 3


def test_spandrel_upscale_model_named_in_the_spec(pair: LocalCluster) -> None:
    from safetensors.torch import save_file

    from tests.engines.test_upscale import esrgan_state

    upscale_dir = pair.models_root / "upscale"
    upscale_dir.mkdir(exist_ok=True)
    save_file(esrgan_state(scale=2), str(upscale_dir / "tiny-esrgan-2x.safetensors"))
    spec = pb.PostSpec(output_name="esrgan/clip", upscale=2, upscale_model="tiny-esrgan-2x.safetensors", encode=True)
    res = asyncio.run(_relay(pair, _request(pair), spec)).result
    assert (res.width, res.height, res.frames) == (64, 64, 5)
    with pytest.raises(RemoteError) as err:
        asyncio.run(_relay(pair, _request(pair), pb.PostSpec(output_name="esrgan/x", upscale=2,
                                                               upscale_model="nope.safetensors", encode=True)))
    assert err.value.code == grpc.StatusCode.NOT_FOUND
