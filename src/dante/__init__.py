"""dante: cross-tokenizer generative knowledge distillation (teacher text -> cache -> student).

Stages: ``dante.teacher`` / ``dante.cache`` (stage 1-2), ``dante.train`` (3-5),
``dante.eval`` and ``dante.report`` (6). ``dante.config`` holds the one recipe tree.
"""

__version__ = "0.1.0"
