"""Batch sources (stage 4): what a training step draws its micro-batches from. Cached teacher
records (``records``: rendering in ``data``, order in ``curriculum``, token-level targets in
``kd_data``) and the student's own samples scored by the teacher (``on_policy``); each yields
micro-batches of one kind through ``base.BatchSource``."""
