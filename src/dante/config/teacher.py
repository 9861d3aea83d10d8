"""The teacher's section of the recipe (stage 1, ``dante.teacher``): the model, its sampling, the
thinking switch, each engine's own settings as one nested section (``hf``, ``vllm``, ``openai``)
and where the requests go (``dispatch``: ``ray``, ``batch_api``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from dante.config.base import Section, move_keys


class HfTeacherConfig(Section):
    """``teacher.backend: hf``: the local transformers engine's device and thinking budget (``teacher.hf``)."""

    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    schedule: Literal["refill", "batch"] = Field(
        "refill",
        description="Greedy decoding: 'refill' lets a finished row leave at once and a waiting prompt take its place "
        "(batch_size rows at a time across the whole cache); 'batch' runs generate batch by batch, each until its "
        "longest row ends. Sampling and a thinking budget always run by batch.",
    )
    thinking_budget: int | None = Field(
        None,
        ge=1,
        description="At most this many output tokens before the thinking ends; past it the end-of-thinking marker "
        "(</think>) is forced and the model goes on to its answer (needs max_new_tokens above it).",
    )


class VllmTeacherConfig(Section):
    """``teacher.backend: vllm``: the offline engine's parallelism and memory (``teacher.vllm``)."""

    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor parallel degree.")
    pipeline_parallel_size: int = Field(1, ge=1, description="vLLM pipeline parallel degree.")
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0, description="vLLM KV-cache memory share.")
    max_model_len: int | None = Field(None, ge=1, description="vLLM context length cap.")
    quantization: str | None = Field(None, description="vLLM quantization method (e.g. 'awq', 'compressed-tensors').")


class OpenAITeacherConfig(Section):
    """``teacher.backend: openai``: the OpenAI-compatible server and how it is called (``teacher.openai``)."""

    api: Literal["chat", "completions"] = Field("chat", description="OpenAI endpoint flavour.")
    base_url: str | None = Field(
        None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (env OPENAI_BASE_URL)."
    )
    api_key: SecretStr | None = Field(None, description="API key; prefer api_key_env. Never printed or saved.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    max_retries: int = Field(6, ge=0, description="Retries per request on 429/5xx/timeouts/broken bodies.")
    request_timeout_s: float = Field(120.0, gt=0.0, description="Per-request timeout in seconds.")
    backoff_base_s: float = Field(1.0, ge=0.0, description="First back-off delay; doubles each retry (with jitter).")
    backoff_max_s: float = Field(60.0, ge=0.0, description="Back-off delay cap; Retry-After is honoured up to this.")
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens",
        description="The request field that carries teacher.max_new_tokens: OpenAI's reasoning models (o-series) "
        "accept only max_completion_tokens; vLLM, SGLang and llama.cpp accept both.",
    )


class LlamaCppTeacherConfig(Section):
    """``teacher.backend: llamacpp``: llama.cpp's own server, started by dante on this machine, serving
    the teacher's GGUF (``teacher.llamacpp``; dante.llamacpp, docs/teachers.md "llama.cpp")."""

    server: str | None = Field(
        None,
        description="The llama-server program (default: $DANTE_LLAMA_SERVER, llama-server on PATH, or the one "
        "`make llama-server` builds into the dante cache).",
    )
    gguf: str | None = Field(
        None, description="The GGUF file served (default: teacher.model's: a .gguf path or a packaged pypi: model)."
    )
    parallel: int = Field(16, ge=1, description="Server slots: sequences decoded together (continuous batching).")
    ctx_per_slot: int = Field(1024, ge=64, description="Context tokens of each slot: prompt plus completion.")
    threads: int | None = Field(
        None, ge=1, description="CPU threads of the server (default: the CPUs this process may use)."
    )
    args: list[str] = Field(
        default_factory=lambda: ["--poll", "0"],
        description="Further llama-server arguments (default --poll 0: threads sleep rather than spin between "
        "steps, measured faster on 2 shared cores, BENCHMARKS 17).",
    )
    start_timeout_s: float = Field(300.0, gt=0.0, description="Wait this long for the server to load the model.")
    request_timeout_s: float = Field(600.0, gt=0.0, description="Per-request timeout in seconds.")


class RayConfig(Section):
    """``teacher.dispatch: ray``: teacher replicas as Ray actors (docs/scale.md)."""

    address: str | None = Field(
        None, description="Ray cluster to attach to (default: $RAY_ADDRESS, else a local cluster started here)."
    )
    replicas: int = Field(1, ge=1, description="Teacher replicas (each one dante Teacher of teacher.backend).")
    min_replicas: int | None = Field(
        None,
        ge=1,
        description="Autoscaling: start with this many ready replicas and take more, up to `replicas`, as the "
        "cluster grows (default: all `replicas`).",
    )
    cpus_per_replica: float = Field(1.0, gt=0.0, description="CPUs reserved per replica.")
    gpus_per_replica: float | None = Field(
        None,
        ge=0.0,
        description="GPUs per replica (default: tensor x pipeline parallel size for vllm, 0 for hf on CPU and openai).",
    )
    batches_in_flight: int = Field(
        2, ge=1, description="Batches queued per replica (backpressure: the rest of the prompts wait on the driver)."
    )
    max_restarts: int = Field(3, ge=0, description="Replicas restarted after a crash, in all; past that the run stops.")
    max_prompt_attempts: int = Field(
        2, ge=1, description="Attempts of a prompt on its own (after its batch failed) before it counts as failing."
    )
    on_prompt_failure: Literal["stop", "skip"] = Field(
        "stop",
        description="A prompt that keeps failing: 'stop' the run (records written stay), or 'skip' it (listed by "
        "id in the manifest's failed_prompts, never written as an empty record).",
    )
    start_timeout_s: float = Field(600.0, gt=0.0, description="Wait for min_replicas to be ready (model loaded).")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local cluster started here (default: all).")

    @model_validator(mode="after")
    def _replicas(self) -> RayConfig:
        if self.min_replicas is not None and self.min_replicas > self.replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is more than replicas ({self.replicas})")
        return self


class BatchConfig(Section):
    """``teacher.dispatch: batch``: the teacher through the OpenAI batch file format, for a hosted
    Batch API (OpenAI and others, about half the price per token) or vLLM's ``run_batch``
    (docs/batch.md). Needs ``teacher.backend: openai``."""

    completion_window: str = Field("24h", description="The provider's completion window for each batch.")
    file_purpose: str = Field(
        "batch", description="`purpose` of the uploaded requests file (OpenAI: batch; Together AI: batch-api)."
    )
    max_requests: int = Field(50_000, ge=1, description="Requests per batch file (OpenAI: at most 50,000).")
    max_bytes: int = Field(
        200_000_000, ge=1_000, description="Bytes per batch file (OpenAI: at most 200 MB); more start another batch."
    )
    poll_interval_s: float = Field(
        30.0, gt=0.0, description="First wait between status checks; doubles up to poll_max_s."
    )
    poll_max_s: float = Field(600.0, gt=0.0, description="Longest wait between status checks.")
    wait_hours: float = Field(
        26.0,
        ge=0.0,
        description="How long `dante cache` waits for its batches before it stops (they keep running: re-run to "
        "ingest); 0 submits and stops.",
    )


class TeacherConfig(Section):
    """Who writes the completions, and how (stage 1 "spin up teacher")."""

    backend: Literal["hf", "vllm", "openai", "llamacpp"] = Field("hf", description="Engine that runs the teacher.")
    model: str = Field("", description="Hub id, local folder, GGUF file, or packaged name (pypi:...).")
    revision: str | None = Field(None, description="Model revision (hub) for hf/vllm.")
    trust_remote_code: bool = Field(False, description="Allow model code from the model repo. Off unless you trust it.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights dtype (hf/vllm).")
    use_chat_template: bool = Field(
        True, description="Render prompts with the teacher's chat template when it has one; raw text otherwise."
    )
    max_new_tokens: int = Field(512, ge=1, description="Completion length cap (the card: 512).")
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy (the card).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling for T>0.")
    top_logprobs: int = Field(
        20, ge=0, le=20, description="k top logprobs per token for output_entropy (0 disables; OpenAI/vLLM cap 20)."
    )
    store_logprobs: int = Field(
        0,
        ge=0,
        le=20,
        description="K: keep each generated token's bytes and logprob and its top-K alternatives in the cache "
        "(main completion; for train.loss.token_kd). 0 keeps none.",
    )
    missing_logprobs: Literal["auto", "warn", "error"] = Field(
        "auto",
        description="A server that returns no logprobs: warn (records get null entropy / no payload) or stop; "
        "auto stops when store_logprobs > 0 and warns otherwise.",
    )
    batch_size: int = Field(8, ge=1, description="Prompts per generate call (hf) or per submitted chunk (vllm).")
    thinking: Literal["auto", "on", "off"] = Field(
        "auto",
        description="A thinking teacher's switch: auto leaves the model's default; on / off set the chat template's "
        "enable_thinking (hf and vllm templates; chat_template_kwargs for vLLM/SGLang servers). Reasoning the "
        "teacher returns is kept apart from the answer either way (docs/teachers.md, 'Thinking teachers').",
    )
    reasoning_effort: Literal["low", "medium", "high"] | None = Field(
        None, description="A hosted reasoning API's effort setting (openai backend: the request's reasoning_effort)."
    )
    seed: int = Field(42, description="Sampling seed for self-consistency samples.")
    # self-consistency
    consistency_samples: int = Field(
        0, ge=0, description="k extra sampled completions for self_consistency; 0 records null."
    )
    consistency_temperature: float = Field(0.8, gt=0.0, description="Temperature of the consistency samples.")
    consistency_max_new_tokens: int | None = Field(
        None, ge=1, description="Length cap of consistency samples (default: max_new_tokens)."
    )
    dispatch: Literal["local", "ray", "batch"] = Field(
        "local",
        description="Where `dante cache` sends the teacher's requests: 'local', the engine in this process; 'ray', "
        "replicas on a Ray cluster (teacher.ray, extra [ray]); 'batch', a provider's Batch API in the OpenAI batch "
        "file format (teacher.batch_api, backend openai).",
    )
    ray: RayConfig = Field(default_factory=RayConfig, description="Settings of dispatch: ray.")
    batch_api: BatchConfig = Field(default_factory=BatchConfig, description="Settings of dispatch: batch.")
    hf: HfTeacherConfig = Field(default_factory=HfTeacherConfig, description="Settings of backend: hf.")
    vllm: VllmTeacherConfig = Field(default_factory=VllmTeacherConfig, description="Settings of backend: vllm.")
    llamacpp: LlamaCppTeacherConfig = Field(
        default_factory=LlamaCppTeacherConfig, description="Settings of backend: llamacpp (llama.cpp's server)."
    )
    openai: OpenAITeacherConfig = Field(
        default_factory=OpenAITeacherConfig, description="Settings of backend: openai (any OpenAI-compatible server)."
    )

    @model_validator(mode="after")
    def _budget_where_applied(self) -> TeacherConfig:
        if self.hf.thinking_budget is not None and self.backend != "hf":
            raise ValueError(
                f"thinking_budget is applied by the hf engine only (backend is {self.backend}): for a server use "
                "its own setting (reasoning_effort, or the server's thinking budget), or leave it unset"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _flat_backend_keys(cls, data: Any) -> Any:
        """A backend key written flat (``teacher.base_url``, as recipes did before the sections)
        goes into its section; the same key in both places is an error naming both."""
        flat = {key: f"{section}.{key}" for section, keys in BACKEND_KEYS.items() for key in keys}
        return move_keys(data, flat, "teacher")


# The backend keys as they were written before the sections, still read (``_flat_backend_keys``).
BACKEND_KEYS = {
    "hf": tuple(HfTeacherConfig.model_fields),
    "vllm": tuple(VllmTeacherConfig.model_fields),
    "openai": tuple(OpenAITeacherConfig.model_fields),
}
