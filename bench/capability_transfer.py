"""The capability-transfer benchmark: does the student gain a skill from its teacher, what does
each DANTE addition and on-policy distillation add over plain SFT, and does it hold across runs?

Three tasks (``--task``), each a recipe and its held-out lm-eval tasks:

    chain_sum  configs/demo.yaml       Qwen2.5-Coder-0.5B -> SmolLM2-135M, rg_chain_sum_2x2 (the demo's task)
    products   configs/products.yaml   Qwen2.5-Coder-1.5B -> SmolLM2-135M, rg_products_2x2 (a teacher that hesitates)
    reasoning  configs/reasoning.yaml  Qwen2.5-Coder-1.5B told to reason -> SmolLM2-135M, rg_chain_sum_3x2

Every setting is trained once per **replicate** (``--replicates``). A replicate is what a user
re-running the recipe would change: replicate r draws its own 300 train prompts
(``prompts.seed = r − 1``, r = 1 being the recipe's own), has its own teacher cache, with the
teacher in bf16 for odd r and fp32 for even r (``teacher.dtype``; where the CPU has no native
bf16, ``auto`` is fp32 too; the reasoning task keeps bf16 throughout, ``Task.fp32_even``), and its
own ``train.seed = r`` (shuffled orders, on-policy samples). Within a replicate every setting
shares the cache and seed, so settings are compared question by question; across replicates, by
the spread of the runs.

Settings (``--settings``): sft (plain SFT), dante (the card), dante with each addition off, the
paced curricula, the curriculum diagnostics, token-level KD, and on-policy distillation (from the
SFT student of the same replicate, from the base student, and the two SFT baselines that spend
the same student steps or the same teacher tokens). ``--split validation`` is for choosing; the
test split is read once, at the end.

    .venv/bin/python bench/capability_transfer.py --task chain_sum --split validation --settings sft,dante
    .venv/bin/python bench/capability_transfer.py --task chain_sum --split test --replicates 1,2,3
    .venv/bin/python bench/capability_transfer.py --task chain_sum --curve sft-long,sft-op,op --replicates 1

Reported per setting: accuracy per replicate, mean and range across replicates, GR (gap
recovered, (after − before) / (teacher − before), of the mean), and against SFT: discordant
questions and the exact McNemar p per replicate, the sign across replicates, and a 95% interval
of the mean difference from a two-level bootstrap (replicates, then questions), and the exact
sign-flip p over the replicates' differences; a difference **holds** by the replication standard
(dante.eval.scores.replication_verdict, docs/eval.md): at least 5 replicates, sign-flip p ≤ 0.05
(one-sided only in a direction registered before the first test read, bench/directions.py and
bench/results/directions.json, else two-sided; the summary stamps a comparison's first test read)
and the interval excluding 0. With on-policy
settings, the teacher tokens each setting cost (generated for the cache + scored) and GR per
million of them. Every stage resumes (caches, finished students, finished evaluations are
kept). Results: <out>/capability-<split>.md, .json and .png (and curve.png).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import directions  # noqa: E402
import per_question  # noqa: E402
from common import set_threads, thread_arg  # noqa: E402

if __name__ == "__main__":
    set_threads(thread_arg())  # 1 by default: several runs share the machine's cores


@dataclass(frozen=True)
class Task:
    recipe: str
    test: str
    validation: str
    teacher: str
    # even replicates run the teacher in fp32 (the dtype varied); off where fp32 generation costs
    # too much on a CPU (the reasoning teacher writes 12k tokens: about 4x its 17 bf16 minutes)
    fp32_even: bool = True


TASKS = {
    "chain_sum": Task("configs/demo.yaml", "rg_chain_sum_2x2", "rg_chain_sum_2x2_validation", "Qwen2.5-Coder-0.5B"),
    "products": Task("configs/products.yaml", "rg_products_2x2", "rg_products_2x2_validation", "Qwen2.5-Coder-1.5B"),
    "reasoning": Task(
        "configs/reasoning.yaml",
        "rg_chain_sum_3x2",
        "rg_chain_sum_3x2_validation",
        "Qwen2.5-Coder-1.5B (reasoning)",
        fp32_even=False,
    ),
}

PLAIN = ["train.loss.cwce.weighted=false", "train.loss.tea.enabled=false", "train.loss.cwce.schedule=false"]
SFT_FLAGS = [*PLAIN, "train.curriculum=shuffle"]
CARD = ["train.curriculum=entropy"]  # the card's curriculum, whatever the recipe's default


@dataclass(frozen=True)
class Setting:
    """A student: recipe overrides, the steps as a multiple of the base run's, and what it starts
    from (``warm``: the student of another setting of the same replicate)."""

    label: str
    flags: list[str] = field(default_factory=list)
    steps: float = 1.0  # × the base run's steps
    warm: str | None = None
    order: str | None = None  # a diagnostic epoch order of bench/orders.py, through the trainer's hook
    extra_prompts: bool = False  # a larger cache: the same teacher tokens as sft-op (sft-tokens)
    equal_tokens: bool = False  # its own cache (``cache``) as large as the main cache in teacher tokens
    cache: str | None = None  # a cache of its own (another teacher prompt), in r<k>/cache-<name>
    gold: bool = False  # trained by TRL's GOLD trainer (a peer), not by dante (``train_gold``)
    lr: float | None = None  # GOLD only: its learning rate where not the bench's --lr
    gold_args: dict = field(default_factory=dict)  # GOLD only: GOLDConfig fields over run_gold's (lmbda, beta)


def on_policy(
    fraction: float,
    lr: float,
    coef: float = 1.0,
    samples: int = 1,
    dense: float = 0.0,
    direction: str = "reverse",
    end: bool = False,
    max_new: int = 48,
    temperature: float = 1.0,
    discount: float = 0.0,
    mask_above: float | None = None,
) -> list[str]:
    """The on-policy overrides; ``end``: the teacher's end of turn scored and a mean baseline;
    ``max_new``: the length cap of a student sample (48 for a bare answer; the reasoning task's
    working and answer run to about 50 student tokens, so it needs more); ``discount`` and
    ``mask_above`` only where set (the settings before them keep their overrides)."""
    extra = [f"train.loss.policy_gradient.discount={discount}"] if discount else []
    extra += [f"train.loss.policy_gradient.mask_above={mask_above}"] if mask_above is not None else []
    return [
        *extra,
        f"train.loss.policy_gradient.score_end={str(end).lower()}",
        f"train.loss.policy_gradient.baseline={'mean' if end else 'none'}",
        f"train.on_policy.fraction={fraction}",
        f"train.on_policy.samples_per_prompt={samples}",
        f"train.on_policy.temperature={temperature}",
        f"train.on_policy.max_new_tokens={max_new}",
        f"train.loss.policy_gradient.kl_coef={coef}",
        f"train.loss.dense_kl.weight={dense}",
        f"train.loss.dense_kl.top_k={20 if dense else 0}",
        f"train.loss.dense_kl.direction={direction}",
        f"train.lr={lr}",
    ]


SETTINGS: dict[str, Setting] = {
    "sft": Setting("plain SFT", SFT_FLAGS),
    "dante": Setting("DANTE (the card)", CARD),
    "no-cwce": Setting("DANTE (the card) without CWCE", [*CARD, "train.loss.cwce.weighted=false"]),
    "no-tea": Setting("DANTE (the card) without TEA", [*CARD, "train.loss.tea.enabled=false"]),
    "no-ce-schedule": Setting("DANTE (the card) without the λ_CE schedule", [*CARD, "train.loss.cwce.schedule=false"]),
    "no-curriculum": Setting("DANTE, shuffled (the curriculum chosen)", ["train.curriculum=shuffle"]),
    # each addition off from the chosen (shuffled) loss: under the card's order the curriculum decides
    "shuffled-no-cwce": Setting(
        "DANTE, shuffled, without CWCE", ["train.curriculum=shuffle", "train.loss.cwce.weighted=false"]
    ),
    "shuffled-no-tea": Setting(
        "DANTE, shuffled, without TEA", ["train.curriculum=shuffle", "train.loss.tea.enabled=false"]
    ),
    "shuffled-no-ce-schedule": Setting(
        "DANTE, shuffled, without the λ_CE schedule", ["train.curriculum=shuffle", "train.loss.cwce.schedule=false"]
    ),
    "dante-competence": Setting("DANTE, competence curriculum", ["train.curriculum=competence"]),
    "dante-buckets": Setting("DANTE, bucketed curriculum", ["train.curriculum=buckets"]),
    # diagnostics of the card's curriculum (section 6d)
    "dante-constant-lr": Setting(
        "DANTE, entropy order, constant LR", [*CARD, "train.lr_scheduler=constant_with_warmup"]
    ),
    "dante-reversed": Setting("DANTE, entropy order reversed", CARD, order="entropy_reversed"),
    "dante-batches": Setting("DANTE, entropy batches in random order", CARD, order="entropy_batches"),
    "sft-constant-lr": Setting(
        "plain SFT, constant LR (the control)", [*SFT_FLAGS, "train.lr_scheduler=constant_with_warmup"]
    ),
    "sft-entropy": Setting("plain SFT in the card's entropy order", [*PLAIN, "train.curriculum=entropy"]),
    "sft-cwce": Setting(
        "SFT + CWCE weights (DANTE's w(H) alone)",
        ["train.loss.tea.enabled=false", "train.loss.cwce.schedule=false", "train.curriculum=shuffle"],
    ),
    # token-level KD (λ_KD chosen on validation in section 6b)
    "sft-kd": Setting("SFT + token-level KD (λ_KD 0.3)", [*SFT_FLAGS, "train.loss.token_kd.weight=0.3"]),
    "sft-chunk": Setting("SFT + chunk term (λ_chunk 1)", [*SFT_FLAGS, "train.loss.chunk_kd.weight=1.0"]),
    "sft-chunk-03": Setting("SFT + chunk term (λ_chunk 0.3)", [*SFT_FLAGS, "train.loss.chunk_kd.weight=0.3"]),
    "sft-chunk-3": Setting("SFT + chunk term (λ_chunk 3)", [*SFT_FLAGS, "train.loss.chunk_kd.weight=3.0"]),
    "gold": Setting("TRL GOLD trainer (hybrid ULD 0.6 / 0.4, half on-policy)", gold=True),
    "gold-lr2e-5": Setting("TRL GOLD trainer, lr 2e-5", gold=True, lr=2e-5),
    # GOLD's validation budget (issue 50 item 5): learning rates, then GKD's on-policy λ and β
    "gold-lr1e-5": Setting("TRL GOLD trainer, lr 1e-5", gold=True, lr=1e-5),
    "gold-lr5e-5": Setting("TRL GOLD trainer, lr 5e-5", gold=True, lr=5e-5),
    "gold-lr1e-4": Setting("TRL GOLD trainer, lr 1e-4", gold=True, lr=1e-4),
    # GKD's finding (TRL's GKD docs): on-policy data (high λ) works better; β stays at its default
    "gold-lr2e-5-l1": Setting(
        "TRL GOLD trainer, lr 2e-5, every step on-policy (λ 1)", gold=True, lr=2e-5, gold_args={"lmbda": 1.0}
    ),
    # on-policy distillation (issue 23): settings chosen on validation, section 6e
    "sft-op": Setting("SFT, then on-policy", [*SFT_FLAGS, *on_policy(1.0, 5e-5)], warm="sft"),
    "sft-op-mix": Setting("SFT, then on-policy mixed 1:1", [*SFT_FLAGS, *on_policy(0.5, 5e-5)], warm="sft"),
    "sft-op-hi": Setting("SFT, then on-policy (lr 2e-4)", [*SFT_FLAGS, *on_policy(1.0, 2e-4)], warm="sft"),
    "sft-op-4": Setting("SFT, then on-policy (4 samples)", [*SFT_FLAGS, *on_policy(1.0, 5e-5, samples=4)], warm="sft"),
    "sft-op-dense": Setting(
        "SFT, then on-policy, dense reverse KL only",
        [*SFT_FLAGS, *on_policy(1.0, 5e-5, coef=0.0, dense=1.0)],
        warm="sft",
    ),
    "sft-op-dense-pg": Setting(
        "SFT, then on-policy, dense + chunk PG", [*SFT_FLAGS, *on_policy(1.0, 5e-5, dense=1.0)], warm="sft"
    ),
    "sft-op-dense-fwd": Setting(
        "SFT, then on-policy, dense forward KL only",
        [*SFT_FLAGS, *on_policy(1.0, 5e-5, coef=0.0, dense=1.0, direction="forward")],
        warm="sft",
    ),
    "sft-op-dense-hi": Setting(
        "SFT, then on-policy, dense reverse KL only (lr 2e-4)",
        [*SFT_FLAGS, *on_policy(1.0, 2e-4, coef=0.0, dense=1.0)],
        warm="sft",
    ),
    "sft-op-dense-mix": Setting(
        "SFT, then on-policy dense reverse KL mixed 1:1",
        [*SFT_FLAGS, *on_policy(0.5, 5e-5, coef=0.0, dense=1.0)],
        warm="sft",
    ),
    "sft-op-end": Setting(
        "SFT, then chunk PG with the end of turn scored and a mean baseline",
        [*SFT_FLAGS, *on_policy(1.0, 5e-5, end=True)],
        warm="sft",
    ),
    "sft-op-dense-end": Setting(
        "SFT, then dense + chunk PG with the end scored and a mean baseline",
        [*SFT_FLAGS, *on_policy(1.0, 5e-5, dense=1.0, end=True)],
        warm="sft",
    ),
    "sft-op-lo": Setting("SFT, then on-policy (lr 1e-5)", [*SFT_FLAGS, *on_policy(1.0, 1e-5)], warm="sft"),
    "op": Setting("on-policy (chunk PG) mixed 1:1 from the base", [*SFT_FLAGS, *on_policy(0.5, 2e-4)], steps=2.0),
    "op-dense": Setting(
        "on-policy (dense reverse KL) mixed 1:1 from the base",
        [*SFT_FLAGS, *on_policy(0.5, 2e-4, coef=0.0, dense=1.0)],
        steps=2.0,
    ),
    "sft-long": Setting("SFT, same student steps as SFT + on-policy", SFT_FLAGS, steps=2.0),
    "sft-tokens": Setting("SFT, same teacher tokens as SFT + on-policy", SFT_FLAGS, steps=2.0, extra_prompts=True),
}
# issue 35 (--task reasoning): the teacher asked to reason (configs/reasoning.yaml), its reasoning
# kept or dropped from the same cache, against a cache of the same teacher asked not to reason
DIRECT = "Do not show any working. Reply with one sentence: 'The answer is' followed by the number."
KEEP, DROP = [*SFT_FLAGS, "train.reasoning=keep"], [*SFT_FLAGS, "train.reasoning=drop"]
DIRECT_FLAGS = [*DROP, f'prompts.system_prompt="{DIRECT}"', "teacher.max_new_tokens=32"]
SETTINGS.update(
    {
        "think-keep": Setting("SFT on the teacher's reasoning + answer", KEEP),
        "think-drop": Setting("SFT on the answers alone (same cache)", DROP),
        "direct": Setting("SFT on a teacher asked not to reason", DIRECT_FLAGS, cache="direct"),
        "think-keep-long": Setting("SFT on reasoning + answer, 4 epochs", KEEP, steps=2.0),
        "think-drop-long": Setting("SFT on the answers alone, 4 epochs", DROP, steps=2.0),
        "direct-long": Setting(
            "SFT on a teacher asked not to reason, 4 epochs", DIRECT_FLAGS, steps=2.0, cache="direct"
        ),
    }
)
# issue 49 (--task reasoning): on-policy after reasoning SFT, the student writing its own working
# (samples up to 128 tokens), from the chosen reasoning student (think-keep-long, 76 steps), for 19
# steps (half the base run's 38); chosen on validation


def think_op(label: str, fraction: float, lr: float, **kw) -> Setting:
    """On-policy from the chosen reasoning student, 19 steps, samples up to 128 tokens."""
    return Setting(label, [*KEEP, *on_policy(fraction, lr, max_new=128, **kw)], steps=0.5, warm="think-keep-long")


SETTINGS.update(
    {
        "think-op-dense": think_op("SFT on reasoning, then on-policy dense reverse KL", 1.0, 5e-5, coef=0.0, dense=1.0),
        "think-op-dense-hi": think_op(
            "SFT on reasoning, then on-policy dense reverse KL (lr 2e-4)", 1.0, 2e-4, coef=0.0, dense=1.0
        ),
        "think-op-pg": think_op(
            "SFT on reasoning, then chunk PG + dense, end scored, mean baseline", 1.0, 5e-5, dense=1.0, end=True
        ),
        # two changes the literature uses for reasoning, on the chosen setting: every chunk credited
        # with the log-ratio of the rest of the sample (a wrong first sum makes the second unlikely
        # too), and outlier chunks (|r| > 5 nats, rllm's advantage clip) left out
        "think-op-pg-disc": think_op(
            "SFT on reasoning, then chunk PG (discount 1) + dense, end scored, mean baseline",
            1.0,
            5e-5,
            dense=1.0,
            end=True,
            discount=1.0,
        ),
        "think-op-pg-mask": think_op(
            "SFT on reasoning, then chunk PG (chunks over 5 nats masked) + dense, end scored, mean baseline",
            1.0,
            5e-5,
            dense=1.0,
            end=True,
            mask_above=5.0,
        ),
        "think-op-mix": think_op(
            "SFT on reasoning, then on-policy dense reverse KL mixed 1:1 with the cache", 0.5, 5e-5, coef=0.0, dense=1.0
        ),
        "think-op-dense-mid": think_op(
            "SFT on reasoning, then on-policy dense reverse KL (lr 1e-4)", 1.0, 1e-4, coef=0.0, dense=1.0
        ),
        # the student's samples at temperature 1 wander off its greedy working (verbose prose,
        # longer every step at lr 2e-4): sampled nearer its mode, the teacher scores the working
        # the student actually writes
        "think-op-dense-t05": think_op(
            "SFT on reasoning, then on-policy dense reverse KL, samples at T 0.5 (lr 1e-4)",
            1.0,
            1e-4,
            coef=0.0,
            dense=1.0,
            temperature=0.5,
        ),
        # control (a): the same extra steps from the same student, on the same cache (SFT's lr and
        # the on-policy runs' lr, the control's best chosen on validation like theirs)
        "think-more": Setting(
            "SFT on reasoning, then 19 more SFT steps (lr 5e-5)",
            [*KEEP, "train.lr=5e-5"],
            steps=0.5,
            warm="think-keep-long",
        ),
        "think-more-hi": Setting(
            "SFT on reasoning, then 19 more SFT steps (lr 2e-4)", KEEP, steps=0.5, warm="think-keep-long"
        ),
        # control (b): the same extra steps on a reasoning cache grown by as many records as the
        # teacher tokens the on-policy run (--on-policy) scored would buy
        "think-tokens": Setting(
            "SFT on reasoning, then 19 more SFT steps (lr 5e-5) on a cache with the on-policy run's teacher tokens",
            [*KEEP, "train.lr=5e-5"],
            steps=0.5,
            warm="think-keep-long",
            extra_prompts=True,
        ),
        "think-tokens-hi": Setting(
            "SFT on reasoning, then 19 more SFT steps (lr 2e-4) on a cache with the on-policy run's teacher tokens",
            KEEP,
            steps=0.5,
            warm="think-keep-long",
            extra_prompts=True,
        ),
        # control (c): answers alone, from a cache of the teacher told not to reason that costs it as
        # many generated tokens as the reasoning cache (about 4.7x the prompts), 2 epochs of it
        "direct-tokens": Setting(
            "SFT on a teacher asked not to reason, as many teacher tokens as the reasoning cache",
            DIRECT_FLAGS,
            cache="direct",
            equal_tokens=True,
        ),
    }
)

DEFAULT = ["sft", "dante", "no-cwce", "no-tea", "no-ce-schedule", "no-curriculum", "sft-kd"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", choices=sorted(TASKS), default="chain_sum")
    ap.add_argument("--out", default=None, help="default: runs/capability-<task>")
    ap.add_argument("--prompts", type=int, default=300, help="distillation prompts per replicate (train split)")
    ap.add_argument("--epochs", type=float, default=2.0, help="passes over the cache of the base run")
    ap.add_argument("--batch", type=int, default=16, help="sequences per optimizer step")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--split", choices=["test", "validation"], default="validation")
    ap.add_argument("--replicates", default="1,2,3", help="comma list of replicate numbers")
    ap.add_argument("--settings", default=",".join(DEFAULT), help=f"comma list from {', '.join(SETTINGS)}")
    ap.add_argument(
        "--on-policy",
        default=None,
        help="the on-policy setting whose teacher tokens sft-tokens and think-tokens match "
        "(default: think-op-dense for --task reasoning, else sft-op-dense)",
    )
    ap.add_argument("--reference", default="sft", help="the setting every other one is compared with")
    ap.add_argument("--curve", default="", help="settings whose checkpoints are scored on validation (a curve)")
    ap.add_argument("--curve-every", type=int, default=10, help="steps between the curve's checkpoints")
    ap.add_argument("--skip-teacher-eval", action="store_true", help="leave out the (slowest) teacher evaluation")
    ap.add_argument("--train-only", action="store_true", help="train the students, evaluate nothing")
    ap.add_argument("--eval-only", action="store_true", help="evaluate and summarise the students trained so far")
    ap.add_argument(
        "--directions", type=Path, default=directions.DATA, help="the registered test directions (bench/directions.py)"
    )
    ap.add_argument(
        "--per-question",
        type=Path,
        default=per_question.FOLDER,
        help="where every summarised model's correct-by-question results are kept (bench/per_question.py)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads of this process (set before torch loads)")
    ap.add_argument("overrides", nargs="*", help="extra dotted recipe overrides for every run")
    args = ap.parse_args(argv)
    args.out = Path(args.out or ROOT / "runs" / f"capability-{args.task}")
    args.on_policy = args.on_policy or ("think-op-dense" if args.task == "reasoning" else "sft-op-dense")
    return args


def base_steps(args: argparse.Namespace) -> int:
    return max(1, math.ceil(args.epochs * args.prompts / args.batch))


def eval_task(args: argparse.Namespace, split: str | None = None) -> str:
    task = TASKS[args.task]
    return task.test if (split or args.split) == "test" else task.validation


def recipe_for(
    args: argparse.Namespace,
    replicate: int | None,
    *extra: str,
    steps: int | None = None,
    prompts=None,
    cache: str | None = None,
):
    """The task's recipe for one replicate (None: the recipe itself, for the teacher and base)."""
    from dante.config import load_recipe

    steps = steps or base_steps(args)
    prompts = prompts or args.prompts
    out = args.out if replicate is None else args.out / f"r{replicate}"
    folder = cache_folder(args, prompts, cache)
    overrides = [
        f"output_dir={out}",
        f"prompts.limit={prompts}",
        f"cache.dir={out / folder}",
        "teacher.store_logprobs=20",  # the teacher's per-token top-20 for token-level KD
        # every published replicate's cache was written and scored batch by batch (before the
        # refilling schedule): a new replicate's is too, so the series stays one engine's
        "teacher.hf.schedule=batch",
        "eval.schedule=batch",
        f"train.steps={steps}",
        f"train.batch_sequences={args.batch}",
        f"train.micro_batch_size={args.batch}",
        f"train.lr={args.lr}",
        f"train.warmup_steps={max(1, steps // 8)}",
        f"train.checkpoint_every={max(1, steps // 2)}",
        f"train.loss.cwce.warmup_steps={max(1, steps // 10)}",
        f"train.loss.cwce.ramp_end={steps}",
        "eval.suite=null",
        f"eval.tasks=[{eval_task(args)}]",
    ]
    if replicate is not None:
        overrides += [
            f"prompts.seed={replicate - 1}",
            f"train.seed={replicate}",
            f"teacher.dtype={'float32' if TASKS[args.task].fp32_even and replicate % 2 == 0 else 'auto'}",
        ]
    return load_recipe(ROOT / TASKS[args.task].recipe, [*overrides, *args.overrides, *extra])


def cache_folder(args: argparse.Namespace, prompts: int, cache: str | None = None) -> str:
    """A replicate's cache folder: ``cache`` (the task's recipe, ``--prompts`` prompts),
    ``cache-<name>`` for a setting's own teacher prompt, ``-<n>`` appended for n prompts."""
    name = "cache" if cache is None else f"cache-{cache}"
    return name if prompts == args.prompts else f"{name}-{prompts}"


def seeded_cache(args: argparse.Namespace, replicate: int, prompts: int, cache: str | None = None) -> None:
    """A larger cache starts as a copy of the replicate's ``--prompts`` one (same prompt draw, whose
    first prompts are the same ones: the cache then writes only the new ones, exactly once)."""
    out = args.out / f"r{replicate}"
    small, big = out / cache_folder(args, args.prompts, cache), out / cache_folder(args, prompts, cache)
    if prompts != args.prompts and not big.exists() and (small / "manifest.json").is_file():
        shutil.copytree(small, big)


def cache_tokens(folder: Path) -> tuple[int, int]:
    """(records, the teacher's generated tokens) of a cache."""
    from dante.cache.records import read_cache

    records = read_cache([folder])
    return len(records), sum(r.completion_tokens or 0 for r in records)


def equal_token_prompts(args: argparse.Namespace, replicate: int, cache: str | None) -> int:
    """Prompts whose cache, written with the setting's own teacher prompt (``cache``), costs the
    teacher as many generated tokens as the replicate's main cache, to a whole batch: measured on
    the setting's ``--prompts`` cache (written first)."""
    from dante.cache.run import run_cache

    run_cache(recipe_for(args, replicate, cache=cache))
    out = args.out / f"r{replicate}"
    n, own = cache_tokens(out / cache_folder(args, args.prompts, cache))
    _, target = cache_tokens(out / cache_folder(args, args.prompts))
    return args.batch * math.ceil(target / max(1e-9, own / n) / args.batch)


def student_dir(args: argparse.Namespace, replicate: int, name: str) -> Path:
    return args.out / f"r{replicate}" / f"student-{name}"


def train_student(args: argparse.Namespace, replicate: int, name: str) -> Path:
    """Train one setting of one replicate (its warm start first), unless it is already done."""
    from dante.cache.run import run_cache
    from dante.train.checkpoint import latest_checkpoint
    from dante.train.loop import Hooks, train
    from orders import ORDERS

    setting = SETTINGS[name]
    folder = student_dir(args, replicate, name)
    if (folder / "dante_manifest.json").is_file():
        return folder
    if setting.gold:
        return train_gold(args, replicate, name, folder)
    extra = [f"train.output_dir={folder}", *setting.flags]
    if setting.warm:
        extra.append(f"train.on_policy.warm_start={train_student(args, replicate, setting.warm)}")
    steps = round(base_steps(args) * setting.steps)  # a warm start's too: × the base run's steps
    prompts = extra_prompts(args, replicate) if setting.extra_prompts else None
    if setting.equal_tokens:  # the same epochs of its larger cache
        prompts = equal_token_prompts(args, replicate, setting.cache)
        steps = round(base_steps(args) * setting.steps * prompts / args.prompts)
    if prompts:
        seeded_cache(args, replicate, prompts, setting.cache)
    if name in curve_settings(args):
        extra += [f"train.checkpoint_every={args.curve_every}", "train.keep_checkpoints=100"]
    recipe = recipe_for(args, replicate, *extra, steps=steps, prompts=prompts, cache=setting.cache)
    print(run_cache(recipe), flush=True)
    hooks = Hooks(epoch_order=ORDERS[setting.order] if setting.order else None)
    result = train(recipe, resume=latest_checkpoint(folder) is not None, hooks=hooks)
    print(f"[r{replicate} {name}]", result, flush=True)
    if name in curve_settings(args):
        keep_curve_models(args, replicate, name, folder)
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # 1.6 GB each (weights + AdamW state) for SmolLM2
    return folder


def train_gold(args: argparse.Namespace, replicate: int, name: str, folder: Path) -> Path:
    """TRL's GOLD trainer as a peer, on the replicate's cache and budget (``run_gold``)."""
    from dante.cache.records import read_cache
    from dante.cache.run import run_cache
    from dante.models import resolve_dtype, resolve_model
    from dante.train.sources.splits import filter_records, split_heldout

    steps = round(base_steps(args) * SETTINGS[name].steps)
    recipe = recipe_for(args, replicate, f"train.output_dir={folder}", steps=steps)
    print(run_cache(recipe), flush=True)
    t = recipe.train
    records, counts = filter_records(read_cache(recipe.cache_dirs), t.filter)
    records, _ = split_heldout(records, t.eval_fraction, t.seed)  # what dante trains on
    run_gold(
        records,
        str(resolve_model(recipe.student.model).path),
        str(resolve_model(recipe.teacher.model).path),
        folder,
        steps=steps,
        batch=args.batch,
        lr=SETTINGS[name].lr or args.lr,
        scheduler=t.lr_scheduler,
        seed=t.seed,
        max_length=t.max_length,
        max_new_tokens=recipe.teacher.max_new_tokens,
        teacher_dtype=resolve_dtype(recipe.teacher.dtype, "cpu"),
        system=t.system_prompt,
        extra={"filter": counts.as_dict()},
        config=SETTINGS[name].gold_args,
    )
    return folder


def run_gold(
    records: list,
    student: str,
    teacher: str,
    folder: Path,
    *,
    steps: int,
    batch: int,
    lr: float,
    scheduler: str = "cosine",
    seed: int = 42,
    max_length: int = 128,
    max_new_tokens: int = 48,
    teacher_dtype: str = "float32",
    system: str = "keep",
    extra: dict | None = None,
    config: dict | None = None,
) -> dict:
    """Train ``student`` on the cache ``records`` with TRL's GOLD trainer (trl pinned in the
    ``bench`` extra): the teacher loaded here (GOLD scores with its logits), the records' prompts
    as dante renders them and the teacher's answers as the completions, dante's steps, batch, lr,
    schedule and seed, and the cross-tokenizer settings GOLD's documentation recommends:
    ``use_uld_loss``, ``uld_use_hybrid_loss`` with matched / unmatched weights 0.6 / 0.4, its
    defaults otherwise (λ = 0.5: half the steps on the student's own samples, β = 0.5,
    temperature 0.9); ``config`` overrides GOLDConfig fields (``lmbda``, ``beta``). Writes the
    model and a ``dante_manifest.json`` in the shape the summary reads
    (teacher tokens: the cache's, plus every token the teacher ran forward on) and returns it."""
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl.experimental.gold import GOLDConfig, GOLDTrainer

    from dante.train.sources.render import messages as _messages

    rows = [{"messages": [*_messages(r, system), {"role": "assistant", "content": r.teacher_text}]} for r in records]
    tok = AutoTokenizer.from_pretrained(student)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    config = GOLDConfig(
        output_dir=str(folder / "trl"),
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=lr,
        lr_scheduler_type=scheduler,
        warmup_steps=max(1, steps // 8),
        seed=seed,
        max_length=max_length,
        max_completion_length=max_new_tokens,
        teacher_model_init_kwargs={"dtype": teacher_dtype},
        teacher_tokenizer_name_or_path=teacher,
        use_uld_loss=True,
        uld_use_hybrid_loss=True,
        uld_hybrid_matched_weight=0.6,
        uld_hybrid_unmatched_weight=0.4,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        **(config or {}),
    )
    trainer = GOLDTrainer(
        model=student, teacher_model=teacher, args=config, processing_class=tok, train_dataset=Dataset.from_list(rows)
    )
    scored = [0]

    def count(_module, _args, kwargs):
        mask = kwargs.get("attention_mask")
        scored[0] += int(mask.sum()) if mask is not None else kwargs["input_ids"].numel()

    trainer.teacher_model.register_forward_pre_hook(count, with_kwargs=True)
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    trainer.save_model(str(folder))
    tok.save_pretrained(folder)
    shutil.rmtree(folder / "trl", ignore_errors=True)
    manifest = {
        "trainer": f"trl {trl.__version__} GOLDTrainer",
        "steps": out.global_step,
        "train_records": len(rows),
        "teacher_compute": {
            "tokens_generated": sum(r.completion_tokens or 0 for r in records),
            "tokens_scored": scored[0],
        },
        "wall_time_s": wall,
        "seconds_per_step": wall / max(1, out.global_step),
        "log_history": trainer.state.log_history,
        "config": {k: str(v) for k, v in config.to_dict().items()},
        **(extra or {}),
    }
    (folder / "dante_manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    print(f"GOLD: {out.global_step} steps in {wall:.0f} s ({folder})", flush=True)
    return manifest


def keep_curve_models(args: argparse.Namespace, replicate: int, name: str, folder: Path) -> None:
    """Each checkpoint's weights as a ``from_pretrained`` folder under ``r<k>/curve/`` (the
    checkpoints themselves, with the optimizer state, are deleted after training)."""
    from dante.train.checkpoint import complete_checkpoints

    for ckpt in complete_checkpoints(folder):
        model = curve_dir(args, replicate) / f"{name}-step-{int(ckpt.name.split('-')[-1]):06d}"
        if (model / "model.safetensors").exists():
            continue
        model.mkdir(parents=True, exist_ok=True)
        for f in folder.iterdir():
            if f.is_file() and f.name != "model.safetensors" and not f.name.startswith(("dante_", "metrics")):
                shutil.copy2(f, model / f.name)
        shutil.copy2(ckpt / "model.safetensors", model / "model.safetensors")


def curve_dir(args: argparse.Namespace, replicate: int) -> Path:
    return args.out / f"r{replicate}" / "curve"


def extra_prompts(args: argparse.Namespace, replicate: int) -> int:
    """Prompts whose cache costs the teacher as many tokens as SFT's cache plus what the on-policy
    setting (``--on-policy``, of the same replicate, trained first) had scored, to a whole batch."""
    manifest = json.loads((train_student(args, replicate, args.on_policy) / "dante_manifest.json").read_text())
    compute = manifest["teacher_compute"]
    per_record = compute["tokens_generated"] / max(1, manifest["train_records"])
    more = compute["tokens_scored"] / max(1e-9, per_record)
    return args.prompts + args.batch * math.ceil(more / args.batch)


def curve_settings(args: argparse.Namespace) -> list[str]:
    return [n for n in args.curve.split(",") if n]


# -- evaluation -----------------------------------------------------------------------------------


def eval_dir(args: argparse.Namespace, replicate: int | None, split: str | None = None) -> Path:
    base = args.out if replicate is None else args.out / f"r{replicate}"
    return base / f"eval-{split or args.split}"


def evaluate(args: argparse.Namespace, replicate: int | None, models: list[str], split: str | None = None) -> None:
    from dante.eval.run import evaluate as run_eval

    edir = eval_dir(args, replicate, split)
    todo = [m for m in models if not (edir / Path(m).name / "scores.json").is_file()]
    if not todo:
        return
    task = eval_task(args, split)
    recipe = recipe_for(
        args, replicate, f"eval.models=[{','.join(todo)}]", f"eval.output_dir={edir}", f"eval.tasks=[{task}]"
    )
    print(run_eval(recipe), flush=True)


def correct(args: argparse.Namespace, replicate: int | None, model: str, split: str | None = None):
    """(accuracy, n, correct-by-question) of an evaluated model, or None."""
    from dante.eval.scores import correct_by_doc

    folder = eval_dir(args, replicate, split) / model
    got = correct_by_doc(folder, eval_task(args, split), "exact_match", "none") if folder.is_dir() else None
    if not got:
        return None
    return sum(got.values()) / len(got), len(got), got


# -- the curve ------------------------------------------------------------------------------------


def curve(args: argparse.Namespace, replicate: int) -> dict[str, list[tuple[int, float]]]:
    """Validation accuracy at each kept checkpoint of the curve settings, at their start (the
    base, or the warm start's student) and at their end."""
    points: dict[str, list[tuple[int, float]]] = {}
    base = correct(args, None, "base", "validation")
    for name in curve_settings(args):
        folder = train_student(args, replicate, name)
        setting = SETTINGS[name]
        offset = base_steps(args) if setting.warm else 0
        models = sorted(curve_dir(args, replicate).glob(f"{name}-step-*"))
        warm = [str(student_dir(args, replicate, setting.warm))] if setting.warm else []
        evaluate(args, replicate, [str(m) for m in models] + [str(folder), *warm], "validation")
        steps = round(base_steps(args) * setting.steps)
        start = correct(args, replicate, f"student-{setting.warm}", "validation") if setting.warm else base
        series = [(offset, start[0] if start else None)]
        series += [
            (offset + int(m.name.split("-")[-1]), correct(args, replicate, m.name, "validation")[0]) for m in models
        ]
        series.append((offset + steps, correct(args, replicate, folder.name, "validation")[0]))
        points[name] = sorted({s: a for s, a in series if a is not None}.items())
    return points


def plot_curve(points: dict[str, list[tuple[int, float]]], path: Path, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, series in points.items():
        ax.plot([s for s, _ in series], [100 * a for _, a in series], marker="o", label=SETTINGS[name].label)
    ax.set_xlabel("student optimizer steps")
    ax.set_ylabel(f"accuracy on {task} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- the table ------------------------------------------------------------------------------------


def summarise(args: argparse.Namespace, names: list[str], replicates: list[int], seconds: float) -> str:
    from dante.eval.scores import gap_recovered, mcnemar_exact, replicate_bootstrap, replication_verdict, wilson_ci

    task = eval_task(args)
    teacher, base = correct(args, None, "teacher"), correct(args, None, "base")
    lines = [
        f"{args.task}: {task}, {len(replicates)} replicate(s) {replicates}; teacher {TASKS[args.task].teacher}",
        "",
    ]
    for label, ref in (("teacher", teacher), ("student before", base)):
        if ref:
            lo, hi = wilson_ci(ref[0], ref[1])
            lines.append(f"- {label}: {ref[0]:.1%} ({lo:.1%}–{hi:.1%}, n = {ref[1]})")
    lines += [
        "",
        f"| setting | per replicate | mean | range | GR | vs {args.reference} per replicate: won / lost (p) | sign | "
        "mean diff. (95% CI: 2-level bootstrap; t over replicates); sign-flip p over replicates | teacher tokens | "
        "GR per M teacher tokens | "
        "on-policy: sampled reverse KL per token, first → last 5 steps; tokens per sample |",
        "|---|---|---:|---|---:|---|---|---|---:|---:|---|",
    ]
    results: dict[str, dict] = {}
    registered, notes = directions.load(args.directions), []  # the test directions written before the test read
    for name in names:
        per = {r: correct(args, r, f"student-{name}") for r in replicates}
        per = {r: v for r, v in per.items() if v}
        if not per:
            continue
        accs = [v[0] for v in per.values()]
        mean = sum(accs) / len(accs)
        gr = gap_recovered(mean, base[0], teacher[0]) if teacher and base else None
        tokens = teacher_tokens(args, name, list(per))
        trace = on_policy_trace(args, name, list(per))
        row = {"per_replicate": {r: v[0] for r, v in per.items()}, "mean": mean, "gr": gr, "teacher_tokens": tokens}
        row["on_policy"] = trace
        cells = ["", "", ""]
        if name != args.reference:
            ref = {r: correct(args, r, f"student-{args.reference}") for r in per}
            pairs = {r: (ref[r][2], per[r][2]) for r in per if ref.get(r)}
            if pairs:
                tests = {r: mcnemar_exact(a, b) for r, (a, b) in pairs.items()}
                diffs = {r: per[r][0] - ref[r][0] for r in pairs}
                boot = replicate_bootstrap(list(pairs.values()))
                row.update(vs_sft={str(r): t for r, t in tests.items()}, bootstrap=boot)
                cells[0] = ", ".join(f"{t['b_only']}/{t['a_only']} ({t['p_value']:.2g})" for t in tests.values())
                cells[1] = f"{sum(d > 0 for d in diffs.values())}+ {sum(d < 0 for d in diffs.values())}−"
                direction, why = test_direction(args, name, replicates, registered, notes)
                verdict = replication_verdict(list(diffs.values()), boot["ci95"], direction)
                row["verdict"], row["direction"] = verdict, why
                mark = " **holds**" if verdict["holds"] else ""
                t_lo, t_hi = verdict["t_ci95"]
                cells[2] = (
                    f"{100 * boot['mean']:+.1f} ({100 * boot['ci95'][0]:+.1f}, {100 * boot['ci95'][1]:+.1f}; "
                    f"t {100 * t_lo:+.1f}, {100 * t_hi:+.1f}); "
                    f"sign-flip p = {verdict['p']:.3g} ({verdict['alternative']}){mark}"
                )
        results[name] = row
        lo, hi = min(accs), max(accs)
        per_text = " / ".join(f"{a:.1%}" for a in accs)
        gr_text = f"{gr:.0%}" if gr is not None else ""
        tok_text = f"{tokens / 1e3:.1f}k" if tokens else ""
        per_m = f"{gr / (tokens / 1e6):.1f}" if gr is not None and tokens else ""
        op_text = (
            f"{trace['kl_first']:.3f} → {trace['kl_last']:.3f}; "
            f"{trace['tokens_first']:.1f} → {trace['tokens_last']:.1f}"
            if trace
            else ""
        )
        lines.append(
            f"| {SETTINGS[name].label} | {per_text} | {mean:.1%} | {lo:.1%}–{hi:.1%} | {gr_text} | {cells[0]} | "
            f"{cells[1]} | {cells[2]} | {tok_text} | {per_m} | {op_text} |"
        )
    keep_per_question(args, names, replicates)
    if args.split == "test":
        directions.save(registered, args.directions)  # the first test read stamped: a direction written later is late
        lines += ["", "Test directions (bench/results/directions.json):", *notes]
    times = {n: step_seconds(args, n, replicates) for n in names}
    times = {n: t for n, t in times.items() if t}
    if times:
        lines += [
            "",
            "seconds per optimizer step (training wall time / steps, mean over replicates; GOLD includes its "
            "teacher's forward passes and the student's samples): "
            + ", ".join(f"{n} {t:.1f}" for n, t in times.items()),
        ]
    lines += [
        "",
        f"{args.prompts} prompts per replicate, {args.epochs:g} epochs = {base_steps(args)} steps at {args.batch} "
        f"sequences/step, lr {args.lr:g} unless a setting says otherwise; {args.split} split; "
        f"wall time {seconds / 60:.0f} min; machine {machine()}.",
    ]
    out = args.out / f"capability-{args.split}"
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "teacher": teacher and teacher[:2]}
    summary.update(base=base and base[:2], settings=results, wall_time_s=seconds, machine=machine())
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=str))
    plot(results, out.with_suffix(".png"), task, teacher, base)
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text)
    return text


def keep_per_question(args: argparse.Namespace, names: list[str], replicates: list[int]) -> Path:
    """Every model this summary read, question by question, merged into the kept file
    (``--per-question``): what ``recompute.py`` recomputes the summary's figures from."""
    found = {"teacher": correct(args, None, "teacher"), "base": correct(args, None, "base")}
    for r in replicates:
        for name in {*names, args.reference}:
            found[f"r{r}/student-{name}"] = correct(args, r, f"student-{name}")
    path = per_question.path_for(args.task, args.split, args.per_question)
    results = {model: got[2] for model, got in found.items() if got}
    if results:
        per_question.merge(path, args.task, args.split, eval_task(args), results, machine())
    return path


def test_direction(args, name: str, replicates: list[int], registered: dict, notes: list[str]) -> tuple[int, str]:
    """The direction a test of ``name`` against the reference uses, and why: on the test split the
    one registered before the first test read (bench/directions.py; this read is stamped), else
    two-sided; a sign the validation folders show but nobody registered is said, not used. On the
    validation split: two-sided (it is where directions come from)."""
    if args.split != "test":
        return 0, "two-sided: the validation split"
    sign, why = directions.test_direction(registered, directions.key(args.task, name, args.reference))
    shown = validation_direction(args, name, replicates)
    if shown and not sign:
        why += f"; the validation folders here show {'greater' if shown > 0 else 'less'}, not registered, so not used"
    notes.append(f"- {name} vs {args.reference}: {why}")
    return sign, why


def validation_direction(args: argparse.Namespace, name: str, replicates: list[int]) -> int:
    """The sign of the setting's mean difference from the reference on the validation split (its
    replicates evaluated there), which fixes the direction of the test read once; 0 without one."""
    diffs = []
    for r in replicates:
        a = correct(args, r, f"student-{args.reference}", "validation")
        b = correct(args, r, f"student-{name}", "validation")
        if a and b:
            diffs.append(b[0] - a[0])
    mean = sum(diffs) / len(diffs) if diffs else 0.0
    return (mean > 0) - (mean < 0)


def teacher_tokens(args: argparse.Namespace, name: str, replicates: list[int]) -> float | None:
    """Mean over replicates of the teacher tokens a setting cost: generated for its cache (and
    its warm start's) plus scored on-policy."""
    totals = []
    for r in replicates:
        chain, folder = [], student_dir(args, r, name)  # the setting's manifest, then its warm starts'
        while folder is not None:
            manifest = folder / "dante_manifest.json"
            if not manifest.is_file():
                return None
            chain.append(json.loads(manifest.read_text())["teacher_compute"])
            warm = SETTINGS[folder.name.removeprefix("student-")].warm
            folder = student_dir(args, r, warm) if warm else None
        generated = [c["tokens_generated"] for c in chain]
        # the root's cache once, and what each larger cache holds beyond its warm start's (think-tokens)
        extra = sum(max(0, g - start) for g, start in zip(generated, generated[1:]))
        totals.append(sum(c["tokens_scored"] for c in chain) + generated[-1] + extra)
    return sum(totals) / len(totals)


def step_seconds(args: argparse.Namespace, name: str, replicates: list[int]) -> float | None:
    """Mean over replicates of a setting's training wall time per optimizer step (its manifest)."""
    per = []
    for r in replicates:
        path = student_dir(args, r, name) / "dante_manifest.json"
        if path.is_file():
            m = json.loads(path.read_text())
            if m.get("wall_time_s") and m.get("steps"):
                per.append(m["wall_time_s"] / m["steps"])
    return sum(per) / len(per) if per else None


def on_policy_trace(args: argparse.Namespace, name: str, replicates: list[int], last: int = 5) -> dict | None:
    """How far the student's own samples sit from the teacher over an on-policy run, from each
    student's metrics.jsonl: the sampled reverse KL per token (log p_S − log p_T summed over a
    sample's tokens, over its tokens) and the tokens per sample, means of the first and of the last
    ``last`` steps that sampled, then over replicates. None for a setting that never sampled."""
    per: list[dict[str, float]] = []
    for r in replicates:
        path = student_dir(args, r, name) / "metrics.jsonl"
        if not path.is_file():
            continue
        steps: dict[int, dict] = {}
        for line in path.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            if row.get("on_policy_samples"):
                steps[row["step"]] = row  # a resumed run logs a step again: the last one counts
        rows = [steps[k] for k in sorted(steps)]
        if not rows:
            continue
        first, end = rows[:last], rows[-last:]
        per.append(
            {
                "kl_first": sum(x["on_policy_kl_per_token"] for x in first) / len(first),
                "kl_last": sum(x["on_policy_kl_per_token"] for x in end) / len(end),
                "tokens_first": sum(x["on_policy_tokens"] / x["on_policy_samples"] for x in first) / len(first),
                "tokens_last": sum(x["on_policy_tokens"] / x["on_policy_samples"] for x in end) / len(end),
            }
        )
    if not per:
        return None
    return {k: sum(p[k] for p in per) / len(per) for k in per[0]} | {"replicates": len(per)}


def plot(results: dict[str, dict], path: Path, task: str, teacher, base) -> None:
    """Each setting's mean with its replicates as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.5))
    for i, name in enumerate(names):
        values = [100 * a for a in results[name]["per_replicate"].values()]
        ax.barh(i, 100 * results[name]["mean"], color="#1f77b4" if name.startswith("dante") else "#9ecae1")
        ax.scatter(values, [i] * len(values), color="black", s=12, zorder=3)
    for ref, style in ((teacher, "--"), (base, ":")):
        if ref:
            ax.axvline(100 * ref[0], color="#888888", linestyle=style)
    ax.set_yticks(range(len(names)), [SETTINGS[n].label for n in names])
    ax.invert_yaxis()
    ax.set_xlabel(f"accuracy on {task} (%)\nmean bar, replicates as dots; teacher dashed, before dotted")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine() -> str:
    from common import machine as info

    m = info()
    return f"{m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch thread(s), torch {m['torch']}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n for n in args.settings.split(",") if n]
    unknown = set(names + curve_settings(args) + [args.reference]) - set(SETTINGS)
    if unknown:
        raise SystemExit(f"unknown settings {sorted(unknown)}; from {', '.join(SETTINGS)}")
    replicates = [int(r) for r in args.replicates.split(",") if r]
    t0 = time.perf_counter()
    for r in replicates:
        for name in [] if args.eval_only else names:
            train_student(args, r, name)
    if args.train_only:
        return 0
    evaluate(args, None, ([] if args.skip_teacher_eval else ["teacher"]) + ["base"])
    for r in replicates:
        trained = [student_dir(args, r, n) for n in names]
        evaluate(args, r, [str(p) for p in trained if (p / "dante_manifest.json").is_file()])
    if curve_settings(args) and not args.eval_only:
        evaluate(args, None, ["base"], "validation")
        points = {f"r{r}": curve(args, r) for r in replicates}
        (args.out / "curve.json").write_text(json.dumps(points, indent=2))
        plot_curve(points[f"r{replicates[0]}"], args.out / "curve.png", eval_task(args, "validation"))
    print(summarise(args, names, replicates, time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
