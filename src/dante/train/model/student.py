"""The student being trained (stage 3 "init student", stage 5 "save"): one object per kind of
student that owns how it loads, what its TEA anchor is, what a checkpoint holds, how a run
resumes and what the finished run leaves on disk, so the train loop has no branch on the kind.

- ``FullStudent``: full fine-tuning, fp32 master weights, the whole model in every checkpoint.
- ``LoraStudent``: LoRA adapters through peft (``student.peft``, ``dante.train.model.lora`` says what
  TEA means with them); adapter-only checkpoints; the adapter folder plus ``merged/``.

Both also offer what a student that *writes* needs (on-policy training): ``generate`` samples
completions from the model being trained, ``token_logprobs`` scores given completions under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from dante.config import Recipe, save_resolved
from dante.layout import MERGED
from dante.models import ResolvedModel, load_causal_lm, load_tokenizer, resolve_model
from dante.train.model import lora
from dante.train.model.accelerator import compile_blocks
from dante.train.model.anchor import TeaAnchor
from dante.train.model.modules import parameter_counts


class FullStudent:
    """A student fine-tuned in full: every parameter trains, in fp32 master weights (mixed
    precision is autocast); TEA anchors the input embedding to its value at the start."""

    kind = "full"

    def __init__(self, recipe: Recipe) -> None:
        self.recipe, self.cfg = recipe, recipe.student
        self.ref: ResolvedModel = resolve_model(self.cfg.model, self.cfg.gguf_file)
        self.tokenizer = load_tokenizer(
            self.ref, trust_remote_code=self.cfg.trust_remote_code, revision=self.cfg.revision
        )

    # -- load ----------------------------------------------------------------------------------

    def load(self, accelerator) -> tuple[torch.nn.Module, TeaAnchor | None]:
        """The model, with gradient checkpointing and regional compilation as configured, and
        its TEA anchor (None with train.loss.tea off)."""
        train = self.recipe.train
        model = load_causal_lm(
            self.ref,
            dtype=self.weights_dtype(accelerator),
            trust_remote_code=self.cfg.trust_remote_code,
            revision=self.cfg.revision,
            attn_implementation=self.cfg.attn_implementation,
        )
        model.config.use_cache = False
        if train.gradient_checkpointing:  # later transformers 5.x rename it activation_checkpointing_enable
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = self.wrap(model, accelerator)  # after checkpointing (peft wraps the prepared layers), before compile
        anchor = self.tea_anchor(model, accelerator) if train.loss.tea.enabled else None
        if train.compile:
            n_blocks = compile_blocks(model)
            if accelerator.is_main_process:
                accelerator.print(
                    f"compile: {n_blocks} decoder blocks compiled on first use"
                    if n_blocks
                    else "compile: no repeated blocks found; running eager"
                )
        return model, anchor

    def weights_dtype(self, accelerator) -> str:
        return "float32"

    def wrap(self, model: torch.nn.Module, accelerator) -> torch.nn.Module:
        return model

    def tea_anchor(self, model: torch.nn.Module, accelerator) -> TeaAnchor | None:
        return TeaAnchor(model.get_input_embeddings().weight).attach(model)

    def core(self, model: torch.nn.Module) -> torch.nn.Module:
        """The transformers model itself (its config, forward signature and lm_head)."""
        return model

    def parameter_counts(self, model: torch.nn.Module) -> tuple[int, int]:
        """(trainable, total), before FSDP shards them."""
        return parameter_counts(model)

    # -- checkpoints ---------------------------------------------------------------------------

    def prepare_checkpoints(self, accelerator, model: torch.nn.Module) -> None:
        """Set what ``save_state`` writes (the prepared model): here, all of it."""

    def resume(self, accelerator, model: torch.nn.Module, checkpoint: Path) -> None:
        accelerator.load_state(str(checkpoint))

    # -- the finished student ------------------------------------------------------------------

    def save(self, accelerator, model: torch.nn.Module, out: Path) -> None:
        """The student as a ``from_pretrained`` folder with its tokenizer and resolved recipe.
        Every rank calls it (FSDP / ZeRO-3 gather the weights); the main one writes."""
        state_dict = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            accelerator.unwrap_model(model).save_pretrained(out, state_dict=state_dict, safe_serialization=True)
            self.tokenizer.save_pretrained(out)
            save_resolved(self.recipe, out)

    def manifest(self) -> dict[str, Any] | None:
        """The ``peft`` entry of the training manifest."""
        return None

    # -- a student that writes (on-policy training) --------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        model: torch.nn.Module,
        prompt_ids: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seeds: Sequence[int] | None = None,
    ) -> list[Written]:
        """One completion of each prompt (``Written``: token ids, end of sequence included when
        written, and their logprobs under the model that wrote them) from the model being
        trained, in one batched HF ``generate`` with its KV cache, without gradients.

        Sampling is per row: ``RowSampler`` draws each row from its own generator seeded by
        ``seeds[i]`` (the Gumbel-max form of sampling at ``temperature`` within ``top_p``), so a
        row's sample depends on its seed alone, not on the rows batched with it: the same samples
        on one process or several. ``temperature`` 0 is greedy (seeds unused). Several samples of
        a prompt are the prompt repeated with other seeds. The model's mode is restored after."""
        if temperature > 0 and seeds is None:
            raise ValueError("sampling needs one seed per prompt (seeds=...); temperature 0 is greedy")
        net = unwrapped(model)
        was_training = net.training
        net.eval()
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = next(net.parameters()).device
        width = max(len(p) for p in prompt_ids)
        ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompt_ids):  # left padding: every completion starts at column `width`
            ids[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            mask[i, width - len(p) :] = 1
        eos = eos_token_ids(net, self.tokenizer)
        sampler = RowSampler(temperature, top_p, seeds, device)
        config = GenerationConfig(  # a clean config: no processor from the model's defaults
            max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos or None, pad_token_id=pad, use_cache=True
        )
        try:
            out = net.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                generation_config=config,
                logits_processor=LogitsProcessorList([sampler]),
            )
        finally:
            net.train(was_training)
        logprobs = sampler.finish(out)
        written = []
        for i in range(len(prompt_ids)):
            row = out[i, width:].tolist()
            end = next((k + 1 for k, t in enumerate(row) if t in eos), len(row))
            written.append(Written(row[:end], logprobs[i, :end].tolist()))
        return written

    def token_logprobs(
        self, model: torch.nn.Module, prompt_ids: Sequence[int], completion_ids: Sequence[int]
    ) -> torch.Tensor:
        """log p_S(y_j | x, y_<j) of each completion token under the model being trained, in
        float32, with gradients when they are enabled: shape (len(completion_ids),)."""
        ids = torch.tensor([list(prompt_ids) + list(completion_ids)], dtype=torch.long)
        device = next(unwrapped(model).parameters()).device
        logits = model(input_ids=ids.to(device), use_cache=False).logits[0, len(prompt_ids) - 1 : -1].float()
        target = torch.tensor(list(completion_ids), dtype=torch.long, device=logits.device)
        return torch.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)


class LoraStudent(FullStudent):
    """A student trained through LoRA adapters (``student.peft``): only the adapters and
    ``modules_to_save`` train; checkpoints hold only them; the run leaves peft's adapter
    folder and, by ``student.peft.save_merged``, the merged model in ``merged/``."""

    kind = "lora"

    def weights_dtype(self, accelerator) -> str:
        return lora.base_dtype(self.cfg.peft, accelerator.mixed_precision)

    def wrap(self, model: torch.nn.Module, accelerator) -> torch.nn.Module:
        model = lora.apply_lora(model, self.cfg.peft)
        trainable, total = parameter_counts(model)
        accelerator.print(
            f"LoRA: training {trainable:,} of {total:,} parameters ({trainable / total:.2%}), "
            f"frozen base in {str(model.get_base_model().dtype).removeprefix('torch.')}"
        )
        return model

    def tea_anchor(self, model: torch.nn.Module, accelerator) -> TeaAnchor | None:
        return lora.tea_anchor(model, accelerator.print)

    def core(self, model: torch.nn.Module) -> torch.nn.Module:
        return lora.core_model(model)

    def prepare_checkpoints(self, accelerator, model: torch.nn.Module) -> None:
        lora.adapter_only_checkpoints(accelerator, model)

    def resume(self, accelerator, model: torch.nn.Module, checkpoint: Path) -> None:
        lora.load_checkpoint(accelerator, model, checkpoint)

    def save(self, accelerator, model: torch.nn.Module, out: Path) -> None:
        card = out / "README.md"
        had_card = card.exists()
        super().save(accelerator, model, out)
        if not accelerator.is_main_process:
            return
        if not had_card:
            card.unlink(missing_ok=True)  # peft's placeholder card; `dante report` writes the real one
        if self.cfg.peft.save_merged:
            save_resolved(self.recipe, lora.save_merged(out, self.ref, self.cfg, self.tokenizer))

    def manifest(self) -> dict[str, Any]:
        peft = self.cfg.peft
        return {"method": peft.method, "adapter": ".", "merged": MERGED if peft.save_merged else None}


@dataclass
class Written:
    """A completion the student wrote: its token ids and log p_S(y_j | x, y_<j) of each under the
    weights that wrote it (the model's own distribution, temperature 1, in float32)."""

    ids: list[int]
    logprobs: list[float]


class RowSampler(LogitsProcessor):
    """Sampling with one RNG per row, run as HF generate's last logits processor under greedy
    decoding: it returns z/T (top-p filtered) plus Gumbel noise −log E, E ~ Exp(1) drawn from the
    row's own generator, whose argmax is an exact draw from softmax(z/T) restricted to the
    nucleus (the Gumbel-max trick). It also keeps log softmax(z) of each chosen token: the
    logprobs of the sample under the model that wrote it. Temperature 0: greedy, no noise."""

    def __init__(self, temperature: float, top_p: float, seeds: Sequence[int] | None, device) -> None:
        self.temperature, self.top_p = temperature, top_p
        self.generators = None
        if temperature > 0:
            self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.pending: torch.Tensor | None = None  # log softmax of the last step, until its token is known
        self.chosen: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.pending is not None:
            self.chosen.append(self.pending.gather(1, input_ids[:, -1:]).squeeze(1))
        self.pending = torch.log_softmax(scores.float(), dim=-1)
        if self.generators is None:
            return scores
        z = scores.float() / self.temperature
        if self.top_p < 1.0:
            z = _top_p_filter(z, self.top_p)
        noise = torch.stack([-torch.empty_like(z[0]).exponential_(generator=g).log() for g in self.generators])
        return z + noise

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """(rows, generated tokens) logprobs of the chosen tokens, given generate's output."""
        if self.pending is not None:
            self.chosen.append(self.pending.gather(1, sequences[:, -1:]).squeeze(1))
            self.pending = None
        return torch.stack(self.chosen, dim=1).cpu() if self.chosen else torch.zeros((sequences.shape[0], 0))


def _top_p_filter(z: torch.Tensor, top_p: float) -> torch.Tensor:
    """z with −inf outside the smallest set of tokens whose probability reaches top_p (the most
    probable token always kept)."""
    sorted_z, order = z.sort(dim=-1, descending=True)
    probs = sorted_z.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
    drop_sorted = before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
    return z.masked_fill(drop, float("-inf"))


def make_student(recipe: Recipe) -> FullStudent:
    """The student of ``recipe``: LoRA when ``student.peft`` is set, full fine-tuning otherwise."""
    return FullStudent(recipe) if recipe.student.peft is None else LoraStudent(recipe)


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The model under DDP's ``module`` wrapper (generate is not forwarded through it)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def eos_token_ids(model: torch.nn.Module, tokenizer) -> list[int]:
    """The ids that end a completion: the generation config's, else the tokenizer's."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    eos = eos if eos is not None else tokenizer.eos_token_id
    if eos is None:
        return []
    return list(eos) if isinstance(eos, list | tuple) else [int(eos)]
