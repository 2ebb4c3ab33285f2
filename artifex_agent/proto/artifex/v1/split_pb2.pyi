from artifex_agent.proto.artifex.v1 import agent_pb2 as _agent_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CfgRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CFG_ROLE_UNSPECIFIED: _ClassVar[CfgRole]
    CFG_ROLE_COND: _ClassVar[CfgRole]
    CFG_ROLE_UNCOND: _ClassVar[CfgRole]
CFG_ROLE_UNSPECIFIED: CfgRole
CFG_ROLE_COND: CfgRole
CFG_ROLE_UNCOND: CfgRole

class TensorInfo(_message.Message):
    __slots__ = ("name", "dtype", "shape", "nbytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    nbytes: int
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., nbytes: _Optional[int] = ...) -> None: ...

class SchedulerState(_message.Message):
    __slots__ = ("class_name", "config_sha256", "schedule_sha256", "step_index", "begin_index", "lower_order_nums", "this_order", "timestep_list")
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SHA256_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_SHA256_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    BEGIN_INDEX_FIELD_NUMBER: _ClassVar[int]
    LOWER_ORDER_NUMS_FIELD_NUMBER: _ClassVar[int]
    THIS_ORDER_FIELD_NUMBER: _ClassVar[int]
    TIMESTEP_LIST_FIELD_NUMBER: _ClassVar[int]
    class_name: str
    config_sha256: str
    schedule_sha256: str
    step_index: int
    begin_index: int
    lower_order_nums: int
    this_order: int
    timestep_list: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, class_name: _Optional[str] = ..., config_sha256: _Optional[str] = ..., schedule_sha256: _Optional[str] = ..., step_index: _Optional[int] = ..., begin_index: _Optional[int] = ..., lower_order_nums: _Optional[int] = ..., this_order: _Optional[int] = ..., timestep_list: _Optional[_Iterable[int]] = ...) -> None: ...

class HandoffHeader(_message.Message):
    __slots__ = ("protocol_version", "format_version", "model", "model_fingerprint", "request", "next_step", "total_steps", "scheduler", "tensors", "total_bytes", "compute_dtype")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    NEXT_STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    format_version: int
    model: str
    model_fingerprint: str
    request: _agent_pb2.GenerateRequest
    next_step: int
    total_steps: int
    scheduler: SchedulerState
    tensors: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    total_bytes: int
    compute_dtype: str
    def __init__(self, protocol_version: _Optional[int] = ..., format_version: _Optional[int] = ..., model: _Optional[str] = ..., model_fingerprint: _Optional[str] = ..., request: _Optional[_Union[_agent_pb2.GenerateRequest, _Mapping]] = ..., next_step: _Optional[int] = ..., total_steps: _Optional[int] = ..., scheduler: _Optional[_Union[SchedulerState, _Mapping]] = ..., tensors: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., total_bytes: _Optional[int] = ..., compute_dtype: _Optional[str] = ...) -> None: ...

class DenoiseSpec(_message.Message):
    __slots__ = ("request", "stop_step", "stop_at_boundary", "handoff", "resume")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    STOP_STEP_FIELD_NUMBER: _ClassVar[int]
    STOP_AT_BOUNDARY_FIELD_NUMBER: _ClassVar[int]
    HANDOFF_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    request: _agent_pb2.GenerateRequest
    stop_step: int
    stop_at_boundary: bool
    handoff: bool
    resume: bool
    def __init__(self, request: _Optional[_Union[_agent_pb2.GenerateRequest, _Mapping]] = ..., stop_step: _Optional[int] = ..., stop_at_boundary: _Optional[bool] = ..., handoff: _Optional[bool] = ..., resume: _Optional[bool] = ...) -> None: ...

class DenoiseRequest(_message.Message):
    __slots__ = ("spec", "chunk", "trailer", "handoff")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    HANDOFF_FIELD_NUMBER: _ClassVar[int]
    spec: DenoiseSpec
    chunk: bytes
    trailer: _agent_pb2.StreamTrailer
    handoff: HandoffHeader
    def __init__(self, spec: _Optional[_Union[DenoiseSpec, _Mapping]] = ..., chunk: _Optional[bytes] = ..., trailer: _Optional[_Union[_agent_pb2.StreamTrailer, _Mapping]] = ..., handoff: _Optional[_Union[HandoffHeader, _Mapping]] = ...) -> None: ...

class DenoiseEvent(_message.Message):
    __slots__ = ("progress", "header", "chunk", "trailer", "handoff", "error")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    HANDOFF_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    progress: _agent_pb2.Progress
    header: _agent_pb2.StreamHeader
    chunk: bytes
    trailer: _agent_pb2.StreamTrailer
    handoff: HandoffHeader
    error: _agent_pb2.ErrorStatus
    def __init__(self, progress: _Optional[_Union[_agent_pb2.Progress, _Mapping]] = ..., header: _Optional[_Union[_agent_pb2.StreamHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ..., trailer: _Optional[_Union[_agent_pb2.StreamTrailer, _Mapping]] = ..., handoff: _Optional[_Union[HandoffHeader, _Mapping]] = ..., error: _Optional[_Union[_agent_pb2.ErrorStatus, _Mapping]] = ...) -> None: ...

class CfgSpec(_message.Message):
    __slots__ = ("request", "role", "emit_output")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    EMIT_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    request: _agent_pb2.GenerateRequest
    role: CfgRole
    emit_output: bool
    def __init__(self, request: _Optional[_Union[_agent_pb2.GenerateRequest, _Mapping]] = ..., role: _Optional[_Union[CfgRole, str]] = ..., emit_output: _Optional[bool] = ...) -> None: ...

class NoiseHeader(_message.Message):
    __slots__ = ("step", "tensor", "model_fingerprint", "scheduler_config_sha256", "schedule_sha256")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_CONFIG_SHA256_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_SHA256_FIELD_NUMBER: _ClassVar[int]
    step: int
    tensor: _agent_pb2.StreamHeader
    model_fingerprint: str
    scheduler_config_sha256: str
    schedule_sha256: str
    def __init__(self, step: _Optional[int] = ..., tensor: _Optional[_Union[_agent_pb2.StreamHeader, _Mapping]] = ..., model_fingerprint: _Optional[str] = ..., scheduler_config_sha256: _Optional[str] = ..., schedule_sha256: _Optional[str] = ...) -> None: ...

class CfgRequest(_message.Message):
    __slots__ = ("spec", "chunk", "trailer", "noise")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    spec: CfgSpec
    chunk: bytes
    trailer: _agent_pb2.StreamTrailer
    noise: NoiseHeader
    def __init__(self, spec: _Optional[_Union[CfgSpec, _Mapping]] = ..., chunk: _Optional[bytes] = ..., trailer: _Optional[_Union[_agent_pb2.StreamTrailer, _Mapping]] = ..., noise: _Optional[_Union[NoiseHeader, _Mapping]] = ...) -> None: ...

class CfgEvent(_message.Message):
    __slots__ = ("progress", "header", "chunk", "trailer", "noise", "error")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    progress: _agent_pb2.Progress
    header: _agent_pb2.StreamHeader
    chunk: bytes
    trailer: _agent_pb2.StreamTrailer
    noise: NoiseHeader
    error: _agent_pb2.ErrorStatus
    def __init__(self, progress: _Optional[_Union[_agent_pb2.Progress, _Mapping]] = ..., header: _Optional[_Union[_agent_pb2.StreamHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ..., trailer: _Optional[_Union[_agent_pb2.StreamTrailer, _Mapping]] = ..., noise: _Optional[_Union[NoiseHeader, _Mapping]] = ..., error: _Optional[_Union[_agent_pb2.ErrorStatus, _Mapping]] = ...) -> None: ...
