"""Local transformers teacher: small teachers, CPU runs and tests (batched, left-padded generate).

Entropy per generated token comes from the raw next-token logits of each decoding step,
reduced to the top-k logprobs + tail exactly as the other engines report them, so all agree.
It is computed as generation goes (``StepEntropy``, a forward hook on the model), so the cache
keeps batch × steps floats instead of the batch × steps × vocabulary logits that
``generate(output_logits=True)`` would hold to the end of the batch (2.5 GB at batch 8 × 512
steps × a 152k vocabulary).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from dante.config import TeacherConfig
from dante.models import default_device, load_causal_lm, load_tokenizer, resolve_dtype, resolve_model
from dante.prompts import Prompt, render_prompt
from dante.teacher import reasoning
from dante.teacher.base import Completion, Generation, Sampling, Teacher
from dante.teacher.refill import refill_greedy, refillable, step_stats
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
        entropies, logp, top = step_stats(logits[:, -1, :], self.k, self.store)
        if entropies is not None:
            self.steps.append(entropies)
        if self.store == 0:
            return
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
        self._refill_model: bool | None = None  # decided on first use (``refills``)

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

    def refills(self, sampling: Sampling) -> bool:
        """Whether ``sampling`` decodes on the refilling schedule (``dante.teacher.refill``):
        ``teacher.hf.schedule: refill``, greedy, no thinking budget, and a model whose greedy
        logits ``generate`` would not process and whose cache is full attention."""
        if self.cfg.hf.schedule != "refill" or not sampling.greedy or self._budgeted():
            return False
        if self._refill_model is None:
            self._refill_model = refillable(self.model)
        return self._refill_model

    def _budgeted(self) -> bool:
        """A thinking budget bounds this teacher's thinking (``reasoning.ThinkingBudget``)."""
        return self.cfg.hf.thinking_budget is not None and self.cfg.thinking != "off"

    def _encode(self, prompts: Sequence[Prompt]) -> tuple[list[str], list[bool]]:
        texts = [self.render(p) for p in prompts]
        opened = [self.cfg.thinking != "off" and reasoning.prompt_opens_thinking(t) for t in texts]
        return texts, opened

    def _refill(self, prompts: Sequence[Prompt], sampling: Sampling) -> Iterator[tuple[int, Generation]]:
        """(prompt index, its greedy generation), as each ends (``refill_greedy``)."""
        texts, opened = self._encode(prompts)
        # A chat template already holds the special tokens it needs (BOS included).
        ids = self.tokenizer(texts, add_special_tokens=not self._uses_template())["input_ids"]
        store = sampling.store_logprobs
        rows = refill_greedy(
            self.model,
            ids,
            slots=self.cfg.batch_size,
            max_new_tokens=sampling.max_new_tokens,
            eos_ids=self.eos_ids,
            pad_id=self.tokenizer.pad_token_id,
            top_k=sampling.top_logprobs,
            store=store,
        )
        for row in rows:
            stored = (row.chosen, row.top_ids, row.top_lps) if store > 0 else None
            entropies = row.entropies if sampling.top_logprobs > 0 else None
            yield row.index, self._generation(row.ids, entropies, stored, len(ids[row.index]), opened[row.index])

    def iter_completions(self, prompts: Sequence[Prompt]) -> Iterator[Completion]:
        """On the refilling schedule, each prompt's completion as soon as it ends, ``batch_size``
        rows decoding at a time across the whole list; otherwise batch by batch."""
        if self.request.consistency is not None or not self.refills(self.request.main):
            yield from super().iter_completions(prompts)
            return
        for index, gen in self._refill(prompts, self.request.main):
            yield Completion(prompts[index], gen, [])

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Generation]]:
        if self.refills(sampling):
            gens: list[Generation | None] = [None] * len(prompts)
            for index, gen in self._refill(prompts, sampling):
                gens[index] = gen
            return [[g] * sampling.n for g in gens]
        torch = self._torch
        texts, opened = self._encode(prompts)
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
        if self._budgeted():
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
        per = n if sample else 1
        gens = []
        for row, ids in enumerate(new.tolist()):
            gens.append(
                self._generation(
                    ids,
                    entropies[row] if entropies is not None else None,
                    tuple(part[row] for part in stored) if stored is not None else None,
                    int(prompt_lens[row // per]),
                    opened[row // per],
                )
            )
        grouped = [gens[i * per : (i + 1) * per] for i in range(len(prompts))]
        if not sample and n > 1:  # greedy samples are all the same completion
            grouped = [g * n for g in grouped]
        return grouped

    def _generation(
        self,
        ids: list[int],
        entropies: list[float] | None,
        stored: tuple[list, list, list] | None,
        prompt_tokens: int,
        opened: bool,
    ) -> Generation:
        """A row's generation: cut after its first end of sequence (which counts, like vLLM's
        and OpenAI's), decoded, with its entropies and payload over the kept tokens."""
        length, finish = len(ids), "length"
        for i, t in enumerate(ids):
            if t in self.eos_ids:
                length, finish = i + 1, "stop"
                break
        payload = None
        if stored is not None:
            chosen, top_ids, top_lps = (part[:length] for part in stored)
            payload = from_ids(self.token_bytes, ids[:length], chosen, top_ids, top_lps)
        gen = Generation(
            text=self.decode(ids[:length]),
            completion_tokens=length,
            finish_reason=finish,
            token_entropies=entropies[:length] if entropies is not None else None,
            prompt_tokens=prompt_tokens,
            token_logprobs=payload,
        )
        return reasoning.separate(gen, self.cfg.thinking, opened)

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
