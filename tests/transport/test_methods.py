"""The RPC table: every method of the protos, served and called as the table says."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import grpc

from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import jobs_pb2 as jpb
from artifex_agent.proto.artifex.v1 import split_pb2 as spb
from artifex_agent.split import streams
from artifex_agent.transport import methods, options, wire
from artifex_agent.transport.channel import AgentStub, open_channel

PROTOS = (pb, spb, jpb)


def _rows(rpcs: Any) -> set[tuple[str, str, bool, bool, str, str]]:
    return {(r.service, r.method, r.request_streaming, r.response_streaming, r.request.DESCRIPTOR.full_name,
             r.response.DESCRIPTOR.full_name) for r in rpcs}


def test_the_table_is_every_rpc_the_protos_declare() -> None:
    declared = {(service.full_name, m.name, m.client_streaming, m.server_streaming, m.input_type.full_name,
                 m.output_type.full_name)
                for proto in PROTOS for service in proto.DESCRIPTOR.services_by_name.values() for m in service.methods}
    assert _rows(methods.AGENT + methods.JOBS) == declared
    agent_services = {s.full_name for proto in (pb, spb) for s in proto.DESCRIPTOR.services_by_name.values()}
    assert set(methods.AGENT_SERVICES) == agent_services
    assert methods.JOBS_SERVICES == tuple(jpb.DESCRIPTOR.services_by_name[s].full_name for s in ("Jobs",))
    assert methods.GENERATE.path == "/artifex.v1.Generate/Generate"


def test_raw_directions_are_exactly_the_hand_encoded_messages() -> None:
    raw = {r.request for r in methods.AGENT if r.raw_request} | {r.response for r in methods.AGENT if r.raw_response}
    assert raw == {*wire.RELAYED, pb.BandwidthChunk}
    parsed = {r.request for r in methods.AGENT + methods.JOBS if not r.raw_request} | \
        {r.response for r in methods.AGENT + methods.JOBS if not r.raw_response}
    assert not raw & parsed


class _Details(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


def test_agent_handlers_serve_each_rpc_with_its_servicers_method() -> None:
    gen, post, diag, split = _Generate(), _PostProcess(), _Diagnostics(), _Split()
    handlers = methods.agent_handlers(gen, post, diag, split)
    owners = {"artifex.v1.Generate": gen, "artifex.v1.PostProcess": post, "artifex.v1.Diagnostics": diag,
              "artifex.v1.Split": split}
    assert len(handlers) == len(methods.AGENT_SERVICES)
    for rpc in methods.AGENT:
        found = [h for h in (g.service(_Details(rpc.path)) for g in handlers) if h is not None]  # type: ignore[arg-type]
        assert len(found) == 1, rpc.path
        handler = found[0]
        assert (handler.request_streaming, handler.response_streaming) == \
            (rpc.request_streaming, rpc.response_streaming)
        assert (handler.request_deserializer is None) == rpc.raw_request
        assert (handler.response_serializer is None) == rpc.raw_response
        behaviour = getattr(handler, rpc.cardinality)
        assert behaviour == getattr(owners[rpc.service], rpc.method), rpc.path


# Stand-ins that check what reaches them: bytes on a raw direction, a parsed message on the others.
class _Generate:
    async def Generate(self, request: pb.GenerateRequest, context: Any) -> AsyncIterator[bytes]:
        assert isinstance(request, pb.GenerateRequest)
        yield wire.encode_progress(pb.Progress(current_stage=pb.STAGE_QUEUED, message=request.model))
        yield wire.encode_chunk(request.model.encode())

    async def Deliver(self, request: pb.DeliverRequest, context: Any) -> AsyncIterator[pb.DeliverEvent]:
        assert isinstance(request, pb.DeliverRequest)
        yield pb.DeliverEvent(result=pb.DeliveryResult(index=1, post_agent=request.post_agent))


class _PostProcess:
    async def PostProcess(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[pb.PostProcessEvent]:
        got = [raw async for raw in requests]
        assert all(isinstance(raw, bytes) for raw in got)
        yield pb.PostProcessEvent(result=pb.PostResult(frames=len(got), payload_bytes=sum(map(len, got))))


class _Diagnostics:
    async def Info(self, request: pb.InfoRequest, context: Any) -> pb.AgentInfo:
        assert isinstance(request, pb.InfoRequest)
        return pb.AgentInfo(name="table")

    async def Echo(self, requests: AsyncIterator[pb.EchoMessage], context: Any) -> AsyncIterator[pb.EchoMessage]:
        async for message in requests:
            yield pb.EchoMessage(seq=message.seq + 1)

    async def Download(self, request: pb.BandwidthRequest, context: Any) -> AsyncIterator[bytes]:
        yield wire.encode_bandwidth_chunk(bytes(request.chunk_bytes))

    async def Upload(self, requests: AsyncIterator[bytes], context: Any) -> pb.BandwidthResult:
        return pb.BandwidthResult(bytes=sum([wire.bandwidth_payload_size(raw) async for raw in requests]))

    async def Probe(self, request: pb.ProbeRequest, context: Any) -> pb.ProbeResult:
        return pb.ProbeResult(address=request.address, reachable=True)


class _Split:
    # The split streams are raw both ways: what comes in goes back out untouched.
    async def Denoise(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for raw in requests:
            yield raw

    async def CfgPeer(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for raw in requests:
            yield raw


async def _each(*items: Any) -> AsyncIterator[Any]:
    for item in items:
        yield item


def test_clients_and_servers_built_from_the_table_talk_on_every_rpc() -> None:
    async def main() -> None:
        server = grpc.aio.server(options=options.SERVER_OPTIONS)
        server.add_generic_rpc_handlers(methods.agent_handlers(_Generate(), _PostProcess(), _Diagnostics(), _Split()))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with open_channel(f"127.0.0.1:{port}") as channel:
                stub = AgentStub(channel)
                got = [raw async for raw in stub.generate(pb.GenerateRequest(model="m1"), timeout=10)]
                progress = wire.encode_progress(pb.Progress(current_stage=pb.STAGE_QUEUED, message="m1"))
                assert got == [progress, wire.encode_chunk(b"m1")]
                delivered = [e async for e in stub.deliver(pb.DeliverRequest(post_agent="b"), timeout=10)]
                assert delivered == [pb.DeliverEvent(result=pb.DeliveryResult(index=1, post_agent="b"))]
                sent = [wire.encode_spec(pb.PostSpec(output_name="x")), wire.encode_chunk(b"abc")]
                events = [e async for e in stub.post_process(_each(*sent), timeout=10)]
                result = pb.PostResult(frames=2, payload_bytes=sum(map(len, sent)))
                assert events == [pb.PostProcessEvent(result=result)]
                assert (await stub.info(timeout=10)).name == "table"
                echo = stub.echo(timeout=10)
                await echo.write(pb.EchoMessage(seq=41))
                assert (await echo.read()).seq == 42
                await echo.done_writing()
                downloaded = [raw async for raw in stub.download(100, 7, timeout=10)]
                assert downloaded == [wire.encode_bandwidth_chunk(bytes(7))]
                chunks = [wire.encode_bandwidth_chunk(bytes(n)) for n in (5, 300)]
                assert (await stub.upload(_each(*chunks), timeout=10)).bytes == 305
                assert (await stub.probe(pb.ProbeRequest(address="peer:1"), timeout=10)).reachable
                split = [spb.DenoiseRequest(spec=spb.DenoiseSpec(stop_step=2)).SerializeToString(),
                         wire.encode_chunk(b"z")]
                for call in (streams.denoise_call, streams.cfg_call):
                    assert [raw async for raw in call(stub, _each(*split), 10)] == split
        finally:
            await server.stop(None)

    asyncio.run(main())
