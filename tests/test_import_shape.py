"""The package keeps its shape: no import cycle anywhere in src/dante, no stage importing a
later stage (prompts and the shared modules -> teacher -> cache -> train -> eval -> report; the
CLI, the pipeline and the planner sit above them all), and inside ``train`` no floor importing a
higher one (the student as a model and the alignment -> the objective's terms -> the batch
sources -> the loop, its state and checkpoints). Imports inside functions count too: a lazy
import still ties the two modules together."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "dante"

# Rank of each part of the package: a module may import only modules of its own rank or lower.
BASE = 0
STAGES = {"teacher": 1, "cache": 2, "train": 3, "eval": 4, "report": 5}
TOP = {
    "dante.cli",
    "dante.pipeline",
    "dante.plan",
    "dante.audit",
}  # orchestrators and pre-flight: may import every stage


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


# Floors inside dante.train: a module may import only modules of its own floor or lower.
TRAIN_FLOORS = {"model": 0, "align": 0, "state": 0, "objective": 1, "sources": 2}
TRAIN_TOP = 3  # loop, checkpoint, metrics, the package itself


def rank(module: str) -> int:
    if module in TOP:
        return 99
    parts = module.split(".")
    return STAGES.get(parts[1], BASE) if len(parts) > 1 else BASE


def train_floor(module: str) -> int | None:
    parts = module.split(".")
    if parts[:2] != ["dante", "train"]:
        return None
    return TRAIN_FLOORS.get(parts[2], TRAIN_TOP) if len(parts) > 2 else TRAIN_TOP


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The dante modules ``path`` imports (at module level or inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from dante.train.objective import losses` imports the submodule; `from dante.x import f`, module x
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # dante.config.schema.Recipe -> dante.config.schema
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: imports_of(path, modules) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_the_imports_it_must():
    graph = import_graph()
    assert "dante.teacher.base" in graph["dante.teacher.hf"]
    assert "dante.teacher.hf" in graph["dante.teacher"]  # lazy, inside make_teacher
    assert "dante.train.objective.terms" in graph["dante.train.loop"]
    assert "dante.train.objective.losses" in graph["dante.train.sources.on_policy"]
    assert "dante.train.sources.base" in graph["dante.train.sources.records"]
    assert "dante.config.schema" in graph["dante.config.loader"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_stage_imports_a_later_stage():
    backwards = [
        f"{m} (rank {rank(m)}) imports {t} (rank {rank(t)})"
        for m, targets in sorted(import_graph().items())
        for t in sorted(targets)
        if rank(t) > rank(m)
    ]
    assert not backwards, "\n".join(backwards)


def test_no_train_floor_imports_a_higher_one():
    """model/align/state (0) -> objective (1) -> sources (2) -> loop, checkpoint, metrics (3)."""
    upward = [
        f"{m} (floor {train_floor(m)}) imports {t} (floor {train_floor(t)})"
        for m, targets in sorted(import_graph().items())
        if train_floor(m) is not None
        for t in sorted(targets)
        if train_floor(t) is not None and train_floor(t) > train_floor(m)
    ]
    assert not upward, "\n".join(upward)


def test_each_train_module_sits_on_a_known_floor():
    """A new file under train/ lands in a sub-package (or is named here), not in a flat room again."""
    loose = sorted(
        m
        for m in import_graph()
        if m.startswith("dante.train.") and m.count(".") == 2 and m.split(".")[2] not in TRAIN_FLOORS
    )
    assert loose == ["dante.train.checkpoint", "dante.train.loop", "dante.train.metrics"]


@pytest.mark.parametrize(
    "graph, cycle",
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"a2"}, "a2": {"a2"}}, ["a2", "a2"]),
    ],
)
def test_find_cycle_on_known_graphs(graph, cycle):
    assert find_cycle(graph) == cycle
