"""Published figures from the DANTE-Mosaic-3.5B model card (the "card"), used by the report as
reference rows: clearly marked as published, never as measured here, each with its source.

Values are percent as printed in the card. ``settings`` say what each number was measured
with, so the report can flag every difference from the rows it measured itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CARD_URL = "https://huggingface.co/OdaxAI/DANTE-Mosaic-3.5B"
SMOLLM3_URL = "https://huggingface.co/HuggingFaceTB/SmolLM3-3B-Base"


@dataclass(frozen=True)
class Published:
    """One published score of one model on one benchmark."""

    model: str
    benchmark: str
    value: float  # percent
    task: str  # the variant measured (lm-eval task name where one exists)
    shots: int | None
    metric: str
    filter: str
    harness: str
    harness_version: str | None
    n_samples: int | None
    source: str
    note: str = ""


@dataclass(frozen=True)
class PublishedCompute:
    job: str
    a100_hours: float
    source: str
    note: str = ""


_CARD = "DANTE-Mosaic-3.5B model card, 'Canonical benchmarks' table and model-index, " + CARD_URL
_CARD_COMPUTE = "DANTE-Mosaic-3.5B model card, 'Compute footprint' table, " + CARD_URL
_PEERS = "SmolLM3 technical report, Table 1 (lighteval), as quoted in the card's peer table; " + SMOLLM3_URL


def _dante(
    benchmark: str,
    value: float,
    task: str,
    shots: int | None,
    metric: str,
    filt: str,
    harness: str,
    version: str | None,
    n: int,
    note: str = "",
) -> Published:
    return Published(
        "DANTE-Mosaic-3.5B (published)", benchmark, value, task, shots, metric, filt, harness, version, n, _CARD, note
    )


DANTE_MOSAIC = (
    _dante("HellaSwag", 76.73, "hellaswag", 10, "acc_norm", "none", "lm-eval", "0.4.5", 10042),
    _dante("GSM8K", 74.45, "gsm8k", 8, "exact_match", "strict-match", "lm-eval", "0.4.5", 1319),
    _dante("ARC-Challenge", 62.71, "arc_challenge", 25, "acc_norm", "none", "lm-eval", "0.4.5", 1172),
    _dante("MMLU", 59.38, "mmlu", 5, "acc", "none", "lm-eval", "0.4.5", 14042),
    _dante(
        "MMLU-Pro",
        39.74,
        "mmlu_pro",
        5,
        "exact_match",
        "custom-extract",
        "lm-eval",
        "0.4.5",
        4500,
        note="n=4500 as printed; the MMLU-Pro test split has 12 032 rows",
    ),
    _dante(
        "HumanEval",
        6.71,
        "humaneval",
        0,
        "pass@1",
        "create_test",
        "bigcode-evaluation-harness",
        None,
        164,
        note="6.71 in the model-index, 6.70 in the table",
    ),
    _dante("MBPP", 42.60, "mbpp", 0, "pass@1", "none", "bigcode-evaluation-harness", None, 374),
)

# Peer rows of the card ("standard 3B-4B open-weight basket"): lighteval runs from the SmolLM3
# report. MMLU there is MMLU-CF (cloze), code rows are the harder HumanEval+ / MBPP+.
_PEER_TABLE = {
    "SmolLM3-3B": (76.2, 65.6, 44.1, 32.7, 67.6, 52.9, 30.5),
    "Qwen2.5-3B": (74.2, 59.8, 42.9, 31.3, 70.1, 52.1, 34.1),
    "Llama-3.2-3B": (75.5, 58.6, 41.3, 25.1, 25.9, 38.9, 25.0),
    "Qwen3-1.7B-Base": (60.5, 55.9, 39.1, 30.4, 65.9, 59.3, 43.3),
    "Qwen3-4B-Base": (74.4, 62.1, 47.7, 41.1, 74.1, 63.8, 54.9),
}
_PEER_COLUMNS = (
    ("HellaSwag", "hellaswag", "acc_norm", ""),
    ("ARC-Challenge", "arc_challenge", "acc_norm", ""),
    ("MMLU", "mmlu_cf (cloze)", "acc", "MMLU-CF (cloze), not the 5-shot MMLU the card reports for DANTE"),
    ("MMLU-Pro", "mmlu_pro", "exact_match", ""),
    ("GSM8K", "gsm8k", "exact_match", "the card's text also quotes 67.4 for SmolLM3-3B"),
    ("MBPP", "mbpp_plus", "pass@1", "MBPP+ (harder variant)"),
    ("HumanEval", "humaneval_plus", "pass@1", "HumanEval+ (harder variant)"),
)


def _peers() -> tuple[Published, ...]:
    rows = []
    for model, values in _PEER_TABLE.items():
        for (bench, task, metric, note), value in zip(_PEER_COLUMNS, values):
            rows.append(
                Published(
                    f"{model} (published)",
                    bench,
                    value,
                    task,
                    None,
                    metric,
                    "unknown",
                    "lighteval",
                    None,
                    None,
                    _PEERS,
                    note + ("; " if note else "") + "shots not stated in the card",
                )
            )
    return tuple(rows)


PEERS = _peers()
CARD_SCORES: tuple[Published, ...] = DANTE_MOSAIC + PEERS

# The card's "Compute footprint" table (A100-GPU-hour equivalents, the card's own estimates).
CARD_COMPUTE = (
    PublishedCompute("DANTE-Mosaic-3.5B student training", 21.0, _CARD_COMPUTE, "8x A100 x ~2 h 37 min"),
    PublishedCompute("DANTE-Mosaic-3.5B teacher cache", 40.0, _CARD_COMPUTE, "approximate"),
    PublishedCompute("SmolLM3-3B mid-training", 7.2e3, _CARD_COMPUTE, "estimate 6ND"),
    PublishedCompute("Phi-3.5-mini pre+post-training", 4.5e5, _CARD_COMPUTE, "estimate"),
    PublishedCompute("SmolLM3-3B pretraining", 5.75e5, _CARD_COMPUTE, "estimate 6ND, H100 -> A100 x2.5"),
    PublishedCompute("Granite-4.1-3b pretraining", 9e5, _CARD_COMPUTE, "estimate"),
)

# Published (model, training A100-hours) pairs for the score-vs-compute plot.
COMPUTE_POINTS = {"DANTE-Mosaic-3.5B (published)": 21.0, "SmolLM3-3B (published)": 5.75e5}


@dataclass
class ReferenceSet:
    """What the report shows as published reference rows."""

    scores: tuple[Published, ...] = CARD_SCORES
    compute: tuple[PublishedCompute, ...] = CARD_COMPUTE
    sources: dict[str, str] = field(default_factory=lambda: {"card": CARD_URL, "SmolLM3 report": SMOLLM3_URL})
