"""Greedy decoding that refills finished rows, for the hf teacher (``teacher.hf.schedule: refill``).

``model.generate`` decodes a batch until its longest row ends: on the reasoning recipe's cache
(300 prompts, batches of 16, answers of 42 tokens on average and up to 160) a batch runs 1.9
decoding rows for every token it keeps. Here a row leaves the batch as soon as it ends, and
waiting prompts take the free places: they are prefilled together, their KV cache is merged into
the running one (each row left-padded to the longest, the padding masked), and from then on every
step decodes one token for every live row. Columns that every row masks are cut off the front.

The arithmetic of each row is the one ``generate`` does: the same forward with the same
attention mask semantics and position ids (the count of the row's real tokens), the first token
from the prefill's last position, greedy by arg-max of the raw logits, and the per-step entropy
and top-K payload computed by the same functions as the ``generate`` path's hook (``step_stats``).
Whether the bits are the same also depends on the CPU's kernels being independent of the batch's
shape (BENCHMARKS 17 counts equal texts against ``generate``).

Only plain greedy decoding of a ``refillable`` model takes this path: sampling and a thinking
budget (the callers decide), logits processors from the model's generation config, and caches
other than full-attention dynamic ones (sliding windows) go through ``generate``.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dante.teacher.entropy import topk_entropy_from_logits, topk_entropy_from_top

# generation-config fields that make ``generate`` process greedy logits (a processor); with any of
# them set the refill path would pick other tokens, so it is not taken
_PROCESSORS = {
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "sequence_bias": (None,),
    "exponential_decay_length_penalty": (None,),
    "renormalize_logits": (None, False),
}


def step_stats(last: Any, k: int, store: int) -> tuple[Any, Any, Any]:
    """One decoding step's statistics from its raw next-token logits ``last`` [rows, V]:
    (top-``k`` entropies or None, the log-softmax or None, the top-max(k, ``store``) of it or
    None). With ``store`` = 0 only the entropies are computed, as the hf engine always did."""
    if store == 0:
        return (topk_entropy_from_logits(last, k) if k > 0 else None), None, None
    # one softmax and one top-k serve the entropy's k and the payload's K
    logp = torch.log_softmax(last.float(), dim=-1)
    top = logp.topk(min(max(k, store), logp.shape[-1]), dim=-1)
    return (topk_entropy_from_top(top.values[:, :k]) if k > 0 else None), logp, top


def unprocessed(generation_config: Any) -> bool:
    """True where ``generate`` would apply no logits processor to greedy decoding."""
    return all(getattr(generation_config, name, None) in ok for name, ok in _PROCESSORS.items())


def full_attention_cache(model: Any) -> bool:
    """True where the model's dynamic cache is plain full-attention layers (no sliding window)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # noqa: BLE001 - a model whose config the cache cannot read: use generate
        return False
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


def refillable(model: Any) -> bool:
    """The model decodes greedily on this schedule as ``generate`` would: no processor of its
    greedy logits (``unprocessed``) and a full-attention cache (``full_attention_cache``)."""
    return unprocessed(model.generation_config) and full_attention_cache(model)


def shared_prefix(prompts: Sequence[list[int]]) -> int:
    """How many first tokens all ``prompts`` share, leaving each at least one of its own (the
    prefill needs a last position to predict from)."""
    if not prompts:
        return 0
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        n = next((i for i in range(n) if p[i] != first[i]), n)
    return max(n, 0)


@dataclass
class Row:
    """One prompt's decoding: the generated ids (the end of sequence included) and, per step, its
    entropy, the chosen token's logprob and the top-K ids and logprobs."""

    index: int
    ids: list[int] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    chosen: list[float] = field(default_factory=list)
    top_ids: list[list[int]] = field(default_factory=list)
    top_lps: list[list[float]] = field(default_factory=list)
    finish: str = "length"


class _Batch:
    """The live rows' KV cache and 2-D attention mask; rows leave and join between steps."""

    def __init__(self, model: Any) -> None:
        from transformers import DynamicCache

        self.model = model
        # the model's own forward names its cache argument (a peft wrapper's takes **kwargs)
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        params = inspect.signature(inner.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.keep_logits = "logits_to_keep" in params
        self.new_cache = lambda: DynamicCache(config=model.config)
        self.cache: Any = None
        self.mask: Any = None
        self.prefix: list[int] = []
        self.prefix_kv: list[tuple[Any, Any]] = []

    def _forward(self, ids: Any, mask: Any, positions: Any, cache: Any) -> Any:
        kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, self.cache_arg: cache}
        if self.keep_logits:
            kwargs["logits_to_keep"] = 1
        with torch.no_grad():  # here, not around the generator: a suspended generator would leak it
            return self.model(**kwargs, use_cache=True).logits[:, -1, :]

    def share(self, prefix: list[int]) -> None:
        """Compute the first tokens every prompt shares once (one row's KV cache); each later
        ``prefill`` starts from a copy of it and runs only the prompts' own tails."""
        ids = torch.tensor([prefix], dtype=torch.long, device=self.model.device)
        mask = torch.ones_like(ids)
        cache = self.new_cache()
        self._forward(ids, mask, mask.cumsum(-1) - 1, cache)
        self.prefix = list(prefix)
        self.prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]

    def prefill(self, prompts: Sequence[list[int]], pad_id: int) -> Any:
        """Run the new prompts (their tails after the shared prefix, left-padded together up to
        it, positions as ``generate`` gives them), join their cache to the batch's (below the
        live rows) and return their last logits."""
        device = self.model.device
        shared = len(self.prefix)
        tails = [p[shared:] for p in prompts]
        width = max(len(t) for t in tails)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(prompts), shared + width), dtype=torch.long, device=device)
        mask[:, :shared] = 1
        for i, t in enumerate(tails):
            ids[i, width - len(t) :] = torch.tensor(t, dtype=torch.long, device=device)
            mask[i, shared + width - len(t) :] = 1
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)[:, shared:]
        cache = self.new_cache()
        for layer, (keys, values) in zip(cache.layers, self.prefix_kv, strict=False):
            layer.update(keys.expand(len(prompts), -1, -1, -1).clone(), values.expand(len(prompts), -1, -1, -1).clone())
        logits = self._forward(ids, mask, positions, cache)
        self._join(cache, mask)
        return logits

    def _join(self, cache: Any, mask: Any) -> None:
        if self.cache is None:
            self.cache, self.mask = cache, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])

        def left(t: Any, dim: int) -> Any:
            missing = width - t.shape[dim]
            if not missing:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for live, new in zip(self.cache.layers, cache.layers, strict=True):
            live.keys = torch.cat([left(live.keys, -2), left(new.keys, -2)], dim=0)
            live.values = torch.cat([left(live.values, -2), left(new.values, -2)], dim=0)
        self.mask = torch.cat([left(self.mask, 1), left(mask, 1)], dim=0)

    def step(self, last_tokens: list[int]) -> Any:
        """One token for every live row (its last generated one, not yet in the cache)."""
        device = self.model.device
        ids = torch.tensor(last_tokens, dtype=torch.long, device=device)[:, None]
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        positions = self.mask.sum(-1, keepdim=True) - 1
        return self._forward(ids, self.mask, positions, self.cache)

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (in this order), then cut the columns every row masks."""
        if not rows:
            self.cache = self.mask = None
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.mask = self.mask[index]
        first = int(self.mask.any(0).nonzero()[0])
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, first:]
            layer.values = layer.values[index, :, first:]


def refill_greedy(
    model: Any,
    prompts: Sequence[list[int]],
    *,
    slots: int,
    max_new_tokens: int,
    eos_ids: set[int],
    pad_id: int,
    top_k: int = 0,
    store: int = 0,
    refill_at: int = 1,
    share_from: int | None = 8,
    stop: Callable[[int, list[int]], bool] | None = None,
) -> Iterator[Row]:
    """Greedy completions of ``prompts`` (token ids), at most ``slots`` rows decoding at a time;
    each ``Row`` is yielded as soon as it ends (an id in ``eos_ids``, kept as its last token, or
    ``max_new_tokens`` reached), in the order they end. Waiting prompts join when at least
    ``refill_at`` places are free (or no row is left). ``top_k`` > 0 records each step's top-k
    entropy, ``store`` K > 0 the chosen token's logprob and the top-K ids and logprobs. Where the
    prompts share at least ``share_from`` first tokens (a system prompt, the chat template), those
    are computed once (None: never). ``stop(index, ids)`` true (a row's prompt index and its tokens so
    far, after each new one) also ends it (lm-eval's stop strings)."""
    waiting = deque(enumerate(prompts))
    if max_new_tokens <= 0:
        yield from (Row(i) for i, _ in waiting)
        return
    batch = _Batch(model)
    shared = shared_prefix([p for _, p in waiting])
    if share_from is not None and shared >= share_from:
        batch.share(prompts[0][:shared])
    live: list[Row] = []
    while waiting or live:
        free = slots - len(live)
        if waiting and (not live or free >= max(1, refill_at)):
            joining = [waiting.popleft() for _ in range(min(free, len(waiting)))]
            logits = batch.prefill([p for _, p in joining], pad_id)
            stepped = [Row(i) for i, _ in joining]
            live.extend(stepped)
        else:
            logits = batch.step([r.ids[-1] for r in live])
            stepped = live
        first = len(live) - len(stepped)
        entropies, logp, top = step_stats(logits, top_k, store)
        tokens = logits.argmax(-1)
        chosen = logp.gather(1, tokens[:, None]).squeeze(1).tolist() if logp is not None else None
        tokens = tokens.tolist()
        entropies = entropies.tolist() if entropies is not None else None
        top_ids = top.indices[:, :store].tolist() if top is not None else None
        top_lps = top.values[:, :store].tolist() if top is not None else None
        ended = []
        for j, row in enumerate(stepped):
            row.ids.append(tokens[j])
            if entropies is not None:
                row.entropies.append(entropies[j])
            if chosen is not None:
                row.chosen.append(chosen[j])
                row.top_ids.append(top_ids[j])
                row.top_lps.append(top_lps[j])
            if tokens[j] in eos_ids or (stop is not None and stop(row.index, row.ids)):
                row.finish = "stop"
                ended.append(first + j)
            elif len(row.ids) >= max_new_tokens:
                ended.append(first + j)
        if ended:
            gone = set(ended)
            yield from (live[j] for j in ended)
            kept = [j for j in range(len(live)) if j not in gone]
            live = [live[j] for j in kept]
            batch.keep(kept)
