"""Tiny random models and tokenizers built locally (no hub), shared by every test.

Two tokenizers with different vocabularies and chat templates stand for the teacher and
the student, so tests exercise the cross-tokenizer path the real pipeline takes.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Question: what is 2 + 3? Answer: 5.",
    "def add(a, b):\n    return a + b\n",
    "Natalia sold clips to 48 of her friends in April, and then half as many in May.",
    "A distillation cache holds teacher completions and their entropy.",
    "The answer is 42. The answer is 7. The answer is 12.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?()[]{}<>=+-*/#'\"",
] * 20

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# A different template for the "student" side: different markers, different tokens.
TURNS = (
    "{% for m in messages %}<turn>{{ m['role'] }}: {{ m['content'] }}</turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<turn>assistant: {% endif %}"
)


def make_tokenizer(path: str | Path, *, vocab_size: int = 384, flavour: str = "teacher"):
    """Train a byte-level BPE on a small corpus and save it as a transformers tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if flavour == "teacher":
        specials, template, eos = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"], CHATML, "<|im_end|>"
    else:
        specials, template, eos = ["</s>", "<turn>", "</turn>", "<pad>"], TURNS, "</s>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token="<pad>", bos_token=None)
    fast.chat_template = template
    path = Path(path)
    fast.save_pretrained(path)
    return fast


def make_model(
    path: str | Path,
    tokenizer,
    *,
    arch: str = "llama",
    hidden: int = 32,
    layers: int = 2,
    tie: bool = True,
    seed: int = 0,
):
    """A random tiny causal LM (llama or qwen2 architecture) saved next to its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    torch.manual_seed(seed)
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    config = cls(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def make_teacher_dir(path: str | Path, **kw) -> Path:
    tok = make_tokenizer(path, flavour="teacher", vocab_size=384)
    make_model(path, tok, arch="qwen2", **kw)
    return Path(path)


def make_student_dir(path: str | Path, **kw) -> Path:
    tok = make_tokenizer(path, flavour="student", vocab_size=320)
    make_model(path, tok, arch="llama", **kw)
    return Path(path)


def teacher_settings(teacher_dir: str | Path, **overrides) -> dict:
    """The recipe's teacher section for the tiny hf teacher on CPU (short greedy completions)."""
    return {
        "backend": "hf",
        "model": str(teacher_dir),
        "device": "cpu",
        "max_new_tokens": 8,
        "batch_size": 4,
        "top_logprobs": 4,
        **overrides,
    }
