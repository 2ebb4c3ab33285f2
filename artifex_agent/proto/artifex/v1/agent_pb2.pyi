from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PayloadKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYLOAD_KIND_UNSPECIFIED: _ClassVar[PayloadKind]
    PAYLOAD_KIND_RGB24: _ClassVar[PayloadKind]
    PAYLOAD_KIND_LATENT: _ClassVar[PayloadKind]

class Codec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CODEC_UNSPECIFIED: _ClassVar[Codec]
    CODEC_H264: _ClassVar[Codec]
    CODEC_HEVC: _ClassVar[Codec]
    CODEC_AV1: _ClassVar[Codec]
    CODEC_VP9: _ClassVar[Codec]

class EncoderChoice(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODER_CHOICE_UNSPECIFIED: _ClassVar[EncoderChoice]
    ENCODER_CHOICE_AUTO: _ClassVar[EncoderChoice]
    ENCODER_CHOICE_SOFTWARE: _ClassVar[EncoderChoice]
    ENCODER_CHOICE_NVENC: _ClassVar[EncoderChoice]

class VideoEncoder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VIDEO_ENCODER_UNSPECIFIED: _ClassVar[VideoEncoder]
    VIDEO_ENCODER_H264_NVENC: _ClassVar[VideoEncoder]
    VIDEO_ENCODER_HEVC_NVENC: _ClassVar[VideoEncoder]
    VIDEO_ENCODER_AV1_NVENC: _ClassVar[VideoEncoder]
    VIDEO_ENCODER_LIBX264: _ClassVar[VideoEncoder]
    VIDEO_ENCODER_LIBX265: _ClassVar[VideoEncoder]
    VIDEO_ENCODER_LIBSVTAV1: _ClassVar[VideoEncoder]
    VIDEO_ENCODER_LIBVPX_VP9: _ClassVar[VideoEncoder]

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_QUEUED: _ClassVar[Stage]
    STAGE_ACCEPTED: _ClassVar[Stage]
    STAGE_DENOISE: _ClassVar[Stage]
    STAGE_HANDOFF: _ClassVar[Stage]
    STAGE_DECODE: _ClassVar[Stage]
    STAGE_STREAM: _ClassVar[Stage]
    STAGE_RECEIVE: _ClassVar[Stage]
    STAGE_POST: _ClassVar[Stage]
    STAGE_SPLIT: _ClassVar[Stage]
    STAGE_FAILOVER: _ClassVar[Stage]
    STAGE_ERROR: _ClassVar[Stage]
    STAGE_WAITING: _ClassVar[Stage]
    STAGE_GENERATING: _ClassVar[Stage]
    STAGE_STREAMING: _ClassVar[Stage]
    STAGE_DONE: _ClassVar[Stage]
    STAGE_FAILED: _ClassVar[Stage]
    STAGE_CANCELLED: _ClassVar[Stage]

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_T2V: _ClassVar[ModelKind]
    MODEL_KIND_I2V: _ClassVar[ModelKind]
    MODEL_KIND_TI2V: _ClassVar[ModelKind]
    MODEL_KIND_UPSCALE: _ClassVar[ModelKind]

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_T2V: _ClassVar[Task]
    TASK_I2V: _ClassVar[Task]
PAYLOAD_KIND_UNSPECIFIED: PayloadKind
PAYLOAD_KIND_RGB24: PayloadKind
PAYLOAD_KIND_LATENT: PayloadKind
CODEC_UNSPECIFIED: Codec
CODEC_H264: Codec
CODEC_HEVC: Codec
CODEC_AV1: Codec
CODEC_VP9: Codec
ENCODER_CHOICE_UNSPECIFIED: EncoderChoice
ENCODER_CHOICE_AUTO: EncoderChoice
ENCODER_CHOICE_SOFTWARE: EncoderChoice
ENCODER_CHOICE_NVENC: EncoderChoice
VIDEO_ENCODER_UNSPECIFIED: VideoEncoder
VIDEO_ENCODER_H264_NVENC: VideoEncoder
VIDEO_ENCODER_HEVC_NVENC: VideoEncoder
VIDEO_ENCODER_AV1_NVENC: VideoEncoder
VIDEO_ENCODER_LIBX264: VideoEncoder
VIDEO_ENCODER_LIBX265: VideoEncoder
VIDEO_ENCODER_LIBSVTAV1: VideoEncoder
VIDEO_ENCODER_LIBVPX_VP9: VideoEncoder
STAGE_UNSPECIFIED: Stage
STAGE_QUEUED: Stage
STAGE_ACCEPTED: Stage
STAGE_DENOISE: Stage
STAGE_HANDOFF: Stage
STAGE_DECODE: Stage
STAGE_STREAM: Stage
STAGE_RECEIVE: Stage
STAGE_POST: Stage
STAGE_SPLIT: Stage
STAGE_FAILOVER: Stage
STAGE_ERROR: Stage
STAGE_WAITING: Stage
STAGE_GENERATING: Stage
STAGE_STREAMING: Stage
STAGE_DONE: Stage
STAGE_FAILED: Stage
STAGE_CANCELLED: Stage
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_T2V: ModelKind
MODEL_KIND_I2V: ModelKind
MODEL_KIND_TI2V: ModelKind
MODEL_KIND_UPSCALE: ModelKind
TASK_UNSPECIFIED: Task
TASK_T2V: Task
TASK_I2V: Task

class StreamHeader(_message.Message):
    __slots__ = ("kind", "width", "height", "channels", "frame_count", "frame_bytes", "fps", "dtype", "shape", "clip_count", "model", "protocol_version")
    KIND_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    CLIP_COUNT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    kind: PayloadKind
    width: int
    height: int
    channels: int
    frame_count: int
    frame_bytes: int
    fps: float
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    clip_count: int
    model: str
    protocol_version: int
    def __init__(self, kind: _Optional[_Union[PayloadKind, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., channels: _Optional[int] = ..., frame_count: _Optional[int] = ..., frame_bytes: _Optional[int] = ..., fps: _Optional[float] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., clip_count: _Optional[int] = ..., model: _Optional[str] = ..., protocol_version: _Optional[int] = ...) -> None: ...

class StreamTrailer(_message.Message):
    __slots__ = ("frame_count", "total_bytes", "checksum")
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    frame_count: int
    total_bytes: int
    checksum: str
    def __init__(self, frame_count: _Optional[int] = ..., total_bytes: _Optional[int] = ..., checksum: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("current_stage", "step", "total", "message", "elapsed_s", "preview", "preview_mime", "preview_step", "eta_s")
    CURRENT_STAGE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_MIME_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_STEP_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    current_stage: Stage
    step: int
    total: int
    message: str
    elapsed_s: float
    preview: bytes
    preview_mime: str
    preview_step: int
    eta_s: float
    def __init__(self, current_stage: _Optional[_Union[Stage, str]] = ..., step: _Optional[int] = ..., total: _Optional[int] = ..., message: _Optional[str] = ..., elapsed_s: _Optional[float] = ..., preview: _Optional[bytes] = ..., preview_mime: _Optional[str] = ..., preview_step: _Optional[int] = ..., eta_s: _Optional[float] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("model", "task", "prompts", "negative_prompt", "width", "height", "num_frames", "steps", "guidance_scale", "guidance_scale_2", "seed", "fps", "image", "image_path", "output", "job_id", "seeds", "loras", "scheduler", "shift", "boundary_ratio", "preview_every")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_2_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_PATH_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    LORAS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    SHIFT_FIELD_NUMBER: _ClassVar[int]
    BOUNDARY_RATIO_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_EVERY_FIELD_NUMBER: _ClassVar[int]
    model: str
    task: Task
    prompts: _containers.RepeatedScalarFieldContainer[str]
    negative_prompt: str
    width: int
    height: int
    num_frames: int
    steps: int
    guidance_scale: float
    guidance_scale_2: float
    seed: int
    fps: float
    image: bytes
    image_path: str
    output: PayloadKind
    job_id: str
    seeds: _containers.RepeatedScalarFieldContainer[int]
    loras: _containers.RepeatedCompositeFieldContainer[LoraRef]
    scheduler: str
    shift: float
    boundary_ratio: float
    preview_every: int
    def __init__(self, model: _Optional[str] = ..., task: _Optional[_Union[Task, str]] = ..., prompts: _Optional[_Iterable[str]] = ..., negative_prompt: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., num_frames: _Optional[int] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., guidance_scale_2: _Optional[float] = ..., seed: _Optional[int] = ..., fps: _Optional[float] = ..., image: _Optional[bytes] = ..., image_path: _Optional[str] = ..., output: _Optional[_Union[PayloadKind, str]] = ..., job_id: _Optional[str] = ..., seeds: _Optional[_Iterable[int]] = ..., loras: _Optional[_Iterable[_Union[LoraRef, _Mapping]]] = ..., scheduler: _Optional[str] = ..., shift: _Optional[float] = ..., boundary_ratio: _Optional[float] = ..., preview_every: _Optional[int] = ...) -> None: ...

class LoraRef(_message.Message):
    __slots__ = ("name", "strength", "expert")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    EXPERT_FIELD_NUMBER: _ClassVar[int]
    name: str
    strength: float
    expert: str
    def __init__(self, name: _Optional[str] = ..., strength: _Optional[float] = ..., expert: _Optional[str] = ...) -> None: ...

class GenerateEvent(_message.Message):
    __slots__ = ("progress", "header", "chunk", "trailer")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    header: StreamHeader
    chunk: bytes
    trailer: StreamTrailer
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., header: _Optional[_Union[StreamHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ..., trailer: _Optional[_Union[StreamTrailer, _Mapping]] = ...) -> None: ...

class DeliverRequest(_message.Message):
    __slots__ = ("generate", "post_agent", "deliveries", "reuse_held", "only", "split")
    GENERATE_FIELD_NUMBER: _ClassVar[int]
    POST_AGENT_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    REUSE_HELD_FIELD_NUMBER: _ClassVar[int]
    ONLY_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    generate: GenerateRequest
    post_agent: str
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    reuse_held: bool
    only: _containers.RepeatedScalarFieldContainer[int]
    split: SplitPlan
    def __init__(self, generate: _Optional[_Union[GenerateRequest, _Mapping]] = ..., post_agent: _Optional[str] = ..., deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ..., reuse_held: _Optional[bool] = ..., only: _Optional[_Iterable[int]] = ..., split: _Optional[_Union[SplitPlan, _Mapping]] = ...) -> None: ...

class SplitPlan(_message.Message):
    __slots__ = ("mode", "peer")
    MODE_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    mode: str
    peer: str
    def __init__(self, mode: _Optional[str] = ..., peer: _Optional[str] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("spec", "clips")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CLIPS_FIELD_NUMBER: _ClassVar[int]
    spec: PostSpec
    clips: int
    def __init__(self, spec: _Optional[_Union[PostSpec, _Mapping]] = ..., clips: _Optional[int] = ...) -> None: ...

class DeliveryProgress(_message.Message):
    __slots__ = ("index", "progress")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    index: int
    progress: Progress
    def __init__(self, index: _Optional[int] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ...) -> None: ...

class DeliveryResult(_message.Message):
    __slots__ = ("index", "post_agent", "result", "error", "held")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    POST_AGENT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    index: int
    post_agent: str
    result: PostResult
    error: ErrorStatus
    held: bool
    def __init__(self, index: _Optional[int] = ..., post_agent: _Optional[str] = ..., result: _Optional[_Union[PostResult, _Mapping]] = ..., error: _Optional[_Union[ErrorStatus, _Mapping]] = ..., held: _Optional[bool] = ...) -> None: ...

class DeliverEvent(_message.Message):
    __slots__ = ("progress", "post_progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    POST_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    post_progress: DeliveryProgress
    result: DeliveryResult
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., post_progress: _Optional[_Union[DeliveryProgress, _Mapping]] = ..., result: _Optional[_Union[DeliveryResult, _Mapping]] = ...) -> None: ...

class PostSpec(_message.Message):
    __slots__ = ("output_name", "upscale", "upscale_model", "crf", "preset", "fps", "encode", "job_id", "split_clips", "video_codec", "encoder_choice", "source_path")
    OUTPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    UPSCALE_FIELD_NUMBER: _ClassVar[int]
    UPSCALE_MODEL_FIELD_NUMBER: _ClassVar[int]
    CRF_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_CLIPS_FIELD_NUMBER: _ClassVar[int]
    VIDEO_CODEC_FIELD_NUMBER: _ClassVar[int]
    ENCODER_CHOICE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PATH_FIELD_NUMBER: _ClassVar[int]
    output_name: str
    upscale: int
    upscale_model: str
    crf: int
    preset: str
    fps: float
    encode: bool
    job_id: str
    split_clips: bool
    video_codec: Codec
    encoder_choice: EncoderChoice
    source_path: str
    def __init__(self, output_name: _Optional[str] = ..., upscale: _Optional[int] = ..., upscale_model: _Optional[str] = ..., crf: _Optional[int] = ..., preset: _Optional[str] = ..., fps: _Optional[float] = ..., encode: _Optional[bool] = ..., job_id: _Optional[str] = ..., split_clips: _Optional[bool] = ..., video_codec: _Optional[_Union[Codec, str]] = ..., encoder_choice: _Optional[_Union[EncoderChoice, str]] = ..., source_path: _Optional[str] = ...) -> None: ...

class PostProcessRequest(_message.Message):
    __slots__ = ("spec", "header", "chunk", "trailer")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    spec: PostSpec
    header: StreamHeader
    chunk: bytes
    trailer: StreamTrailer
    def __init__(self, spec: _Optional[_Union[PostSpec, _Mapping]] = ..., header: _Optional[_Union[StreamHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ..., trailer: _Optional[_Union[StreamTrailer, _Mapping]] = ...) -> None: ...

class PostResult(_message.Message):
    __slots__ = ("output_paths", "output_bytes", "frames", "width", "height", "sha256", "receive_s", "upscale_s", "encode_s", "payload_bytes", "video_codec", "video_encoder")
    OUTPUT_PATHS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_S_FIELD_NUMBER: _ClassVar[int]
    UPSCALE_S_FIELD_NUMBER: _ClassVar[int]
    ENCODE_S_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    VIDEO_CODEC_FIELD_NUMBER: _ClassVar[int]
    VIDEO_ENCODER_FIELD_NUMBER: _ClassVar[int]
    output_paths: _containers.RepeatedScalarFieldContainer[str]
    output_bytes: int
    frames: int
    width: int
    height: int
    sha256: _containers.RepeatedScalarFieldContainer[str]
    receive_s: float
    upscale_s: float
    encode_s: float
    payload_bytes: int
    video_codec: Codec
    video_encoder: VideoEncoder
    def __init__(self, output_paths: _Optional[_Iterable[str]] = ..., output_bytes: _Optional[int] = ..., frames: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., sha256: _Optional[_Iterable[str]] = ..., receive_s: _Optional[float] = ..., upscale_s: _Optional[float] = ..., encode_s: _Optional[float] = ..., payload_bytes: _Optional[int] = ..., video_codec: _Optional[_Union[Codec, str]] = ..., video_encoder: _Optional[_Union[VideoEncoder, str]] = ...) -> None: ...

class ErrorStatus(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class PostProcessEvent(_message.Message):
    __slots__ = ("progress", "result", "error")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    result: PostResult
    error: ErrorStatus
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[PostResult, _Mapping]] = ..., error: _Optional[_Union[ErrorStatus, _Mapping]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GpuInfo(_message.Message):
    __slots__ = ("index", "name", "memory_total", "memory_used", "temperature_c", "utilization_pct", "driver")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PCT_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    memory_total: int
    memory_used: int
    temperature_c: int
    utilization_pct: int
    driver: str
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., memory_total: _Optional[int] = ..., memory_used: _Optional[int] = ..., temperature_c: _Optional[int] = ..., utilization_pct: _Optional[int] = ..., driver: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "complete", "problem", "two_experts", "model_kind", "size_multiple", "frame_step", "max_positions", "hold_bytes", "cannot_hold")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    TWO_EXPERTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    FRAME_STEP_FIELD_NUMBER: _ClassVar[int]
    MAX_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    HOLD_BYTES_FIELD_NUMBER: _ClassVar[int]
    CANNOT_HOLD_FIELD_NUMBER: _ClassVar[int]
    name: str
    complete: bool
    problem: str
    two_experts: bool
    model_kind: ModelKind
    size_multiple: int
    frame_step: int
    max_positions: int
    hold_bytes: int
    cannot_hold: bool
    def __init__(self, name: _Optional[str] = ..., complete: _Optional[bool] = ..., problem: _Optional[str] = ..., two_experts: _Optional[bool] = ..., model_kind: _Optional[_Union[ModelKind, str]] = ..., size_multiple: _Optional[int] = ..., frame_step: _Optional[int] = ..., max_positions: _Optional[int] = ..., hold_bytes: _Optional[int] = ..., cannot_hold: _Optional[bool] = ...) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("name", "protocol_version", "version", "hostname", "platform", "gpus", "models", "encoders", "roles", "torch_version", "cuda_version", "time_unix", "active_streams", "gpu_problem", "cuda_available", "link_interface", "link_mtu")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ENCODERS_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    TORCH_VERSION_FIELD_NUMBER: _ClassVar[int]
    CUDA_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_STREAMS_FIELD_NUMBER: _ClassVar[int]
    GPU_PROBLEM_FIELD_NUMBER: _ClassVar[int]
    CUDA_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    LINK_INTERFACE_FIELD_NUMBER: _ClassVar[int]
    LINK_MTU_FIELD_NUMBER: _ClassVar[int]
    name: str
    protocol_version: int
    version: str
    hostname: str
    platform: str
    gpus: _containers.RepeatedCompositeFieldContainer[GpuInfo]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    encoders: _containers.RepeatedScalarFieldContainer[str]
    roles: _containers.RepeatedScalarFieldContainer[str]
    torch_version: str
    cuda_version: str
    time_unix: float
    active_streams: int
    gpu_problem: str
    cuda_available: bool
    link_interface: str
    link_mtu: int
    def __init__(self, name: _Optional[str] = ..., protocol_version: _Optional[int] = ..., version: _Optional[str] = ..., hostname: _Optional[str] = ..., platform: _Optional[str] = ..., gpus: _Optional[_Iterable[_Union[GpuInfo, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., encoders: _Optional[_Iterable[str]] = ..., roles: _Optional[_Iterable[str]] = ..., torch_version: _Optional[str] = ..., cuda_version: _Optional[str] = ..., time_unix: _Optional[float] = ..., active_streams: _Optional[int] = ..., gpu_problem: _Optional[str] = ..., cuda_available: _Optional[bool] = ..., link_interface: _Optional[str] = ..., link_mtu: _Optional[int] = ...) -> None: ...

class EchoMessage(_message.Message):
    __slots__ = ("seq", "payload", "sent_unix", "reply_unix")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_FIELD_NUMBER: _ClassVar[int]
    REPLY_UNIX_FIELD_NUMBER: _ClassVar[int]
    seq: int
    payload: bytes
    sent_unix: float
    reply_unix: float
    def __init__(self, seq: _Optional[int] = ..., payload: _Optional[bytes] = ..., sent_unix: _Optional[float] = ..., reply_unix: _Optional[float] = ...) -> None: ...

class BandwidthRequest(_message.Message):
    __slots__ = ("total_bytes", "chunk_bytes")
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    total_bytes: int
    chunk_bytes: int
    def __init__(self, total_bytes: _Optional[int] = ..., chunk_bytes: _Optional[int] = ...) -> None: ...

class BandwidthChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class BandwidthResult(_message.Message):
    __slots__ = ("bytes", "seconds")
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    seconds: float
    def __init__(self, bytes: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("address", "echo_count", "bandwidth_seconds", "timeout_s")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ECHO_COUNT_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    address: str
    echo_count: int
    bandwidth_seconds: float
    timeout_s: float
    def __init__(self, address: _Optional[str] = ..., echo_count: _Optional[int] = ..., bandwidth_seconds: _Optional[float] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class ProbeResult(_message.Message):
    __slots__ = ("address", "reachable", "error", "rtt_p50_ms", "rtt_p99_ms", "download_gbit", "upload_gbit", "clock_offset_s", "clock_uncertainty_s", "download_cpu", "upload_cpu", "download_system_cpu", "upload_system_cpu")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RTT_P50_MS_FIELD_NUMBER: _ClassVar[int]
    RTT_P99_MS_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_GBIT_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_GBIT_FIELD_NUMBER: _ClassVar[int]
    CLOCK_OFFSET_S_FIELD_NUMBER: _ClassVar[int]
    CLOCK_UNCERTAINTY_S_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_CPU_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_CPU_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_SYSTEM_CPU_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_SYSTEM_CPU_FIELD_NUMBER: _ClassVar[int]
    address: str
    reachable: bool
    error: str
    rtt_p50_ms: float
    rtt_p99_ms: float
    download_gbit: float
    upload_gbit: float
    clock_offset_s: float
    clock_uncertainty_s: float
    download_cpu: float
    upload_cpu: float
    download_system_cpu: float
    upload_system_cpu: float
    def __init__(self, address: _Optional[str] = ..., reachable: _Optional[bool] = ..., error: _Optional[str] = ..., rtt_p50_ms: _Optional[float] = ..., rtt_p99_ms: _Optional[float] = ..., download_gbit: _Optional[float] = ..., upload_gbit: _Optional[float] = ..., clock_offset_s: _Optional[float] = ..., clock_uncertainty_s: _Optional[float] = ..., download_cpu: _Optional[float] = ..., upload_cpu: _Optional[float] = ..., download_system_cpu: _Optional[float] = ..., upload_system_cpu: _Optional[float] = ...) -> None: ...
