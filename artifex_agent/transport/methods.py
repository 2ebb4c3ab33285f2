"""Every RPC once: service, method, cardinality, message types, and which directions are raw bytes.

The agent's and the coordinator's server handlers, the client calls (transport/channel.py, split/streams.py) and the
names the health service and server reflection report are built from these rows (reflection describes them from
the generated descriptors these imports register); tests/transport/test_methods.py
holds them against the generated descriptors, so a proto change the table misses fails there.
A raw direction has no (de)serializer: gRPC passes the bytes through and transport/wire.py
writes and reads them, because a protobuf `bytes` field costs about half the throughput.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import grpc
from google.protobuf.message import Message

from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.proto.artifex.v1 import jobs_pb2 as jpb
from artifex_agent.proto.artifex.v1 import split_pb2 as spb

Cardinality = Literal["unary_unary", "unary_stream", "stream_unary", "stream_stream"]

_METHOD_HANDLERS: dict[Cardinality, Callable[..., grpc.RpcMethodHandler]] = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


@dataclass(frozen=True)
class Rpc:
    """One method of one service; `raw_*` directions carry hand-encoded bytes (see transport/wire.py)."""

    service: str
    method: str
    cardinality: Cardinality
    request: type[Message]
    response: type[Message]
    raw_request: bool = False
    raw_response: bool = False

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.method}"

    @property
    def request_streaming(self) -> bool:
        return self.cardinality.startswith("stream_")

    @property
    def response_streaming(self) -> bool:
        return self.cardinality.endswith("_stream")

    def handler(self, behaviour: Callable[..., Any]) -> grpc.RpcMethodHandler:
        """The server side: `behaviour` gets parsed requests, or raw bytes where the request is raw."""
        return _METHOD_HANDLERS[self.cardinality](
            behaviour,
            request_deserializer=None if self.raw_request else self.request.FromString,
            response_serializer=None if self.raw_response else self.response.SerializeToString)

    def multicallable(self, channel: grpc.aio.Channel) -> Any:
        """The client side on `channel`: raw directions take and give bytes, the others messages."""
        return getattr(channel, self.cardinality)(
            self.path,
            request_serializer=None if self.raw_request else self.request.SerializeToString,
            response_deserializer=None if self.raw_response else self.response.FromString)


_DIAGNOSTICS = "artifex.v1.Diagnostics"
_SPLIT = "artifex.v1.Split"
_JOBS = "artifex.v1.Jobs"

GENERATE = Rpc("artifex.v1.Generate", "Generate", "unary_stream", pb.GenerateRequest, pb.GenerateEvent,
               raw_response=True)
# Generate here, post-process on the agent the request names (or here): progress and results only, no frames.
DELIVER = Rpc("artifex.v1.Generate", "Deliver", "unary_stream", pb.DeliverRequest, pb.DeliverEvent)
POST_PROCESS = Rpc("artifex.v1.PostProcess", "PostProcess", "stream_stream", pb.PostProcessRequest,
                   pb.PostProcessEvent, raw_request=True)
INFO = Rpc(_DIAGNOSTICS, "Info", "unary_unary", pb.InfoRequest, pb.AgentInfo)
ECHO = Rpc(_DIAGNOSTICS, "Echo", "stream_stream", pb.EchoMessage, pb.EchoMessage)
DOWNLOAD = Rpc(_DIAGNOSTICS, "Download", "unary_stream", pb.BandwidthRequest, pb.BandwidthChunk, raw_response=True)
UPLOAD = Rpc(_DIAGNOSTICS, "Upload", "stream_unary", pb.BandwidthChunk, pb.BandwidthResult, raw_request=True)
PROBE = Rpc(_DIAGNOSTICS, "Probe", "unary_unary", pb.ProbeRequest, pb.ProbeResult)
# The client forwards these messages between two agents byte for byte: raw both ways.
DENOISE = Rpc(_SPLIT, "Denoise", "stream_stream", spb.DenoiseRequest, spb.DenoiseEvent,
              raw_request=True, raw_response=True)
CFG_PEER = Rpc(_SPLIT, "CfgPeer", "stream_stream", spb.CfgRequest, spb.CfgEvent, raw_request=True, raw_response=True)

AGENT: tuple[Rpc, ...] = (GENERATE, DELIVER, POST_PROCESS, INFO, ECHO, DOWNLOAD, UPLOAD, PROBE, DENOISE, CFG_PEER)
# The coordinator's service (all protobuf, nothing raw).
JOBS: tuple[Rpc, ...] = (
    Rpc(_JOBS, "Submit", "unary_unary", jpb.SubmitRequest, jpb.SubmitReply),
    Rpc(_JOBS, "Get", "unary_unary", jpb.GetJobRequest, jpb.Job),
    Rpc(_JOBS, "List", "unary_unary", jpb.ListJobsRequest, jpb.ListJobsReply),
    Rpc(_JOBS, "Watch", "unary_stream", jpb.WatchRequest, jpb.JobEvent),
    Rpc(_JOBS, "Cancel", "unary_unary", jpb.CancelRequest, jpb.Job),
    Rpc(_JOBS, "Retry", "unary_unary", jpb.RetryRequest, jpb.Job),
)


def services(rpcs: Iterable[Rpc]) -> tuple[str, ...]:
    """The services of `rpcs`, in table order (the names the health service and reflection report)."""
    return tuple(dict.fromkeys(rpc.service for rpc in rpcs))


AGENT_SERVICES = services(AGENT)
JOBS_SERVICES = services(JOBS)


def service_handler(service: str, servicer: object, rpcs: Iterable[Rpc]) -> grpc.GenericRpcHandler:
    """`service`'s methods among `rpcs`, each served by the servicer's method of the same name."""
    return grpc.method_handlers_generic_handler(service, {
        rpc.method: rpc.handler(getattr(servicer, rpc.method)) for rpc in rpcs if rpc.service == service})


def agent_handlers(gen: object, post: object, diag: object, split: object) -> list[grpc.GenericRpcHandler]:
    """The agent's services (Generate, PostProcess, Diagnostics, Split), registered by hand for the raw directions."""
    servicers = {GENERATE.service: gen, POST_PROCESS.service: post, INFO.service: diag, DENOISE.service: split}
    return [service_handler(service, servicers[service], AGENT) for service in AGENT_SERVICES]


def jobs_handlers(jobs: object) -> list[grpc.GenericRpcHandler]:
    """The coordinator's Jobs service, from the same table as the agent's."""
    return [service_handler(service, jobs, JOBS) for service in JOBS_SERVICES]
