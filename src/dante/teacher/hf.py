"""Local transformers teacher: small teachers, CPU runs and tests (batched, left-padded generate).

Entropy per generated token comes from the raw next-token logits of each decoding step,
reduced to the top-k logprobs + tail exactly as the other engines report them, so all agree.
It is computed as generation goes (``StepEntropy``, a forward hook on the model), so the cache
keeps batch × steps floats instead of the batch × steps × vocabulary logits that
``generate(output_logits=True)`` would hold to the end of the batch (2.5 GB at batch 8 × 512
steps × a 152k vocabulary).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dante.config import TeacherConfig
from dante.models import default_device, load_causal_lm, load_tokenizer, resolve_dtype, resolve_model
from dante.prompts import Prompt, render_prompt
from dante.teacher import reasoning
from dante.teacher.base import Generation, Sampling, Teacher
from dante.teacher.entropy import topk_entropy_from_logits, topk_entropy_from_top
from dante.tokens import TokenBytes, TokenLogprobs, from_ids, marker_ids


class StepEntropy:
    """Forward hook that reduces each decoding step's last-position logits to top-k entropies
    and, with ``store`` K > 0, keeps the step's top-K token ids and logprobs and the logprob of
    the token the step chose.

    ``generate`` runs the model once per new token (prefill included) and picks the token from
    ``logits[:, -1]`` of that call: the same raw logits ``output_logits=True`` returns, before
    any logits processor (repetition penalty, temperature, top-p). Entropies of step j are in
    ``steps[j]``, one float per row of the batch. The token step j chose is the input of step
    j + 1, so its logprob is read from the one (batch × V) row kept from step j; the last
    step's is read in ``finish`` from the returned sequences.
    """

    def __init__(self, model: Any, k: int, store: int = 0) -> None:
        self.k, self.store, self.steps = k, store, []
        self.top_ids: list[Any] = []
        self.top_lps: list[Any] = []
        self.chosen_lps: list[Any] = []
        self._last: Any = None
        self._handle = model.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module: Any, args: Any, kwargs: Any, output: Any) -> None:
        logits = output.logits if hasattr(output, "logits") else output[0]
        last = logits[:, -1, :]
        if self.store == 0:
            self.steps.append(topk_entropy_from_logits(last, self.k))
            return
        # one softmax and one top-k serve the entropy's k and the payload's K
        logp = torch.log_softmax(last.float(), dim=-1)
        top = logp.topk(min(max(self.k, self.store), logp.shape[-1]), dim=-1)
        if self.k > 0:
            self.steps.append(topk_entropy_from_top(top.values[:, : self.k]))
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if self._last is not None and input_ids is not None:
            self.chosen_lps.append(self._last.gather(1, input_ids[:, -1:].to(self._last.device)).squeeze(1))
        self.top_ids.append(top.indices[:, : self.store].cpu())
        self.top_lps.append(top.values[:, : self.store].cpu())
        self._last = logp

    def finish(self, last_tokens: Any) -> None:
        """Record the logprob of the token the last step chose (``last_tokens``: [batch])."""
        if self.store > 0 and self._last is not None:
            self.chosen_lps.append(self._last.gather(1, last_tokens[:, None].to(self._last.device)).squeeze(1))
            self._last = None

    def per_row(self) -> list[list[float]]:
        return torch.stack(self.steps, dim=1).tolist() if self.steps else []

    def payload_rows(self) -> tuple[list, list, list]:
        """Per row of the batch: [steps] chosen logprobs, [steps][K] top ids, [steps][K] top logprobs."""
        if not self.top_ids:
            return [], [], []
        chosen = torch.stack([c.cpu() for c in self.chosen_lps], dim=1).tolist()
        return chosen, torch.stack(self.top_ids, dim=1).tolist(), torch.stack(self.top_lps, dim=1).tolist()

    def remove(self) -> None:
        self._handle.remove()


class HFTeacher(Teacher):
    """A transformers causal LM loaded with ``dante.models``; greedy by default; works on CPU."""

    def __init__(self, cfg: TeacherConfig) -> None:
        super().__init__(cfg)
        resolved = resolve_model(cfg.model)
        self.name = resolved.name
        self.device = default_device() if cfg.hf.device == "auto" else cfg.hf.device
        self.tokenizer = load_tokenizer(
            resolved, trust_remote_code=cfg.trust_remote_code, revision=cfg.revision, padding_side="left"
        )
        self.dtype = resolve_dtype(cfg.dtype, self.device)  # auto: bf16 on a CPU only where it is native
        self.model = load_causal_lm(
            resolved,
            dtype=self.dtype,
            trust_remote_code=cfg.trust_remote_code,
            revision=cfg.revision,
            device=self.device,
        )
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self._torch = torch
        # the thinking markers keep their text even where a tokenizer marks them special (they are
        # how the output is split: dante.teacher.reasoning); every other special token has none
        self.marker_ids = marker_ids(self.tokenizer, (reasoning.OPEN, reasoning.CLOSE))
        self.token_bytes = TokenBytes(self.tokenizer, keep=self.marker_ids)

    def device_info(self) -> dict[str, Any]:
        from dante.models import device_name

        return {
            "device_type": str(self.device).split(":")[0],
            "device_count": 1,
            "device_name": device_name(self.device),
        }

    def render(self, prompt: Prompt) -> str:
        return render_prompt(prompt, self.tokenizer, self.cfg.use_chat_template, self.cfg.thinking)

    def _uses_template(self) -> bool:
        return bool(self.cfg.use_chat_template and getattr(self.tokenizer, "chat_template", None))

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Generation]]:
        torch = self._torch
        texts = [self.render(p) for p in prompts]
        # A chat template already holds the special tokens it needs (BOS included).
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not self._uses_template()).to(
            self.device
        )
        prompt_lens = enc["attention_mask"].sum(-1).tolist()
        sample, n = not sampling.greedy, sampling.n
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "do_sample": sample,
            "return_dict_in_generate": True,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if sample:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0, num_return_sequences=n)
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        opened = [self.cfg.thinking != "off" and reasoning.prompt_opens_thinking(t) for t in texts]
        if self.cfg.hf.thinking_budget is not None and self.cfg.thinking != "off":
            from transformers import LogitsProcessorList

            close = self.tokenizer(reasoning.CLOSE, add_special_tokens=False)["input_ids"]
            start = self.tokenizer(reasoning.OPEN, add_special_tokens=False)["input_ids"]
            rows = [o for o in opened for _ in range(n if sample else 1)]
            budget = reasoning.ThinkingBudget(
                close, self.cfg.hf.thinking_budget, enc["input_ids"].shape[1], start, rows
            )
            kwargs["logits_processor"] = LogitsProcessorList([budget])
        hook = (
            StepEntropy(self.model, sampling.top_logprobs, sampling.store_logprobs) if sampling.logprobs > 0 else None
        )
        try:
            with torch.no_grad():
                out = self.model.generate(**enc, **kwargs)
        finally:
            if hook is not None:
                hook.remove()
        new = out.sequences[:, enc["input_ids"].shape[1] :]
        if hook is not None and new.shape[1]:
            hook.finish(new[:, -1])
        entropies = hook.per_row() if hook is not None and sampling.top_logprobs > 0 else None
        stored = hook.payload_rows() if hook is not None and sampling.store_logprobs > 0 else None
        gens = []
        for row, ids in enumerate(new.tolist()):
            length, finish = len(ids), "length"
            for i, t in enumerate(ids):
                if t in self.eos_ids:
                    length, finish = i + 1, "stop"  # the end-of-sequence token counts, like vLLM/OpenAI
                    break
            text = self.decode(ids[:length])
            payload = None
            if stored is not None:
                chosen, top_ids, top_lps = (part[row][:length] for part in stored)
                payload = from_ids(self.token_bytes, ids[:length], chosen, top_ids, top_lps)
            gen = Generation(
                text=text,
                completion_tokens=length,
                finish_reason=finish,
                token_entropies=entropies[row][:length] if entropies is not None else None,
                prompt_tokens=int(prompt_lens[row // (n if sample else 1)]),
                token_logprobs=payload,
            )
            gens.append(reasoning.separate(gen, self.cfg.thinking, opened[row // (n if sample else 1)]))
        per = n if sample else 1
        grouped = [gens[i * per : (i + 1) * per] for i in range(len(prompts))]
        if not sample and n > 1:  # greedy samples are all the same completion
            grouped = [g * n for g in grouped]
        return grouped

    def decode(self, ids: list[int]) -> str:
        """The output's text: special tokens skipped, the thinking markers kept."""
        if not self.marker_ids:
            return self.tokenizer.decode(ids, skip_special_tokens=True)
        special = self.token_bytes.special - self.marker_ids
        return self.tokenizer.decode([i for i in ids if i not in special], skip_special_tokens=False)

    SCORE_TILE = 256  # completion positions whose logits exist at once while scoring

    def score(
        self, prompts: Sequence[Prompt], completions: Sequence[str], k: int = 0, ended: Sequence[bool] | None = None
    ) -> list[TokenLogprobs | None]:
        """Batches of ``teacher.batch_size`` (prompt, completion) pairs, right-padded, one forward
        pass each for the hidden states, then the lm_head on tiles of ``SCORE_TILE`` completion
        positions: no (tokens × vocabulary) tensor is kept beyond a tile. The completion is
        tokenized alone after the rendered prompt's ids, as generation would have produced it.
        An ended completion's end of turn is one more target at the position after its text."""
        rows: list[tuple[list[int], list[int]] | None] = []
        for prompt, text, end in zip(prompts, completions, self.end_targets(ended, len(completions)), strict=True):
            prompt_ids = self.tokenizer(self.render(prompt), add_special_tokens=not self._uses_template())["input_ids"]
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            joins = b"".join(self.token_bytes(i) for i in ids) == text.encode("utf-8")
            rows.append((prompt_ids, ids if end is None else [*ids, end]) if joins else None)
        out: list[TokenLogprobs | None] = [None] * len(rows)
        todo = [i for i, r in enumerate(rows) if r is not None]
        for start in range(0, len(todo), max(1, self.cfg.batch_size)):
            batch = todo[start : start + max(1, self.cfg.batch_size)]
            for i, scored in zip(batch, self._score_batch([rows[i] for i in batch], k), strict=True):
                out[i] = scored
        return out

    @torch.no_grad()
    def _score_batch(self, rows: list[tuple[list[int], list[int]]], k: int) -> list[TokenLogprobs]:
        head = self.model.get_output_embeddings()
        softcap = getattr(self.model.config.get_text_config(), "final_logit_softcapping", None)
        width = max(len(p) + len(c) for p, c in rows)  # an end-of-turn target is the last token of c
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        seq = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(seq)
        for r, (p, c) in enumerate(rows):  # right padding: positions are 0.. as in an unpadded pass
            seq[r, : len(p) + len(c)] = torch.tensor(p + c)
            mask[r, : len(p) + len(c)] = 1
        hidden = self.model(
            input_ids=seq.to(self.device),
            attention_mask=mask.to(self.device),
            output_hidden_states=True,
            logits_to_keep=1,
        ).hidden_states[-1]
        out = []
        for r, (prompt_ids, ids) in enumerate(rows):
            chosen, top_ids, top_lps = [], [], []
            states = hidden[r, len(prompt_ids) - 1 : len(prompt_ids) + len(ids) - 1]  # position i predicts token i
            target = torch.tensor(ids, device=self.device, dtype=torch.long)
            for start in range(0, len(ids), self.SCORE_TILE):
                logits = head(states[start : start + self.SCORE_TILE]).float()
                if softcap:
                    logits = softcap * torch.tanh(logits / softcap)
                logp = torch.log_softmax(logits, dim=-1)
                chosen += logp.gather(1, target[start : start + self.SCORE_TILE, None]).squeeze(1).tolist()
                if k > 0:
                    top = logp.topk(min(k, logp.shape[-1]), dim=-1)
                    top_ids += top.indices.tolist()
                    top_lps += top.values.tolist()
            if not k:
                top_ids, top_lps = [[] for _ in ids], [[] for _ in ids]
            out.append(from_ids(self.token_bytes, ids, chosen, top_ids, top_lps))
        return out

    def close(self) -> None:
        self.model = None
