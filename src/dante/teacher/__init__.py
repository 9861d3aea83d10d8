"""Teacher engines (stage 1): hf (local transformers), vllm (offline engine), openai (HTTP).

All implement ``Teacher`` from ``dante.teacher.base``; ``make_teacher(cfg)`` picks one.
"""
