from artifex_agent.proto.artifex.v1 import agent_pb2 as _agent_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SplitMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPLIT_MODE_UNSPECIFIED: _ClassVar[SplitMode]
    SPLIT_MODE_NONE: _ClassVar[SplitMode]
    SPLIT_MODE_EXPERTS: _ClassVar[SplitMode]
    SPLIT_MODE_CFG: _ClassVar[SplitMode]
    SPLIT_MODE_AUTO: _ClassVar[SplitMode]

class DecodeOn(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECODE_ON_UNSPECIFIED: _ClassVar[DecodeOn]
    DECODE_ON_GENERATE: _ClassVar[DecodeOn]
    DECODE_ON_POST: _ClassVar[DecodeOn]

class JobEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_EVENT_KIND_UNSPECIFIED: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_STATE: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_PROGRESS: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_RETRY: _ClassVar[JobEventKind]
    JOB_EVENT_KIND_INFO: _ClassVar[JobEventKind]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_DONE: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
SPLIT_MODE_UNSPECIFIED: SplitMode
SPLIT_MODE_NONE: SplitMode
SPLIT_MODE_EXPERTS: SplitMode
SPLIT_MODE_CFG: SplitMode
SPLIT_MODE_AUTO: SplitMode
DECODE_ON_UNSPECIFIED: DecodeOn
DECODE_ON_GENERATE: DecodeOn
DECODE_ON_POST: DecodeOn
JOB_EVENT_KIND_UNSPECIFIED: JobEventKind
JOB_EVENT_KIND_STATE: JobEventKind
JOB_EVENT_KIND_PROGRESS: JobEventKind
JOB_EVENT_KIND_RETRY: JobEventKind
JOB_EVENT_KIND_INFO: JobEventKind
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_DONE: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class JobSpec(_message.Message):
    __slots__ = ("prompts", "model", "width", "height", "num_frames", "steps", "guidance_scale", "guidance_scale_2", "negative_prompt", "seed", "fps", "image", "upscale", "upscale_model", "crf", "encode_preset", "output", "priority", "tags", "loras", "scheduler", "shift", "boundary_ratio", "preset", "video_codec", "encoder_choice", "split_mode", "decode_on_side", "image_data", "post_input", "preview_every")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_2_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    UPSCALE_FIELD_NUMBER: _ClassVar[int]
    UPSCALE_MODEL_FIELD_NUMBER: _ClassVar[int]
    CRF_FIELD_NUMBER: _ClassVar[int]
    ENCODE_PRESET_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    LORAS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    SHIFT_FIELD_NUMBER: _ClassVar[int]
    BOUNDARY_RATIO_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    VIDEO_CODEC_FIELD_NUMBER: _ClassVar[int]
    ENCODER_CHOICE_FIELD_NUMBER: _ClassVar[int]
    SPLIT_MODE_FIELD_NUMBER: _ClassVar[int]
    DECODE_ON_SIDE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DATA_FIELD_NUMBER: _ClassVar[int]
    POST_INPUT_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_EVERY_FIELD_NUMBER: _ClassVar[int]
    prompts: _containers.RepeatedScalarFieldContainer[str]
    model: str
    width: int
    height: int
    num_frames: int
    steps: int
    guidance_scale: float
    guidance_scale_2: float
    negative_prompt: str
    seed: int
    fps: float
    image: str
    upscale: int
    upscale_model: str
    crf: int
    encode_preset: str
    output: str
    priority: int
    tags: _containers.ScalarMap[str, str]
    loras: _containers.RepeatedCompositeFieldContainer[_agent_pb2.LoraRef]
    scheduler: str
    shift: float
    boundary_ratio: float
    preset: str
    video_codec: _agent_pb2.Codec
    encoder_choice: _agent_pb2.EncoderChoice
    split_mode: SplitMode
    decode_on_side: DecodeOn
    image_data: bytes
    post_input: str
    preview_every: int
    def __init__(self, prompts: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., num_frames: _Optional[int] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., guidance_scale_2: _Optional[float] = ..., negative_prompt: _Optional[str] = ..., seed: _Optional[int] = ..., fps: _Optional[float] = ..., image: _Optional[str] = ..., upscale: _Optional[int] = ..., upscale_model: _Optional[str] = ..., crf: _Optional[int] = ..., encode_preset: _Optional[str] = ..., output: _Optional[str] = ..., priority: _Optional[int] = ..., tags: _Optional[_Mapping[str, str]] = ..., loras: _Optional[_Iterable[_Union[_agent_pb2.LoraRef, _Mapping]]] = ..., scheduler: _Optional[str] = ..., shift: _Optional[float] = ..., boundary_ratio: _Optional[float] = ..., preset: _Optional[str] = ..., video_codec: _Optional[_Union[_agent_pb2.Codec, str]] = ..., encoder_choice: _Optional[_Union[_agent_pb2.EncoderChoice, str]] = ..., split_mode: _Optional[_Union[SplitMode, str]] = ..., decode_on_side: _Optional[_Union[DecodeOn, str]] = ..., image_data: _Optional[bytes] = ..., post_input: _Optional[str] = ..., preview_every: _Optional[int] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "state", "spec", "outputs", "error", "attempts", "agent", "post_agent", "created_unix", "started_unix", "finished_unix", "cached", "current_stage", "batch_id", "idempotency_key", "sha256", "waiting", "expected_start_unix", "queued_s", "expected_end_unix")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    POST_AGENT_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    CURRENT_STAGE_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_START_UNIX_FIELD_NUMBER: _ClassVar[int]
    QUEUED_S_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_END_UNIX_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: JobState
    spec: JobSpec
    outputs: _containers.RepeatedScalarFieldContainer[str]
    error: str
    attempts: int
    agent: str
    post_agent: str
    created_unix: float
    started_unix: float
    finished_unix: float
    cached: bool
    current_stage: _agent_pb2.Stage
    batch_id: str
    idempotency_key: str
    sha256: _containers.RepeatedScalarFieldContainer[str]
    waiting: str
    expected_start_unix: float
    queued_s: float
    expected_end_unix: float
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., outputs: _Optional[_Iterable[str]] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ..., agent: _Optional[str] = ..., post_agent: _Optional[str] = ..., created_unix: _Optional[float] = ..., started_unix: _Optional[float] = ..., finished_unix: _Optional[float] = ..., cached: _Optional[bool] = ..., current_stage: _Optional[_Union[_agent_pb2.Stage, str]] = ..., batch_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., sha256: _Optional[_Iterable[str]] = ..., waiting: _Optional[str] = ..., expected_start_unix: _Optional[float] = ..., queued_s: _Optional[float] = ..., expected_end_unix: _Optional[float] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "seq", "time_unix", "state", "current_stage", "step", "total", "message", "agent", "job", "event_kind", "snapshot", "preview", "preview_mime", "preview_step", "eta_s")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_STAGE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    EVENT_KIND_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_MIME_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_STEP_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    seq: int
    time_unix: float
    state: JobState
    current_stage: _agent_pb2.Stage
    step: int
    total: int
    message: str
    agent: str
    job: Job
    event_kind: JobEventKind
    snapshot: bool
    preview: bytes
    preview_mime: str
    preview_step: int
    eta_s: float
    def __init__(self, job_id: _Optional[str] = ..., seq: _Optional[int] = ..., time_unix: _Optional[float] = ..., state: _Optional[_Union[JobState, str]] = ..., current_stage: _Optional[_Union[_agent_pb2.Stage, str]] = ..., step: _Optional[int] = ..., total: _Optional[int] = ..., message: _Optional[str] = ..., agent: _Optional[str] = ..., job: _Optional[_Union[Job, _Mapping]] = ..., event_kind: _Optional[_Union[JobEventKind, str]] = ..., snapshot: _Optional[bool] = ..., preview: _Optional[bytes] = ..., preview_mime: _Optional[str] = ..., preview_step: _Optional[int] = ..., eta_s: _Optional[float] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("spec", "idempotency_key")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    idempotency_key: str
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class SubmitReply(_message.Message):
    __slots__ = ("job_id", "existing", "job")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    existing: bool
    job: Job
    def __init__(self, job_id: _Optional[str] = ..., existing: _Optional[bool] = ..., job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "page_size", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsReply(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("job_id", "history")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    history: bool
    def __init__(self, job_id: _Optional[str] = ..., history: _Optional[bool] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class RetryRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...
