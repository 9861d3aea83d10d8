"""The objective's terms as units (stage 4). A term owns its slice of the recipe, its λ schedule,
the tensors it reads from a collated micro-batch, the names it logs, its value on the logits
(``plain``) and, to run inside the chunked lm_head without the (tokens × V) logits, its tile form
(``ids`` + ``tile``, and ``prepare`` for a term over spans of positions). The formulas are in
``dante.train.objective.losses``.

Every term, built-in or not, sits in one registry (``REGISTRY``) and declares the batch sources
whose micro-batches it trains (``sources``), the per-record targets it reads (``targets``,
``objective.targets``) and how the recipe switches it on (``from_recipe``); a source trains the
registered terms that are on, its *lead* first (``source_terms``). The forward
pass returns the parts of a micro-batch keyed by name, ``objective`` being

    objective = Σ_k κ_k · S_k,   κ_k = λ_k(t) / λ_lead(t)   (κ_lead = 1, a term with λ_k = 0 is skipped)

and the source scales it by λ_lead(t) / D (``sources.base``), so a step's loss is Σ_k λ_k · S_k / D.

Adding a term: a ``Term`` subclass with ``name``, ``sources``, a ``Settings`` model and its
methods, and ``register_term``; a recipe imports it with ``train.loss.plugins`` (or an installed
package's ``dante.loss_terms`` entry point) and switches it on with ``train.loss.<name>: {...}``.
The built-in terms' settings are sections of the schema under the same key: ``train.loss.cwce``
(the card's weights and λ_CE), ``tea``, ``token_kd``, ``chunk_kd``, ``policy_gradient``, ``dense_kl``.
The loop does not change; see docs/training.md, "Adding a loss term".
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from pydantic import BaseModel, ValidationError

from dante.config import LossConfig, TrainConfig
from dante.errors import DanteError
from dante.train.model.anchor import TeaAnchor
from dante.train.objective.losses import (
    chunk_binary_kl,
    chunk_binary_kl_grad,
    lambda_ce,
    lambda_kd,
    lambda_tea,
    sparse_kd_sum,
    sparse_kl_terms,
    weighted_ce_sum,
)
from dante.train.objective.targets import ChunkLikelihoods, Target, TopK

Parts = dict[str, torch.Tensor]  # a micro-batch's sums by name; "objective" is the one with gradients
Inputs = tuple[torch.Tensor, ...]  # a term's tensors, each (rows, positions, ...) like the batch's targets


class Tile(NamedTuple):
    """One tile of the fused lm_head, as a term's tile form reads it (z = h·Wᵀ of n positions)."""

    z_at: torch.Tensor  # (n, K) the logits at the term's ids (``Term.ids``), gathered before the softmax
    z_max: torch.Tensor  # (n,) max_i z_i
    sum_exp: torch.Tensor  # (n,) Σ_i exp(z_i − z_max): log p_i = z_i − z_max − log sum_exp


class TileForm(NamedTuple):
    """A term's share of one tile: its sums (its value, unscaled, under its own name first) and
    κ times its gradient with respect to the tile's logits, dS/dz_i = row·p_i + Σ_k at_k·1[i = ids_k]."""

    sums: dict[str, torch.Tensor]
    row: torch.Tensor  # (n,)
    at: torch.Tensor | None  # (n, K), or None when the term adds nothing at its ids


class Term:
    """One term of the objective. Subclasses set ``name`` and ``sources`` and implement the methods."""

    name: ClassVar[str]  # its value's key in the parts and in metrics.jsonl, and its recipe key train.loss.<name>
    sources: ClassVar[tuple[str, ...]] = ("records",)  # the batch sources whose micro-batches it trains
    lead: ClassVar[bool] = False  # the source's lead term: its λ scales the others' (one per source)
    targets: ClassVar[tuple[type[Target], ...]] = ()  # what it reads besides the text (objective.targets)
    logs: ClassVar[tuple[str, ...]] = ()  # further sums it returns besides its value (e.g. the plain CE)
    Settings: ClassVar[type[BaseModel] | None] = None  # its settings model (train.loss.<name>: {...})
    # the tile form needs every position's log p(target) before the first tile (a term over spans of
    # positions that may cross tiles): the fused lm_head computes them first and calls ``prepare``
    needs_logp: ClassVar[bool] = False

    @classmethod
    def from_recipe(cls, cfg: TrainConfig) -> Term | None:
        """The term as the recipe sets it, or None when the recipe leaves it off. A registered term
        is on when ``train.loss.<name>`` holds its settings (validated by ``Settings``)."""
        settings = cfg.loss.term_settings().get(cls.name)
        if settings is None:
            return None
        try:
            return cls(cls.Settings.model_validate(settings))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise DanteError(
                f"{first['msg']}",
                field=f"train.loss.{cls.name}" + (f".{where}" if where else ""),
                hint=f"the settings of term {cls.name!r}: {', '.join(cls.Settings.model_fields)}",
            ) from None

    def weight(self, step: int, total_steps: int) -> float:
        """λ(t) of the 1-based optimizer step ``step``."""
        raise NotImplementedError

    def inputs(self, batch: dict[str, torch.Tensor]) -> Inputs | None:
        """The tensors this term reads from a collated micro-batch (on the device); None: none here."""
        raise NotImplementedError

    def plain(self, logits: torch.Tensor, targets: torch.Tensor, inputs: Inputs) -> dict[str, torch.Tensor]:
        """The term's sums on (N, V) logits whose N positions line up with ``targets`` and each input."""
        raise NotImplementedError

    def ids(self, inputs: Inputs) -> torch.Tensor | None:
        """(n, K) vocabulary ids whose logits ``tile`` reads (−1 pads), or None for none."""
        return None

    def tile(self, tile: Tile, inputs: Inputs, scale: float) -> TileForm:
        """The term on one tile: its sums and κ·gradient (``scale`` = κ)."""
        raise NotImplementedError

    def prepare(self, logp: torch.Tensor, inputs: Inputs) -> Inputs:
        """With ``needs_logp``: the inputs ``tile`` reads, from log p(target) at every position
        (``logp`` (n,), the positions of ``inputs``, computed without gradient)."""
        raise NotImplementedError

    def log(self, value: float, lam: float) -> dict[str, Any]:
        """The metrics entries of the step's value (its sum over the global batch over D) and λ."""
        return {self.name: value, f"lambda_{self.name}": lam}


class CrossEntropy(Term):
    """The card's L_CWCE: Σ_t u_t·CE_t with u_t the CWCE weights (``losses.batch_weights``), λ_CE(t)
    its schedule. Also sums the plain CE (the log's ``ce``, the held-out loss). Settings:
    ``train.loss.cwce`` (weighted, floor, span, slope, center, normalise, schedule, start, end, ...)."""

    name = "cwce"
    lead = True
    logs = ("ce",)

    def __init__(self, cfg: TrainConfig | None = None) -> None:
        self.cfg = (cfg or TrainConfig()).loss

    @classmethod
    def from_recipe(cls, cfg):
        return cls(cfg)  # always: the lead of the cached records

    def weight(self, step: int, total_steps: int) -> float:
        return lambda_ce(step, self.cfg)

    def inputs(self, batch):
        return batch["targets"], batch["weights"]

    def plain(self, logits, targets, inputs):
        weighted, plain = weighted_ce_sum(logits, inputs[0], inputs[1])
        return {self.name: weighted, self.logs[0]: plain}

    def ids(self, inputs):
        return inputs[0][:, None]

    def tile(self, tile, inputs, scale):
        u = inputs[1].float()
        ce = tile.z_max + tile.sum_exp.log() - tile.z_at.squeeze(1)
        row, at = (u, -u[:, None]) if scale == 1.0 else (u * scale, -(u * scale)[:, None])
        return TileForm({self.name: (u * ce).sum(), self.logs[0]: ce.sum()}, row, at)

    def log(self, value, lam):
        return {"cwce": value, "lambda_ce": lam}


class PolicyGradient(CrossEntropy):
    """The on-policy chunk policy gradient −Σ_j ρ_j·A_j / N (``losses.policy_gradient_sum``): at ρ = 1
    its gradient is that of Σ_j (A_j / N)·CE_j, so it is the CE with the advantages as weights (β is
    in the advantages, so λ = 1). Settings: ``train.loss.policy_gradient`` (kl_coef, baseline, score_end)."""

    name = "policy_gradient"
    sources = ("on_policy",)
    logs = ("policy_ce",)

    @classmethod
    def from_recipe(cls, cfg):
        return cls(cfg)  # always: the lead of the student's samples

    def weight(self, step, total_steps):
        return 1.0

    def log(self, value, lam):
        return {}  # the source logs the sampled reverse KL it estimates (sources.on_policy)


class SparseKL(Term):
    """Σ_t v_t·KL_t against the teacher's top-K at the positions aligned one to one with a teacher
    token (``losses.sparse_kd_sum``), from the batch's ``kd_ids`` / ``kd_probs`` / ``kd_weights``."""

    reverse: ClassVar[bool] = False

    def inputs(self, batch):
        if "kd_ids" not in batch:
            return None
        ids, probs = batch["kd_ids"], batch["kd_probs"]
        return ids, probs, batch.get("kd_weights", batch["weights"]) * (ids[..., 0] >= 0)

    def plain(self, logits, targets, inputs):
        ids, probs, v = inputs
        keep = v.reshape(-1) > 0
        kl = sparse_kd_sum(
            logits.reshape(-1, logits.shape[-1])[keep],
            ids.reshape(-1, ids.shape[-1])[keep],
            probs.reshape(-1, probs.shape[-1])[keep],
            v.reshape(-1)[keep],
            reverse=self.reverse,
        )
        return {self.name: kl}

    def ids(self, inputs):
        return inputs[0]

    def tile(self, tile, inputs, scale):
        ids, probs, v = inputs
        t = sparse_kl_terms(tile.z_at - tile.z_max[:, None] - tile.sum_exp.log()[:, None], ids, probs, self.reverse)
        value = (v * t.kl).sum()
        v = v * scale if scale != 1.0 else v
        return TileForm({self.name: value}, v * t.row, v[:, None] * t.at_ids)


class TokenKD(SparseKL):
    """Token-level distillation from the cached teacher logprobs (not in the card): λ_KD(t)·Σ v·KL / D,
    forward KL(q ‖ p). Settings: ``train.loss.token_kd`` (weight, schedule, start; the schedule
    runs on λ_CE's steps)."""

    name = "token_kd"
    targets = (TopK,)

    def __init__(self, cfg: TrainConfig | None = None) -> None:
        self.cfg = (cfg or TrainConfig()).loss

    @classmethod
    def from_recipe(cls, cfg):
        return cls(cfg) if cfg.loss.token_kd.weight > 0 else None

    def weight(self, step, total_steps):
        return lambda_kd(step, self.cfg)

    def log(self, value, lam):
        return {"token_kd": value, "lambda_kd": lam}


class DenseKL(SparseKL):
    """The dense on-policy term: κ·Σ_j KL_j / N at the sample's one-to-one positions, reverse
    KL(p ‖ q) by default. Settings: ``train.loss.dense_kl`` (weight, direction, top_k)."""

    name = "dense_kl"
    sources = ("on_policy",)
    targets = (TopK,)

    def __init__(self, cfg: TrainConfig | None = None) -> None:
        self.cfg = (cfg or TrainConfig()).loss.dense_kl
        self.reverse = self.cfg.direction == "reverse"

    @classmethod
    def from_recipe(cls, cfg):
        return cls(cfg) if cfg.loss.dense_kl.weight > 0 else None

    def weight(self, step, total_steps):
        return self.cfg.weight

    def log(self, value, lam):
        return {}  # logged by the on-policy source as on_policy_dense_kl


class ChunkLikelihood(Term):
    """The chunk term: λ_chunk · Σ_c v_c · KL_c / D over every chunk aligned between the teacher's
    answer tokens and the student's (``dante.train.align``), KL_c the binarised divergence of the
    two models' log-likelihoods of the chunk (``losses.chunk_binary_kl``), v_c the CE weight u of the
    chunk's positions. It reaches every aligned chunk, where token KD reaches the one-to-one ones.
    In the fused lm_head it is a re-weighted CE (``losses.chunk_binary_kl_grad``) whose weights need
    the student's log-likelihood of whole chunks, so the head first computes log p(target) at every
    position without gradient (one more lm_head matmul, no backward). Settings:
    ``train.loss.chunk_kd`` (weight, temperature)."""

    name = "chunk_kd"
    needs_logp = True
    targets = (ChunkLikelihoods,)

    def __init__(self, cfg: TrainConfig | None = None) -> None:
        self.cfg = (cfg or TrainConfig()).loss.chunk_kd

    @classmethod
    def from_recipe(cls, cfg):
        return cls(cfg) if cfg.loss.chunk_kd.weight > 0 else None

    def weight(self, step, total_steps):
        return self.cfg.weight

    def inputs(self, batch):
        if "chunk_ids" not in batch:
            return None
        return batch["targets"], batch["chunk_ids"], batch["chunk_lt"], batch["weights"]

    def plain(self, logits, targets, inputs):
        tgt, cid, lt, u = (x.reshape(-1) for x in inputs)
        keep = cid >= 0
        lp = torch.log_softmax(logits.reshape(-1, logits.shape[-1])[keep].float(), dim=-1)
        lp = lp.gather(1, tgt[keep].clamp_min(0)[:, None]).squeeze(1)
        _, _, ls, lt_c, v = chunk_sums(cid[keep], lp, lt[keep], u[keep])
        return {self.name: (v * chunk_binary_kl(ls, lt_c, self.cfg.temperature)).sum()}

    def ids(self, inputs):
        return inputs[0][:, None]

    def prepare(self, logp, inputs):
        tgt, cid, lt, u = inputs
        keep = cid >= 0
        inv, count, ls, lt_c, v = chunk_sums(cid[keep], logp[keep].float(), lt[keep], u[keep])
        tau = self.cfg.temperature
        per_chunk_w = -v * chunk_binary_kl_grad(ls, lt_c, tau)
        per_chunk_value = v * chunk_binary_kl(ls, lt_c, tau) / count
        w = torch.zeros_like(lt).masked_scatter_(keep, per_chunk_w[inv])
        value = torch.zeros_like(lt).masked_scatter_(keep, per_chunk_value[inv])
        return tgt, w, value

    def tile(self, tile, inputs, scale):
        _, w, value = inputs
        w = w * scale if scale != 1.0 else w
        return TileForm({self.name: value.sum()}, w, -w[:, None])

    def log(self, value, lam):
        return {"chunk_kd": value, "lambda_chunk": lam}


def chunk_sums(
    chunk_ids: torch.Tensor, logp: torch.Tensor, lt: torch.Tensor, u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """From per-position values of positions in chunks: (each position's chunk index 0..C−1, each
    chunk's number of positions, the student's log-likelihood l_S,c = Σ log p(target), the
    teacher's l_T,c and the weight v_c, the mean u of the chunk's positions). ``lt`` holds l_T,c at
    every position of chunk c."""
    uniq, inv = torch.unique(chunk_ids, return_inverse=True)
    zeros = torch.zeros(uniq.numel(), dtype=torch.float32, device=logp.device)
    count = zeros.index_add(0, inv, torch.ones_like(logp, dtype=torch.float32))
    ls = zeros.index_add(0, inv, logp.float())
    lt_c = zeros.index_add(0, inv, lt.float()) / count
    v = zeros.index_add(0, inv, u.float()) / count
    return inv, count, ls, lt_c, v


class Tea:
    """The card's L_TEA = ‖E − E₀‖²_F with λ_TEA(t): a term on the model, not on a micro-batch's
    logits. The embedding's forward hook (``model.anchor.TeaAnchor``) computes it during the step's
    last forward pass, so it is right where the weight exists only inside that call (FSDP).
    Settings: ``train.loss.tea`` (enabled, start, end)."""

    name = "tea"

    def __init__(self, cfg: TrainConfig, anchor: TeaAnchor) -> None:
        self.cfg, self.anchor = cfg.loss, anchor

    def weight(self, step: int, total_steps: int) -> float:
        return lambda_tea(step, total_steps, self.cfg)

    def arm(self) -> None:
        self.anchor.arm()

    def take(self) -> torch.Tensor:
        return self.anchor.take()

    def log(self, value: float, lam: float) -> dict[str, Any]:
        return {"tea": value, "lambda_tea": lam}


# -- the registry -------------------------------------------------------------------------------

# Every term by name, built-in ones first (in the order a source lists them), then the registered
# ones in the order they were registered.
REGISTRY: dict[str, type[Term]] = {t.name: t for t in (CrossEntropy, TokenKD, ChunkLikelihood, PolicyGradient, DenseKL)}
BUILT_IN = frozenset(REGISTRY)


def register_term(term: type[Term]) -> type[Term]:
    """Make ``term`` available to recipes as ``train.loss.<term.name>: {its settings}`` (usable as a
    decorator)."""
    if term.Settings is None:
        raise ValueError(f"term {term.name!r} needs a Settings model for its recipe slice")
    if term.name in BUILT_IN or term.name in LossConfig.model_fields:
        raise ValueError(f"term name {term.name!r} is taken by a built-in term or a train.loss setting")
    REGISTRY[term.name] = term
    return term


ENTRY_POINTS = "dante.loss_terms"  # installed packages' modules that register terms


def recipe_folder(recipe) -> Path | None:
    """The folder of the recipe file, where relative plugin paths are read from (None: built in Python)."""
    return Path(recipe.source_file).parent if getattr(recipe, "source_file", None) else None


def load_plugins(plugins: list[str], base: Path | None = None) -> None:
    """Import the modules that register further terms: every module of the ``dante.loss_terms``
    entry point group, then ``train.loss.plugins`` (module names, or ``.py`` files, relative to
    ``base``, the recipe's folder); each is imported once. A module that cannot be imported is an
    error naming the key and the fix."""
    _load_entry_points()
    for i, spec in enumerate(plugins):
        try:
            _import_plugin(spec, base)
        except (ImportError, OSError, SyntaxError) as exc:
            raise DanteError(
                f"cannot import loss-term plugin {spec!r}: {type(exc).__name__}: {exc}",
                field=f"train.loss.plugins[{i}]",
                hint="give an importable module (installed, or on PYTHONPATH) or a .py file that exists (a relative "
                "path is read from the recipe's folder)",
            ) from None


@functools.cache
def _load_entry_points() -> None:
    """The ``dante.loss_terms`` entry points, imported once a process (installed packages do not
    change under a run; the registry is read for every source and at every check)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINTS):
        ep.load()


def _import_plugin(spec: str, base: Path | None) -> None:
    import importlib
    import importlib.util
    import sys

    if not spec.endswith(".py"):
        importlib.import_module(spec)
        return
    path = Path(spec).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    path = path.resolve()
    name = f"dante_plugin_{abs(hash(str(path)))}"
    if name in sys.modules:
        return
    loader = importlib.util.spec_from_file_location(name, path)
    if loader is None or loader.loader is None or not path.is_file():
        raise ImportError(f"no such file: {path}")
    module = importlib.util.module_from_spec(loader)
    sys.modules[name] = module
    try:
        loader.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise


def source_terms(source: str, cfg: TrainConfig, base: Path | None = None) -> list[Term]:
    """The logit-level terms a batch source's micro-batches train, the lead first: every registered
    term that trains on ``source`` (its ``sources``) and that the recipe switches on (its
    ``from_recipe``), after importing ``train.loss.plugins`` (``base``: the recipe's folder, for
    plugin files). A ``train.loss.<name>`` no term is registered under is an error."""
    load_plugins(cfg.loss.plugins, base)
    for name in cfg.loss.term_settings():
        if name not in REGISTRY or name in BUILT_IN:
            raise DanteError(
                f"no loss term named {name!r} is registered",
                field=f"train.loss.{name}",
                hint=f"registered: {', '.join(sorted(set(REGISTRY) - BUILT_IN)) or 'none'}; list the module that "
                "registers it in train.loss.plugins (a module name or a .py file), or fix the name",
            )
    terms = [t for cls in REGISTRY.values() if source in cls.sources and (t := cls.from_recipe(cfg)) is not None]
    leads = [t for t in terms if t.lead]
    if len(leads) != 1:
        raise DanteError(
            f"the batch source {source!r} has {len(leads)} lead terms ({', '.join(t.name for t in leads) or 'none'})",
            field="train.loss",
            hint="exactly one term of a source sets lead = True: its λ scales the others'",
        )
    return leads + [t for t in terms if not t.lead]


def check_terms(cfg: TrainConfig, base: Path | None = None) -> None:
    """Every term the recipe sets up, built once for every source the terms train (plugins
    imported, settings validated, unknown names refused): a recipe's mistakes before any stage
    runs."""
    for source in dict.fromkeys(s for cls in list(REGISTRY.values()) for s in cls.sources):
        source_terms(source, cfg, base)


def scales(terms: list[Term], step: int, total_steps: int) -> tuple[list[float], list[float]]:
    """(λ_k(t) of each term, κ_k = λ_k(t) / λ_lead(t), 1 for the lead and 0 for a term with λ_k = 0)."""
    lams = [t.weight(step, total_steps) for t in terms]
    return lams, [1.0] + [lam / lams[0] if lam > 0 else 0.0 for lam in lams[1:]]


def plain_parts(
    terms: list[Term], kappas: list[float], logits: torch.Tensor, targets: torch.Tensor, inputs: list[Inputs | None]
) -> Parts:
    """The parts of a micro-batch from its (N, V) logits: every term's sums and the objective."""
    parts: Parts = {}
    objective = None
    for term, kappa, given in zip(terms, kappas, inputs, strict=True):
        if given is None or kappa == 0.0:
            continue
        sums = term.plain(logits, targets, given)
        value = sums[term.name]
        objective = value if objective is None else objective + (value if kappa == 1.0 else kappa * value)
        parts.update({k: v.detach() for k, v in sums.items()})
    parts["objective"] = objective if objective is not None else logits.sum() * 0.0
    return parts
