"""`teacher.dispatch: batch` (BENCHMARKS.md section 12): how fast a batch's results become records,
against the local engine writing the same records from an instant teacher, in one run; and the
price of the card's cache both ways at a provider's published per-token prices.

    .venv/bin/python bench/batch_ingest.py                  # 20 000 prompts, 3 interleaved rounds
    .venv/bin/python bench/batch_ingest.py --prompts 2000   # quick

1. ingest: N prompts; their result file in the OpenAI batch format (each answer a chat completion
   with top-20 logprobs on 24 tokens, the shape vLLM's run_batch and hosted providers return) is
   written once; `dante cache --ingest` reads it into a fresh cache (parse, validate, entropy,
   payload, exactly-once writer, manifest). Baselines: `run_cache` with the local engine and an
   instant teacher returning the same texts and logprobs (the writer path alone), and decoding
   the file's JSON lines alone (what any client of the format pays). Records/s and ratios.
2. cost: the card's ~44 k prompts, greedy completions of up to 512 tokens plus 4 self-consistency
   samples, at the per-token prices given (defaults: Moonshot's list price for kimi-k2, see
   --source) synchronously and with a Batch API's discount.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import set_threads, thread_arg  # noqa: E402

if __name__ == "__main__":
    set_threads(thread_arg())

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import common  # noqa: E402
from dante.teacher import Generation, Teacher  # noqa: E402
from dante.teacher.entropy import topk_entropy  # noqa: E402
from dante.tokens import TokenLogprobs  # noqa: E402

TOKENS, K = 24, 20


def answer_tokens(i: int) -> list[str]:
    return [f" w{(i * 7 + j) % 997}" for j in range(TOKENS)]


def chat_body(i: int) -> dict:
    """A chat completion with top-K logprobs on every token, as a provider returns it."""
    content = []
    for j, tok in enumerate(answer_tokens(i)):
        top = [{"token": tok, "logprob": -0.2, "bytes": list(tok.encode())}]
        top += [
            {"token": f" a{j}-{k}", "logprob": -3.0 - 0.1 * k, "bytes": list(f" a{j}-{k}".encode())}
            for k in range(K - 1)
        ]
        content.append({"token": tok, "logprob": -0.2, "bytes": list(tok.encode()), "top_logprobs": top})
    text = "".join(answer_tokens(i))
    return {
        "id": f"cmpl-{i}",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": {"content": content},
            }
        ],  # fmt: skip
        "usage": {"prompt_tokens": 12, "completion_tokens": TOKENS},
    }


class InstantTeacher(Teacher):
    """The same answers with no server: what is left is dante's own work per record."""

    name = "fake-teacher"

    def generate(self, prompts, sampling):
        out = []
        for p in prompts:
            i = int(p.prompt.split()[1].rstrip(":"))
            toks = answer_tokens(i)
            top = [
                [(t.encode(), -0.2)] + [(f" a{j}-{k}".encode(), -3.0 - 0.1 * k) for k in range(K - 1)]
                for j, t in enumerate(toks)
            ]
            payload = TokenLogprobs([t.encode() for t in toks], [-0.2] * TOKENS, top)
            ent = [topk_entropy([lp for _, lp in row]) for row in top]
            out.append([Generation("".join(toks), TOKENS, "stop", ent, 12, payload)])
        return out

    def device_info(self):
        return {"device_type": "cpu", "device_count": 1}


def recipe(folder: Path, prompts: Path, engine: str):
    from dante.config import load_recipe

    return load_recipe(
        data={
            "name": "bench-batch",
            "output_dir": str(folder),
            "prompts": {"source": str(prompts)},
            "teacher": {
                "backend": "openai",
                "model": "fake-teacher",
                "top_logprobs": K,
                "store_logprobs": K,
                "batch_size": 256,
                "openai": {"base_url": "http://127.0.0.1:9/v1"},
            },  # fmt: skip
            "cache": {"engine": engine, "shard_size": 10_000, "flush_every": 256},
        }
    )


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ingest_rates(n: int, rounds: int) -> dict:
    from dante.cache.records import read_cache
    from dante.cache.run import run_cache
    from dante.prompts import prompt_set

    work = Path(tempfile.mkdtemp(prefix="dante-batch-bench-"))
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Question {i}: what is {i} plus {i}?"}) + "\n" for i in range(n)))
    ids = [p.id for p in prompt_set(recipe(work / "x", prompts, "batch"))]
    results = work / "results.jsonl"
    with open(results, "w") as fh:
        for i, cid in enumerate(ids):
            line = {"id": f"req-{i}", "custom_id": cid, "error": None,
                    "response": {"status_code": 200, "request_id": f"r{i}", "body": chat_body(i)}}  # fmt: skip
            fh.write(json.dumps(line) + "\n")
    times = {"ingest": [], "local": [], "json": []}
    for k in range(rounds):
        order = ["ingest", "local", "json"] if k % 2 == 0 else ["json", "local", "ingest"]
        for name in order:
            if name == "json":  # the floor: only decoding the provider's JSON lines, which any client pays
                times[name].append(timed(lambda: [json.loads(x) for x in results.read_bytes().splitlines()]))
                continue
            folder = work / f"{name}-{k}"
            r = recipe(folder, prompts, "batch" if name == "ingest" else "local")
            if name == "ingest":
                times[name].append(timed(lambda r=r: run_cache(r, ingest=[results])))
            else:
                times[name].append(timed(lambda r=r: run_cache(r, teacher=InstantTeacher(r.teacher))))
            got = read_cache(r.cache_dir)
            assert len(got) == n and len({x.id for x in got}) == n
    a = {x.id: x.model_dump() for x in read_cache(work / f"ingest-{rounds - 1}" / "cache")}
    b = {x.id: x.model_dump() for x in read_cache(work / f"local-{rounds - 1}" / "cache")}
    same = all(
        a[i]["teacher_text"] == b[i]["teacher_text"] and a[i]["token_logprobs"] == b[i]["token_logprobs"] for i in a
    )
    rate = {name: n / statistics.median(ts) for name, ts in times.items()}
    ratios = [tl / ti for ti, tl in zip(times["ingest"], times["local"], strict=True)]
    json_share = statistics.median(tj / ti for ti, tj in zip(times["ingest"], times["json"], strict=True))
    return {"prompts": n, "rounds": rounds, "records_per_s": rate, "ingest_speed_vs_local": statistics.median(ratios),
            "json_share_of_ingest": json_share, "results_file_bytes": results.stat().st_size,
            "records_identical": same}  # fmt: skip


def cost(args) -> dict:
    """Dollars for the card's cache: input = prompt tokens (once per request: the main request and
    the samples request, each billed its prompt), output = completion tokens at the cap."""
    requests = 2 if args.samples else 1
    tokens_in = args.card_prompts * args.prompt_tokens * requests
    tokens_out = args.card_prompts * args.max_new_tokens * (1 + args.samples)
    sync = tokens_in / 1e6 * args.price_in + tokens_out / 1e6 * args.price_out
    batch = sync * (1 - args.batch_discount)
    return {
        "prompts": args.card_prompts,
        "input_tokens": tokens_in,
        "output_tokens_at_most": tokens_out,
        "synchronous_usd": round(sync, 2),
        "batch_usd": round(batch, 2),
        "prices": args.source,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--card-prompts", type=int, default=44_000)
    ap.add_argument(
        "--prompt-tokens", type=int, default=200, help="mean prompt tokens (an assumption: the card gives none)"
    )
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--samples", type=int, default=4, help="self-consistency samples per prompt (the mosaic recipe: 4)")
    ap.add_argument("--price-in", type=float, default=0.60, help="USD per 1M input tokens")
    ap.add_argument("--price-out", type=float, default=2.50, help="USD per 1M output tokens")
    ap.add_argument("--batch-discount", type=float, default=0.5)
    ap.add_argument(
        "--source",
        default="Moonshot AI platform pricing page (platform.moonshot.ai/docs/pricing/chat, archived 2026-03-26): "
        "kimi-k2-0905-preview $0.60 input (cache miss) / $2.50 output per 1M tokens; batch discount 50% as "
        "OpenAI's and Together AI's Batch APIs list it (Together: on its listed models only)",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    common.quiet()
    report = {"machine": common.machine(), "ingest": ingest_rates(args.prompts, args.rounds), "cost": cost(args)}
    ing = report["ingest"]
    print(f"ingest: {ing['records_per_s']['ingest']:.0f} records/s; local engine (instant teacher) "
          f"{ing['records_per_s']['local']:.0f} records/s; ingest / local speed {ing['ingest_speed_vs_local']:.2f}x; "
          f"decoding the JSON lines alone: {ing['json_share_of_ingest']:.0%} of the ingest time "
          f"({ing['results_file_bytes'] / ing['prompts'] / 1024:.1f} KiB a line); "
          f"records identical: {ing['records_identical']}")  # fmt: skip
    c = report["cost"]
    tokens = f"{c['input_tokens'] / 1e6:.1f}M input + at most {c['output_tokens_at_most'] / 1e6:.1f}M output tokens"
    print(f"the card's cache, {tokens}: ${c['synchronous_usd']:.2f} synchronous, ${c['batch_usd']:.2f} by Batch API")
    print(json.dumps(report["machine"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    assert math.isfinite(ing["ingest_speed_vs_local"])


if __name__ == "__main__":
    main()
