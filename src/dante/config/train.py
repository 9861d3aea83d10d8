"""The student's and training's sections of the recipe (stage 4, ``dante.train``): the student
and its adapters, the objective and each loss term's settings, the filters, on-policy training,
the curriculum's pacing and the loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from dante.config.base import Section, move_keys


class PeftConfig(Section):
    """LoRA adapters on the student through the ``peft`` library (``student.peft``; full
    fine-tuning when unset). Only the adapters and ``modules_to_save`` train."""

    method: Literal["lora"] = Field("lora", description="Adapter type (peft's LoRA).")
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: float = Field(32.0, gt=0.0, description="LoRA alpha: the update is scaled by alpha / r.")
    dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Dropout on the LoRA branch's input (peft's default 0; > 0 keeps a copy of every adapted "
        "layer's input, which costs memory: docs/training.md).",
    )
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Module names (or name suffixes) that get adapters; 'all-linear': every linear layer but the head.",
    )
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="Modules trained in full next to the adapters (e.g. [embed_tokens]; a tied head follows it).",
    )
    save_merged: bool = Field(
        True, description="Also write the base with the adapters merged in, to <student dir>/merged."
    )
    base_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description=(
            "dtype of the frozen base weights: 'auto' = bfloat16 when train.mixed_precision resolves to bf16 "
            "(half the weight memory; adapters stay fp32), else float32."
        ),
    )

    @model_validator(mode="after")
    def _targets(self) -> PeftConfig:
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ValueError("target_modules is empty: name the modules that get adapters, or 'all-linear'")
        return self


class StudentConfig(Section):
    """The model being distilled into (stage 3 "init student")."""

    model: str = Field("", description="Hub id, local folder, GGUF file, or packaged name (pypi:...).")
    revision: str | None = Field(None, description="Model revision (hub).")
    gguf_file: str | None = Field(None, description="GGUF file name inside model folder, if any.")
    trust_remote_code: bool = Field(False, description="Allow model code from the model repo.")
    use_chat_template: bool = Field(
        True, description="Render records with the student's chat template; raw text when False."
    )
    require_chat_template: bool = Field(
        False, description="Error if use_chat_template is on and the tokenizer has none."
    )
    attn_implementation: str | None = Field(
        None, description="'sdpa', 'eager', 'flash_attention_2', ... (default: transformers' choice)."
    )
    peft: PeftConfig | None = Field(
        None, description="LoRA adapters through peft (e.g. {r: 16, alpha: 32}); unset: full fine-tuning."
    )
    num_parameters: int | None = Field(
        None, ge=1, description="Parameter count hint for `dante plan` when the model is not local."
    )
    num_layers: int | None = Field(
        None, ge=1, description="Decoder layers hint for `dante plan`'s attention FLOPs when the model is not local."
    )
    hidden_size: int | None = Field(
        None, ge=1, description="Hidden size hint for `dante plan`'s attention FLOPs when the model is not local."
    )


class CWCESettings(Section):
    """``train.loss.cwce``: the card's confidence-weighted CE, the lead term of the cached records. Its
    confidence weights w(H) are every cached-record term's (token KD and the chunk term are weighted
    by them too), and λ_CE(t), its schedule, is the scale the other terms' λ are set against."""

    weighted: bool = Field(True, description="Confidence weighting w(H); false = plain masked CE.")
    floor: float = Field(0.30, ge=0.0, description="w(inf): the weight of a completion the teacher was unsure of.")
    span: float = Field(
        0.70,
        ge=0.0,
        description="w(-inf) - w(inf): floor + span is the weight of a fully confident one (0: constant w).",
    )
    slope: float = Field(1.5, gt=0.0, description="Logistic slope in H (per nat): how fast w falls around the center.")
    center: float = Field(1.5, description="Entropy (nats) where w is halfway between floor + span and floor.")
    normalise: Literal["token", "sequence", "card"] = Field(
        "token",
        description=(
            "token: sum_t w_t*CE_t / sum_t w_t over the global batch; sequence: mean CE per record, then "
            "weighted mean; card: (1/N) sum_i w_i*CE_i literally (see dante.train.objective.losses)."
        ),
    )
    schedule: bool = Field(True, description="lambda_CE ramp; false = 1.0 throughout.")
    start: float = Field(0.70, gt=0.0, description="lambda_CE during warm-up.")
    end: float = Field(1.0, gt=0.0, description="lambda_CE at ramp_end.")
    warmup_steps: int = Field(200, ge=0, description="Steps held at start.")
    ramp_end: int = Field(2000, ge=1, description="Step where lambda_CE reaches end.")

    @model_validator(mode="after")
    def _ramp_after_warmup(self) -> CWCESettings:
        if self.schedule and self.ramp_end <= self.warmup_steps:
            raise ValueError(
                f"ramp_end ({self.ramp_end}) must come after warmup_steps ({self.warmup_steps}): "
                "lambda_CE ramps from start to end between them"
            )
        return self


class TeaSettings(Section):
    """``train.loss.tea``: the card's embedding anchor λ_TEA(t)·‖E − E₀‖²_F, λ_TEA linear over the run."""

    enabled: bool = Field(True, description="The embedding anchor; false = off.")
    start: float = Field(1.0, ge=0.0, description="lambda_TEA at the first step.")
    end: float = Field(0.1, ge=0.0, description="lambda_TEA at the last step (linear in between).")


class TokenKDSettings(Section):
    """``train.loss.token_kd``: token-level distillation from the cached teacher logprobs (not in the
    card): λ_KD(t)·Σ v·KL(q ‖ p) / D at the student positions one token on both sides."""

    weight: float = Field(
        0.0,
        ge=0.0,
        description="lambda_KD: weight of token-level distillation from the cached teacher logprobs "
        "(teacher.store_logprobs); 0 = text only (docs/training.md).",
    )
    schedule: bool = Field(
        False, description="Ramp lambda_KD from start to weight over lambda_CE's warm-up and ramp steps."
    )
    start: float = Field(0.0, ge=0.0, description="lambda_KD before cwce.warmup_steps when scheduled.")


class ChunkKDSettings(Section):
    """``train.loss.chunk_kd``: the chunk term, approximate likelihood matching on every chunk
    aligned between the teacher's and the student's tokens (docs/training.md, 'A term on every chunk')."""

    weight: float = Field(
        0.0,
        ge=0.0,
        description="lambda_chunk: weight of the chunk term (needs teacher.store_logprobs); 0 = off.",
    )
    temperature: float = Field(100.0, gt=0.0, description="tau of the binarised divergence (ALM's default: 100).")


class PolicyGradientSettings(Section):
    """``train.loss.policy_gradient``: the on-policy chunk policy gradient, the lead term of the
    student's samples (``train.on_policy``): every student token of a chunk c gets the advantage
    β·(log p_T(c) − log p_S(c))."""

    kl_coef: float = Field(
        1.0,
        ge=0.0,
        description="β: a chunk's advantage is β · (log p_T − log p_S); 0 with dense_kl.weight > 0: the dense "
        "term alone.",
    )
    score_end: bool = Field(
        False,
        description="Score the teacher's end of turn after a sample the student ended: its term "
        "log p_T(end) − log p_S(end) goes to the student's end-of-sequence token in the policy gradient, so "
        "stopping where the teacher would not is penalised (hf and vllm engines).",
    )
    baseline: Literal["none", "mean"] = Field(
        "none",
        description="Subtracted from every token's advantage in the policy gradient: none, or mean: the mean "
        "advantage over the step's sampled tokens (all ranks), which leaves the gradient unbiased and lowers "
        "its variance.",
    )
    discount: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="γ: a chunk's advantage is β·(r_c + γ·r_{c+1} + γ²·r_{c+2} + …), the discounted log-ratio of "
        "the sample from that chunk on (the end's term last); 0: its own chunk's alone (on-policy distillation's "
        "usual per-token reverse KL); 1: the whole rest of the sample (tinker-cookbook's kl_discount_factor, with "
        "chunks as the steps).",
    )
    mask_above: float | None = Field(
        None,
        gt=0.0,
        description="A chunk whose |log p_T − log p_S| exceeds this many nats is an outlier and gets no "
        "advantage (nor counts in the ones before it or in the baseline); None: every chunk counts. The masked "
        "share is logged (on_policy_masked).",
    )


class DenseKLSettings(Section):
    """``train.loss.dense_kl``: the dense on-policy term, the sparse top-k KL between the teacher's
    top-k and the student at a sample's positions that are one token on both sides."""

    weight: float = Field(0.0, ge=0.0, description="κ: the dense term's weight (needs top_k > 0); 0: off.")
    direction: Literal["reverse", "forward"] = Field(
        "reverse", description="reverse KL(student ‖ teacher) or forward KL(teacher ‖ student)."
    )
    top_k: int = Field(
        0, ge=0, le=20, description="Top-k alternatives the teacher returns per scored token of a student sample."
    )

    @model_validator(mode="after")
    def _needs_top_k(self) -> DenseKLSettings:
        if self.weight > 0 and self.top_k == 0:
            raise ValueError("the dense term needs the teacher's top-k alternatives: set top_k (e.g. 20)")
        return self


# Keys of the objective before each term owned its settings (train.loss.<old> -> train.loss.<new>),
# read with a one-line notice each (``config.base.move_keys``).
LOSS_RENAMES = {
    "cwce_floor": "cwce.floor",
    "cwce_span": "cwce.span",
    "cwce_slope": "cwce.slope",
    "cwce_center": "cwce.center",
    "normalise": "cwce.normalise",
    "ce_schedule": "cwce.schedule",
    "ce_start": "cwce.start",
    "ce_end": "cwce.end",
    "ce_warmup_steps": "cwce.warmup_steps",
    "ce_ramp_end": "cwce.ramp_end",
    "tea_start": "tea.start",
    "tea_end": "tea.end",
    "token_kd_schedule": "token_kd.schedule",
    "token_kd_start": "token_kd.start",
    "chunk_kd_temperature": "chunk_kd.temperature",
    "terms.*": "*",
}
# A term's section written as one value: the key the value is.
LOSS_SHORTHANDS = {"cwce": "weighted", "tea": "enabled", "token_kd": "weight", "chunk_kd": "weight"}
# The on-policy terms' settings, once in train.on_policy (train.<old> -> train.<new>).
ON_POLICY_RENAMES = {
    "on_policy.kl_coef": "loss.policy_gradient.kl_coef",
    "on_policy.score_end": "loss.policy_gradient.score_end",
    "on_policy.baseline": "loss.policy_gradient.baseline",
    "on_policy.dense_kl": "loss.dense_kl.weight",
    "on_policy.dense_direction": "loss.dense_kl.direction",
    "on_policy.top_k": "loss.dense_kl.top_k",
}


class LossConfig(Section):
    """The DANTE objective; every component can be switched off (ablations are one flag). Every term
    owns its settings under ``train.loss.<its name>``: the card's ``cwce`` (its confidence weights,
    shared by every term on cached records, and λ_CE) and ``tea``, ``token_kd``, ``chunk_kd``, the
    on-policy terms ``policy_gradient`` and ``dense_kl``, and registered terms by their name."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, protected_namespaces=())

    cwce: CWCESettings = Field(
        default_factory=CWCESettings,
        description="The card's confidence-weighted CE and lambda_CE (train.loss.cwce.weighted, .floor, .span, "
        ".slope, .center, .normalise, .schedule, .start, .end, .warmup_steps, .ramp_end).",
    )
    tea: TeaSettings = Field(
        default_factory=TeaSettings,
        description="The card's embedding anchor (train.loss.tea.enabled, .start, .end).",
    )
    token_kd: TokenKDSettings = Field(
        default_factory=TokenKDSettings,
        description="The token-level distillation term's settings (train.loss.token_kd.weight, .schedule, .start).",
    )
    chunk_kd: ChunkKDSettings = Field(
        default_factory=ChunkKDSettings,
        description="The chunk term's settings (train.loss.chunk_kd.weight, .temperature).",
    )
    policy_gradient: PolicyGradientSettings = Field(
        default_factory=PolicyGradientSettings,
        description="The on-policy policy gradient's settings (train.loss.policy_gradient.kl_coef, .score_end, "
        ".baseline).",
    )
    dense_kl: DenseKLSettings = Field(
        default_factory=DenseKLSettings,
        description="The dense on-policy term's settings (train.loss.dense_kl.weight, .direction, .top_k).",
    )
    chunked_ce: bool = Field(
        True,
        description="Compute the lm_head and every term in token chunks (never the full tokens x vocab logits): "
        "less memory, same gradients (dante.train.objective.chunked_ce).",
    )
    plugins: list[str] = Field(
        default_factory=list,
        description="Modules that register further loss terms, imported before the terms are read: a module "
        "name (my_package.terms) or a .py file (relative to the recipe's folder). Installed packages can also "
        "register theirs under the entry point group 'dante.loss_terms'. A registered term is switched on, "
        "with its settings, by train.loss.<its name>: {...} (docs/training.md, 'Adding a loss term').",
    )

    @model_validator(mode="before")
    @classmethod
    def _older_forms(cls, data: Any) -> Any:
        """Recipes written before each term owned its settings (``cwce_floor``, ``ce_start``,
        ``tea: false``, ``token_kd: 0.5``, ``terms: {name: ...}``, ...) load into the new places,
        with a one-line notice each."""
        return move_keys(data, LOSS_RENAMES, "train.loss", LOSS_SHORTHANDS)

    @model_validator(mode="after")
    def _term_settings_are_mappings(self) -> LossConfig:
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, dict):
                raise ValueError(
                    f"train.loss.{key}: unknown key (a registered loss term's settings are a mapping, "
                    f"train.loss.{key}: {{...}}; `dante plan RECIPE` prints every built-in setting)"
                )
        return self

    def term_settings(self) -> dict[str, dict[str, Any]]:
        """The settings of the registered (plugin) terms the recipe switches on, by term name."""
        return dict(self.model_extra or {})


class FilterConfig(Section):
    """Which teacher records are trained on: finished, answered, consistent ones (no gold answers:
    every test looks only at what the teacher wrote). Counts go to the training manifest."""

    drop_truncated: bool = Field(
        False, description="Drop records the teacher stopped at max_new_tokens (finish_reason: length)."
    )
    require_answer: bool = Field(
        False,
        description="Drop records with no extractable final answer (\\boxed{}, '####', 'the answer is', a number).",
    )
    min_self_consistency: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Drop records whose self_consistency is below this (needs teacher.consistency_samples).",
    )
    complete_reasoning: bool = Field(
        True,
        description="Drop a thinking teacher's records whose thinking was cut at the length limit or has no "
        "answer after it (reasoning_status cut / no_answer).",
    )


class OnPolicyConfig(Section):
    """On-policy distillation across tokenizers (``train.on_policy``, dante.train.sources.on_policy): the
    student writes completions of the recipe's prompts, the teacher (``teacher.*``, any engine
    that can score) scores them, and the student learns from the chunk-level reverse KL of its
    own samples, mixed with the cached off-policy records by ``fraction``. Off when fraction is 0."""

    fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of each step's prompts written by the student (GKD's λ); 0: off."
    )
    samples_per_prompt: int = Field(1, ge=1, description="Student completions per on-policy prompt.")
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature of the student (0: greedy).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling of the student.")
    max_new_tokens: int = Field(128, ge=1, description="Length cap of a student sample.")
    generate_batch: int = Field(32, ge=1, description="Student samples written per batched generate call.")
    warm_start: str | None = Field(
        None, description="A student folder to start from (e.g. an SFT run's output) instead of student.model."
    )

    @model_validator(mode="after")
    def _samples(self) -> OnPolicyConfig:
        if self.temperature == 0 and self.samples_per_prompt > 1:
            raise ValueError(
                f"temperature 0 (greedy) writes one completion per prompt, not samples_per_prompt="
                f"{self.samples_per_prompt}: set a temperature > 0 or one sample"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.fraction > 0


class PacingConfig(Section):
    """The paced curricula (``train.curriculum: competence | buckets``, dante.train.sources.curriculum):
    how fast they open up from the easiest records to all of them."""

    c0: float = Field(
        0.1, gt=0.0, le=1.0, description="competence: the share of the records (easiest first) open at the start."
    )
    buckets: int = Field(3, ge=1, description="buckets: entropy buckets visited easy to hard, one stage each.")
    full_mix: float = Field(
        0.25, ge=0.0, lt=1.0, description="Share of the run, at its end, over every record in shuffled epochs."
    )


class TrainConfig(Section):
    """Optimisation and data (stage 4 "train", stage 5 "save")."""

    output_dir: Path | None = Field(None, description="Student checkpoint folder (default: <output_dir>/student).")
    steps: int = Field(2000, ge=1, description="Optimizer steps.")
    batch_sequences: int | None = Field(128, ge=1, description="Effective batch in sequences (records) per step.")
    batch_tokens: int | None = Field(
        None, ge=1, description="Effective batch in tokens per step (instead of batch_sequences)."
    )
    micro_batch_size: int = Field(
        4,
        ge=1,
        description="Records per forward pass per device: packed into one padding-free row (packing), or padded rows.",
    )
    max_length: int = Field(4096, ge=8, description="Max tokens per record (prompt + completion).")
    packing: bool = Field(True, description="Padding-free packing of several records per row.")
    reasoning: Literal["keep", "drop"] = Field(
        "keep",
        description="A thinking teacher's reasoning: keep trains on it and the answer, in the student's own "
        "thinking convention (its chat template's, else <think>...</think> before the answer); drop trains on "
        "the answer alone (the ablation). A record with reasoning longer than max_length is dropped and counted, "
        "never cut mid-thought.",
    )
    system_prompt: Literal["keep", "drop"] = Field(
        "keep",
        description="The system prompt the teacher was given (prompts.system_prompt / system_field): keep shows it "
        "to the student too; drop trains the student on the conversation without it, so that it learns to do "
        "unasked what the teacher was told to do (a teacher prompted to reason step by step, say).",
    )
    curriculum: Literal["shuffle", "entropy", "competence", "buckets", "none"] = Field(
        "shuffle",
        description="Order of the cached records: shuffle, a seeded permutation each epoch; entropy, ascending "
        "output_entropy every epoch (the card's curriculum); competence / buckets, easy to hard paced over the "
        "run, ending on the full mix (train.pacing); none, the cache's order (docs/training.md).",
    )
    pacing: PacingConfig = Field(
        default_factory=PacingConfig, description="How the competence and buckets curricula open up."
    )
    loss: LossConfig = Field(
        default_factory=LossConfig, description="The DANTE objective (dante.train.objective.losses)."
    )
    on_policy: OnPolicyConfig = Field(
        default_factory=OnPolicyConfig, description="On-policy distillation: the student writes, the teacher scores."
    )
    filter: FilterConfig = Field(default_factory=FilterConfig, description="Which teacher records to train on.")
    allow_mixed_caches: bool = Field(
        False,
        description="Train on cache folders written with different teacher/prompt settings (cache.dir with several "
        "folders); refused otherwise.",
    )
    lr: float = Field(2e-5, gt=0.0, description="Peak learning rate of AdamW (after warm-up).")
    lr_scheduler: str = Field(
        "cosine", description="transformers scheduler name (get_scheduler): cosine, linear, constant, ..."
    )
    warmup_steps: int = Field(200, ge=0, description="Steps of linear learning-rate warm-up from 0 to lr.")
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0, description="AdamW beta1 (the card: 0.9).")
    adam_beta2: float = Field(0.95, ge=0.0, lt=1.0, description="AdamW beta2 (the card: 0.95).")
    adam_eps: float = Field(1e-8, gt=0.0, description="AdamW epsilon.")
    weight_decay: float = Field(
        0.1, ge=0.0, description="AdamW weight decay on matrices (not on biases and norm gains)."
    )
    grad_clip: float | None = Field(1.0, description="Max global grad norm; null disables.")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 where supported, else fp32."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward: less memory, more compute (one more forward)."
    )
    compile: bool = Field(
        False,
        description="torch.compile each decoder block (regional compilation, dynamic shapes): fuses the "
        "norm/RoPE/SwiGLU elementwise work; costs a one-off compile (~30 s on CPU) at the first step. Needs a C++ "
        "compiler on CPU, Triton on GPU.",
    )
    seed: int = Field(42, description="Seed of the weights' RNGs, the curriculum shuffle and the held-out split.")
    checkpoint_every: int = Field(200, ge=1, description="Steps between resumable checkpoints.")
    keep_checkpoints: int = Field(2, ge=1, description="Complete checkpoints kept on disk.")
    log_every: int = Field(1, ge=1, description="Steps between rows of metrics.jsonl (and the trackers).")
    eval_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Share of the cache held out for a validation loss.")
    eval_every: int = Field(0, ge=0, description="Steps between held-out loss evaluations (0: only at the end).")
    trackers: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list,
        description="accelerate trackers that also get every logged row (extra dante-distill[tracking]).",
    )

    @model_validator(mode="before")
    @classmethod
    def _on_policy_terms(cls, data: Any) -> Any:
        """The on-policy terms' settings written in train.on_policy, as recipes did before each term
        owned its settings, load into train.loss.policy_gradient / dense_kl with a notice each."""
        return move_keys(data, ON_POLICY_RENAMES, "train")

    @model_validator(mode="after")
    def _samples_train_something(self) -> TrainConfig:
        if self.loss.policy_gradient.kl_coef == 0 and self.loss.dense_kl.weight == 0:
            raise ValueError(
                "loss.policy_gradient.kl_coef 0 leaves nothing to train on the student's samples: set kl_coef > 0 "
                "or loss.dense_kl.weight > 0"
            )
        return self

    @model_validator(mode="after")
    def _one_batch_unit(self) -> TrainConfig:
        if self.batch_tokens is not None:
            self.__dict__["batch_sequences"] = None  # tokens win; avoid re-validation recursion
        elif self.batch_sequences is None:
            raise ValueError("set train.batch_sequences or train.batch_tokens")
        return self
