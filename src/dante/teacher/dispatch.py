"""Where the teacher's requests go (``teacher.dispatch``): for prompts answered as they are sent,
one engine in this process or a pool of Ray replicas of it (``ray_pool``). The Batch API
(``dispatch: batch``, ``dante.teacher.batch``) submits files instead; the cache stage drives it.
"""

from __future__ import annotations

from collections.abc import Callable

from dante.config import TeacherConfig
from dante.teacher import Teacher, make_teacher


def make_engine(cfg: TeacherConfig, factory: Callable[[TeacherConfig], Teacher] | None = None) -> Teacher:
    """The engine of ``teacher.dispatch`` (local or ray): one engine in this process
    (``make_teacher``, or ``factory``), or a pool of Ray replicas of it (``ray_pool``)."""
    if cfg.dispatch == "ray":
        from dante.teacher.ray_pool import RayTeacherPool

        return RayTeacherPool(cfg, cfg.ray, factory)
    return factory(cfg) if factory is not None else make_teacher(cfg)
