"""Bad input answered with the right status and a short message, and nothing left behind (issue 10, part 7)."""

from __future__ import annotations

import asyncio
import errno
import math
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from artifex_agent.config import AgentConfig
from artifex_agent.local_cluster import LocalCluster
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.services.activity import Activity
from artifex_agent.services.postprocess import PostProcessService
from artifex_agent.transport import frames, wire
from artifex_agent.transport.channel import AgentStub, open_channel
from artifex_agent.transport.methods import POST_PROCESS
from artifex_agent.transport.post_call import status_code
from artifex_agent.transport.security import call_metadata
from tests.services.conftest import TOKEN, outputs, serving


async def _answer(address: str, messages: list[bytes], token: str = TOKEN) -> grpc.aio.AioRpcError | pb.PostResult:
    """Send `messages`, holding the frames back until the agent accepts the header, as split clients do:
    a refusal that meets the client mid-write can reach it as INTERNAL, so the agent's ErrorStatus event wins
    (transport/post_call.py)."""
    accepted = asyncio.Event()
    refusal: pb.ErrorStatus | None = None

    async def requests() -> AsyncIterator[bytes]:
        for m in messages:
            yield m
            if m[:1] == b"\x12":  # the header (field 2)
                await accepted.wait()

    async with open_channel(address) as ch:
        result = None
        try:
            async for event in AgentStub(ch, token).post_process(requests(), timeout=30):
                if event.HasField("progress"):  # not the ErrorStatus event a refusal sends first
                    accepted.set()
                if event.HasField("result"):
                    result = event.result
                if event.HasField("error"):
                    refusal = event.error
        except grpc.aio.AioRpcError as exc:
            if refusal is not None:
                return grpc.aio.AioRpcError(status_code(refusal.code), exc.initial_metadata(), exc.trailing_metadata(),
                                            refusal.message)
            return exc
        finally:
            accepted.set()
        assert result is not None
        return result


def _refused(cluster: LocalCluster, messages: list[bytes]) -> grpc.aio.AioRpcError:
    answer = asyncio.run(_answer(cluster.address("post"), messages))
    assert isinstance(answer, grpc.aio.AioRpcError), answer
    return answer


def _frames(n: int = 2, w: int = 16, h: int = 16, fps: float = 8.0) -> tuple[frames.FrameSender, list[bytes]]:
    sender = frames.FrameSender(frames.rgb_header(w, h, n, 8.0))
    header = frames.rgb_header(w, h, n, 8.0)
    header.fps = fps  # what a lying peer may announce
    out = [wire.encode_header(header)]
    for i in range(n):
        out += list(sender.frame_messages(np.full((h, w, 3), i, np.uint8)))
    return sender, out


def _spec(name: str, **kw: object) -> bytes:
    return wire.encode_spec(pb.PostSpec(output_name=name, encode=True, **kw))  # type: ignore[arg-type]


def _log(cluster: LocalCluster, agent: str) -> str:
    return cluster.children[agent].log_path.read_text(errors="replace")


def test_malformed_protobuf_is_invalid_argument_with_one_log_line(pair: LocalCluster) -> None:
    garbage = b"\xff\xff\xff\xff"
    before = _log(pair, "post").count("\n")

    async def calls() -> list[grpc.aio.AioRpcError]:
        out = []
        async with open_channel(pair.address("post")) as ch:
            md = call_metadata(TOKEN)
            for _ in range(20):
                for call in (ch.unary_unary("/artifex.v1.Diagnostics/Info")(garbage, metadata=md, timeout=10),
                             ch.stream_unary(POST_PROCESS.path)(iter([garbage]), metadata=md, timeout=10)):
                    try:
                        await call
                    except grpc.aio.AioRpcError as exc:
                        out.append(exc)
                stream = ch.unary_stream("/artifex.v1.Generate/Generate")(garbage, metadata=md, timeout=10)
                try:
                    async for _ in stream:
                        pass
                except grpc.aio.AioRpcError as exc:
                    out.append(exc)
        return out

    errors = asyncio.run(calls())
    assert len(errors) == 60
    assert {e.code() for e in errors} == {grpc.StatusCode.INVALID_ARGUMENT}
    assert all(e.details().startswith("malformed") for e in errors)
    assert not any("DecodeError" in (e.details() or "") for e in errors)
    time.sleep(0.2)
    log = _log(pair, "post")
    assert "Traceback" not in log
    assert log.count("\n") - before <= 5, "60 malformed messages must not log a line each"


def test_model_name_too_long_is_refused_before_the_file_system(pair: LocalCluster) -> None:
    async def call() -> grpc.aio.AioRpcError:
        async with open_channel(pair.address("gen")) as ch:
            request = pb.GenerateRequest(model="m" * 10_000, prompts=["x"], width=32, height=32, num_frames=5,
                                         steps=1)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in AgentStub(ch, TOKEN).generate(request, timeout=30):
                    pass
            return err.value

    err = asyncio.run(call())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit" in err.details() and "mmmmmmmmmm" * 20 not in err.details()


def test_upscale_model_name_too_long_is_refused(pair: LocalCluster) -> None:
    err = _refused(pair, [_spec("long/model", upscale=2, upscale_model="u" * 5000 + ".pth"), *_frames()[1]])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit" in err.details()


@pytest.mark.parametrize("fps", [math.nan, math.inf, -1.0, 1e9])
def test_bad_fps_in_the_spec_is_invalid_argument(pair: LocalCluster, fps: float) -> None:
    err = _refused(pair, [_spec(f"fps/spec-{fps}", fps=fps), *_frames()[1]])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "fps" in err.details()


@pytest.mark.parametrize("fps", [math.nan, -math.inf, -1.0])
def test_bad_fps_in_the_header_is_invalid_argument(pair: LocalCluster, fps: float) -> None:
    sender, messages = _frames(fps=fps)
    err = _refused(pair, [_spec(f"fps/header-{fps}"), *messages, sender.trailer_message()])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "fps" in err.details()


def test_second_trailer_is_refused(pair: LocalCluster) -> None:
    sender, messages = _frames()
    trailer = sender.trailer_message()
    err = _refused(pair, [_spec("trailer/two"), *messages, trailer, trailer])
    assert err.code() == grpc.StatusCode.DATA_LOSS and "trailer" in err.details()
    assert not (outputs(pair) / "trailer" / "two.mp4").exists()


def test_planted_links_are_never_written_through(pair: LocalCluster, tmp_path: Path) -> None:
    """The attack from issue 10 part 2, over gRPC: old-style `.part` and `.tmp` links planted in the output share."""
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"precious")
    folder = outputs(pair) / "planted"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "victim.mp4.part").symlink_to(victim)
    sender, messages = _frames()
    answer = asyncio.run(_answer(pair.address("post"), [_spec("planted/victim"), *messages, sender.trailer_message()]))
    assert isinstance(answer, pb.PostResult), answer
    assert victim.read_bytes() == b"precious"
    assert not (folder / "victim.mp4").is_symlink() and (folder / "victim.mp4").stat().st_size > 0

    other = outputs(pair) / "planted-tmp"
    other.mkdir(parents=True, exist_ok=True)
    (other / ".tmp").symlink_to(tmp_path)
    sender, messages = _frames()
    err = _refused(pair, [_spec("planted-tmp/other"), *messages, sender.trailer_message()])
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "symbolic link" in err.details()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim.bin"] and victim.read_bytes() == b"precious"
    assert not (other / "other.mp4").exists()


def test_bad_header_creates_no_output_folder(pair: LocalCluster) -> None:
    bad = frames.rgb_header(16, 16, 2, 8.0)
    bad.frame_count = 0
    err = _refused(pair, [_spec("never-made/deeper/clip"), wire.encode_header(bad)])
    assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.DATA_LOSS)
    assert not (outputs(pair) / "never-made").exists()


@pytest.mark.parametrize("method", ["/artifex.v1.Nope/Nope", "/artifex.v1.Diagnostics/Nope"])
@pytest.mark.parametrize("token", [TOKEN, ""])
def test_empty_client_stream_to_an_unknown_method_is_answered_at_once(pair: LocalCluster, method: str,
                                                                      token: str) -> None:
    async def call() -> tuple[grpc.aio.AioRpcError, float]:
        async def never() -> AsyncIterator[bytes]:
            await asyncio.sleep(3600)
            yield b""

        async with open_channel(pair.address("post")) as ch:
            start = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ch.stream_unary(method)(never(), metadata=call_metadata(token), timeout=20)
            return err.value, time.monotonic() - start

    err, took = asyncio.run(call())
    expected = grpc.StatusCode.UNIMPLEMENTED if token else grpc.StatusCode.UNAUTHENTICATED
    assert err.code() == expected and took < 2.0


# ------------------------------------------------------------------ disk full, faked in an in-process agent

def test_disk_full_is_resource_exhausted_naming_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from artifex_agent.engines import encode

    def full(self: encode.VideoEncoder, frame: np.ndarray) -> None:
        # As a write() to a full disk raises it: no file name.
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(encode.VideoEncoder, "write", full)
    out = tmp_path / "out"

    async def scenario() -> grpc.aio.AioRpcError | pb.PostResult:
        service = PostProcessService(AgentConfig(output_root=out, models_root=tmp_path / "models", device="cpu"),
                                     Activity())
        async with serving(POST_PROCESS, service.PostProcess) as address:
            sender, messages = _frames()
            return await _answer(address, [_spec("full/clip"), *messages, sender.trailer_message()])

    err = asyncio.run(scenario())
    assert isinstance(err, grpc.aio.AioRpcError)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.details() == f"disk full on {out / 'full'}"
