"""``teacher.dispatch: ray`` (stage 2 past one machine): the prompts stream to a pool of teacher
replicas, Ray actors each holding one dante ``Teacher`` of any backend, and the completions
stream back to the one exactly-once ``CacheWriter`` of ``dante.cache.run``.

Why one writer on the driver rather than one per replica: the writer appends and fsyncs JSON
lines, tens of thousands of records per second on one core (BENCHMARKS.md), far above what any
teacher pool produces, and one writer keeps one manifest, one shard sequence and one set of
written ids, so "exactly once" needs no merge and no coordination. The driver skips the ids
already written before it dispatches anything (``run_cache`` hands only the pending prompts).

Faults (tested with real kills, tests/reliability/test_cache_ray.py):
- a replica that dies (killed, OOM, node lost): its batches in flight come back as errors and
  go to the front of the queue for the other replicas; a new replica replaces it, at most
  ``teacher.ray.max_restarts`` times in all. A batch that failed once is retried whole (a lost
  node is not the prompts' fault); one that fails again is split in halves, so a prompt that
  breaks its replica is isolated in log2(batch) steps;
- a prompt that keeps failing on its own (``max_prompt_attempts``) is reported by id: the run
  stops (``on_prompt_failure: stop``, after the batches in flight are written) or goes on
  without it (``skip``: the manifest lists it in ``failed_prompts``); it is never written as an
  empty record;
- the driver killed: the cache on disk is the local engine's (complete records only), and the
  next run resumes it exactly once.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dante.config import RayConfig, TeacherConfig
from dante.errors import DanteError
from dante.prompts import Prompt
from dante.teacher import Completion, Teacher, engine_gpus, make_teacher

TeacherFactory = Callable[[TeacherConfig], Teacher]


def replica_resources(cfg: TeacherConfig, ray_cfg: RayConfig, cluster_gpus: float = 0.0) -> dict[str, float]:
    """Ray resources of one replica: GPUs = tensor × pipeline parallel size for vLLM (one
    engine per replica: vLLM's own data-parallel mode is not used), one for hf when the cluster
    has GPUs and ``teacher.hf.device`` is not cpu, none for an HTTP teacher; CPUs as set.
    ``teacher.ray.gpus_per_replica`` overrides the GPU count."""
    gpus = ray_cfg.gpus_per_replica
    if gpus is None:
        gpus = engine_gpus(cfg, cluster_gpus)
    return {"num_cpus": ray_cfg.cpus_per_replica, "num_gpus": gpus}


class _Replica:
    """The actor: one Teacher built in the worker process (the model loads there)."""

    def __init__(self, cfg: TeacherConfig, factory: TeacherFactory | None) -> None:
        self.teacher = factory(cfg) if factory is not None else make_teacher(cfg)

    def ready(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "name": self.teacher.name, **self.teacher.device_info()}

    def complete(self, prompts: Sequence[Prompt]) -> list[Completion]:
        return self.teacher.complete(prompts)

    def close(self) -> None:
        self.teacher.close()


@dataclass
class _Batch:
    prompts: list[Prompt]
    failures: int = 0


@dataclass
class _Handle:
    actor: Any
    index: int
    ready_ref: Any = None
    info: dict[str, Any] | None = None
    inflight: int = 0
    alive: bool = True


@dataclass
class PoolStats:
    """What the pool did, for the manifest and the summary."""

    replicas_started: int = 0
    restarts: int = 0
    retried_batches: int = 0
    split_batches: int = 0
    failed_prompts: list[dict[str, str]] = field(default_factory=list)


class RayTeacherPool(Teacher):
    """A Teacher whose ``iter_completions`` runs on Ray replicas (see the module docstring).

    ``factory`` builds each replica's teacher from the TeacherConfig (default ``make_teacher``);
    tests and benchmarks pass their own (a deliberately failing or instant teacher).
    """

    def __init__(self, cfg: TeacherConfig, ray_cfg: RayConfig, factory: TeacherFactory | None = None) -> None:
        super().__init__(cfg)
        try:
            import ray
        except ImportError:
            raise DanteError(
                "teacher.dispatch: ray needs Ray", field="teacher.dispatch", hint="pip install 'dante-distill[ray]'"
            ) from None
        self.ray, self.ray_cfg, self.factory = ray, ray_cfg, factory
        self.stats = PoolStats()
        self.name = f"{cfg.backend}:{cfg.model}"
        self._started_ray = False
        if not ray.is_initialized():
            address = ray_cfg.address or os.environ.get("RAY_ADDRESS")
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "warning"}
            if address:
                kwargs["address"] = address
            elif ray_cfg.num_cpus:
                kwargs["num_cpus"] = ray_cfg.num_cpus
            ray.init(**kwargs)
            self._started_ray = True
        gpus = float(ray.cluster_resources().get("GPU", 0.0))
        self._actor_cls = ray.remote(**replica_resources(cfg, ray_cfg, gpus))(_Replica)
        self.handles: list[_Handle] = []
        try:
            self._start_replicas(ray_cfg.replicas)
            self._await_ready(ray_cfg.min_replicas or ray_cfg.replicas)  # min_replicas <= replicas (validated)
        except BaseException:
            self.close()
            raise

    # -- replicas ---------------------------------------------------------------------------

    def _start_replicas(self, n: int) -> None:
        for _ in range(n):
            actor = self._actor_cls.remote(self.cfg, self.factory)
            self.handles.append(_Handle(actor, len(self.handles), actor.ready.remote()))
            self.stats.replicas_started += 1

    def _await_ready(self, want: int) -> None:
        """Block until ``want`` replicas have loaded their teacher (or the timeout says why not)."""
        deadline = time.monotonic() + self.ray_cfg.start_timeout_s
        while sum(h.info is not None for h in self.handles if h.alive) < want:
            pending = [h.ready_ref for h in self.handles if h.alive and h.info is None]
            if not pending:
                raise DanteError(
                    f"only {sum(h.info is not None for h in self.handles if h.alive)} of {want} teacher replicas "
                    "started",
                    field="teacher.ray.replicas",
                    hint="see the Ray worker logs (/tmp/ray/session_latest/logs) for why the teacher failed to load",
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise DanteError(
                    f"{want} teacher replicas were not ready within {self.ray_cfg.start_timeout_s:.0f} s",
                    field="teacher.ray.start_timeout_s",
                    hint="the cluster may lack the resources (teacher.ray.cpus_per_replica / gpus_per_replica)",
                )
            done, _ = self.ray.wait(pending, num_returns=1, timeout=min(left, 5.0))
            for ref in done:
                self._on_ready(ref)

    def _on_ready(self, ref) -> None:
        handle = next(h for h in self.handles if h.ready_ref == ref)
        handle.ready_ref = None
        try:
            handle.info = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            self._replace(handle, f"replica {handle.index} failed to start: {_short(exc)}")

    def _replace(self, handle: _Handle, why: str) -> None:
        """A dead replica: start another one while the restart budget lasts."""
        handle.alive = False
        with contextlib.suppress(Exception):  # already gone
            self.ray.kill(handle.actor, no_restart=True)
        if self.stats.restarts >= self.ray_cfg.max_restarts:
            if not any(h.alive for h in self.handles):
                raise DanteError(
                    f"every teacher replica died and the restart budget is spent ({why})",
                    field="teacher.ray.max_restarts",
                    hint="the records written so far are kept; re-run `dante cache` to resume",
                )
            return
        self.stats.restarts += 1
        self._start_replicas(1)

    # -- the stream ---------------------------------------------------------------------------

    def iter_completions(self, prompts: Sequence[Prompt]) -> Iterator[Completion]:
        """Completions of ``prompts`` as replicas finish them (any order), each prompt at most once;
        a prompt that keeps failing is skipped (listed in ``stats.failed_prompts``) or stops the run."""
        ray = self.ray
        size = max(1, self.cfg.batch_size)
        queue = deque(_Batch(list(prompts[i : i + size])) for i in range(0, len(prompts), size))
        inflight: dict[Any, tuple[_Handle, _Batch]] = {}
        stop: DanteError | None = None
        yielded: set[str] = set()
        while (queue and stop is None) or inflight:
            if stop is None:
                self._dispatch(queue, inflight)
            waiting = list(inflight) + [h.ready_ref for h in self.handles if h.alive and h.ready_ref is not None]
            if not waiting:
                raise DanteError(
                    "no teacher replica is alive to take the remaining prompts",
                    field="teacher.ray.max_restarts",
                    hint="the records written so far are kept; re-run `dante cache` to resume",
                )
            done, _ = ray.wait(waiting, num_returns=1, timeout=10.0)
            for ref in done:
                if ref not in inflight:
                    self._on_ready(ref)
                    continue
                handle, batch = inflight.pop(ref)
                handle.inflight -= 1
                try:
                    completions = ray.get(ref)
                except ray.exceptions.RayActorError as exc:  # the replica died with the batch
                    if handle.alive:
                        self._replace(handle, f"replica {handle.index} died: {_short(exc)}")
                    stop = stop or self._failed(batch, queue, exc, died=True)
                    continue
                except ray.exceptions.RayTaskError as exc:  # the teacher raised on this batch
                    stop = stop or self._failed(batch, queue, exc, died=False)
                    continue
                for c in completions:
                    if c.prompt.id not in yielded:  # one record per prompt, whatever a teacher returns
                        yielded.add(c.prompt.id)
                        yield c
        if stop is not None:
            raise stop

    def _dispatch(self, queue: deque[_Batch], inflight: dict[Any, tuple[_Handle, _Batch]]) -> None:
        """Hand queued batches to ready replicas, at most ``batches_in_flight`` each (backpressure)."""
        cap = self.ray_cfg.batches_in_flight
        for handle in self.handles:
            while queue and handle.alive and handle.info is not None and handle.inflight < cap:
                batch = queue.popleft()
                inflight[handle.actor.complete.remote(batch.prompts)] = (handle, batch)
                handle.inflight += 1

    def _failed(self, batch: _Batch, queue: deque[_Batch], exc: Exception, *, died: bool) -> DanteError | None:
        """Requeue a failed batch: whole the first time a replica died under it, else in halves;
        a prompt alone that failed ``max_prompt_attempts`` times is reported (and stops the run
        with on_prompt_failure: stop)."""
        batch.failures += 1
        cfg = self.ray_cfg
        if len(batch.prompts) == 1:
            if batch.failures < cfg.max_prompt_attempts:
                queue.appendleft(batch)
                self.stats.retried_batches += 1
                return None
            prompt = batch.prompts[0]
            self.stats.failed_prompts.append({"id": prompt.id, "error": _short(exc)})
            if cfg.on_prompt_failure == "stop":
                return DanteError(
                    f"prompt {prompt.id!r} failed {batch.failures} times: {_short(exc)}",
                    field="teacher.ray.on_prompt_failure",
                    hint="the other records are written; fix the prompt, or set teacher.ray.on_prompt_failure=skip",
                )
            return None
        if died and batch.failures == 1:
            queue.appendleft(batch)
            self.stats.retried_batches += 1
            return None
        half = len(batch.prompts) // 2
        queue.appendleft(_Batch(batch.prompts[half:]))
        queue.appendleft(_Batch(batch.prompts[:half]))
        self.stats.split_batches += 1
        return None

    # -- Teacher -------------------------------------------------------------------------------

    def complete(self, prompts: Sequence[Prompt]) -> list[Completion]:
        return list(self.iter_completions(prompts))

    def device_info(self) -> dict[str, Any]:
        """Devices of the pool: the replicas' device type and the sum of their devices."""
        infos = [h.info for h in self.handles if h.info is not None]
        if not infos:
            return {"device_type": "ray", "device_count": None}
        counts = [i.get("device_count") for i in infos]
        return {
            "device_type": infos[0].get("device_type"),
            "device_count": sum(counts) if all(c is not None for c in counts) else None,
        }

    def replica_pids(self) -> list[int]:
        """Process ids of the live, ready replicas (the fault tests kill them)."""
        return [h.info["pid"] for h in self.handles if h.alive and h.info is not None]

    def close(self) -> None:
        for h in self.handles:
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(h.actor, no_restart=True)
        self.handles = []
        if self._started_ray:
            self.ray.shutdown()
            self._started_ray = False


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:300]
