"""The package's shape: imports run one way, and the torch-free modules stay torch-free.

The import graph is read from the source with `ast`: every import statement of every module,
function-level ones included (those only defer a dependency, they do not remove it), except under
`if TYPE_CHECKING:` (never run). `from minibert.data import X` counts as an import of the module
that defines X, as the lazy `_LAZY` table of the package's __init__ says.

One way means no cycle, and no back edge along the data flow (FLOW): no module imports one of a
later stage, as the tokenizer once imported its padding from the collators.

    .venv/bin/python tests/test_imports.py     # prints the graph, and any cycle or back edge
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minibert"
TORCH_FREE = ["minibert", "minibert.config", "minibert.files", "minibert.lock", "minibert.plots", "minibert.data",
              "minibert.data.readers", "minibert.data.features", "minibert.data.tagging", "minibert.run_folder",
              "minibert.train_config"]

# file -> reader -> tokenizer -> features -> collator -> model -> loss -> optim, one entry per stage. A
# module may import its own stage and earlier ones. The loss is the model's (forward returns it);
# checkpoint.py reads the folders models are made from. Modules in no stage (tasks, trainer, metrics,
# pipelines, the CLI, ...) put the stages together: they may import any stage, and no stage imports them.
FLOW = [
    {"minibert.files"},
    {"minibert.data.readers"},
    {"minibert.tokenizer"},
    {"minibert.data.features"},
    {"minibert.data.collators", "minibert.data.sampler"},
    {"minibert.checkpoint", "minibert.kernels", "minibert.model"},
    {"minibert.optim"},
]
# What every stage may import: these import nothing of minibert but the first stage and each other.
LEAVES = {"minibert._lazy", "minibert.config", "minibert.data.padding"}
DATA_STAGES = set().union(*FLOW[1:5]) | {"minibert.data.padding"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lazy_table(tree: ast.Module) -> dict[str, str]:
    """A package __init__'s `_LAZY = {name: submodule}`."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under `if TYPE_CHECKING:`."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skipped]


def import_graph() -> dict[str, set[str]]:
    """minibert module -> the minibert modules it imports."""
    paths = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    trees = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in paths.items()}
    lazy = {name: {k: f"{name}.{v}" for k, v in lazy_table(trees[name]).items()}
            for name, path in paths.items() if path.name == "__init__.py"}
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in runtime_imports(trees[name]):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
                continue
            base = node.module or ""
            if node.level:  # relative: `from ..files import x` in minibert.data.readers -> minibert.files
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for a in node.names:
                if f"{base}.{a.name}" in paths:  # a submodule
                    targets.add(f"{base}.{a.name}")
                else:
                    targets.add(lazy.get(base, {}).get(a.name, base))
        graph[name] = {t for t in targets if t in paths and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A list of modules that import each other in a circle, or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def back_edges(graph: dict[str, set[str]], flow: list[set[str]] = FLOW,
               leaves: set[str] = LEAVES) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a stage's module, or a leaf, imports a later stage's module or
    one in no stage. A leaf counts as the first stage, whichever side of the import it is on."""
    stage = {m: i for i, modules in enumerate(flow) for m in modules} | dict.fromkeys(leaves, 0)
    return sorted((a, b) for a in graph if a in stage for b in graph[a] if stage.get(b, len(flow)) > stage[a])


def test_no_import_cycle():
    graph = import_graph()
    # The reader sees the imports that exist (function-level ones too): a graph of nothing has no cycle either.
    assert "minibert.checkpoint" in graph["minibert.model"]
    assert "minibert.data.padding" in graph["minibert.tokenizer"]
    assert "minibert.tasks" in graph["minibert.cli.train"]  # imported inside train_parser()
    assert "minibert.data.sampler" in graph["minibert.trainer"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_imports_follow_the_data_flow():
    graph = import_graph()
    assert set().union(*FLOW, LEAVES) <= set(graph), "a module named in FLOW or LEAVES is gone: update them"
    assert back_edges(graph) == [], "imports against the data flow: " + ", ".join(
        f"{a} -> {b}" for a, b in back_edges(graph))


def test_the_model_knows_no_data_stage():
    """The model takes tensors: neither it nor what it imports reads files, tokenizes or collates."""
    graph = import_graph()
    for module in FLOW[5]:
        assert not graph_closure(graph, module) & DATA_STAGES, module


def test_the_cycle_and_back_edge_finders_find_them():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    flow, leaves = [{"a"}, {"b"}, {"c"}], {"leaf"}
    graph = {"a": {"leaf"}, "b": {"a", "leaf"}, "c": {"a", "b"}, "leaf": set(), "loop": {"c"}}
    assert back_edges(graph, flow, leaves) == []
    assert back_edges({**graph, "a": {"c"}, "leaf": {"b"}}, flow, leaves) == [("a", "c"), ("leaf", "b")]
    assert back_edges({**graph, "c": {"loop"}}, flow, leaves) == [("c", "loop")]
    # the edge this test was written against: the tokenizer padding with the collators' function
    graph = import_graph()
    graph["minibert.tokenizer"] = graph["minibert.tokenizer"] | {"minibert.data.collators"}
    assert ("minibert.tokenizer", "minibert.data.collators") in back_edges(graph)


def test_checkpoint_code_does_not_know_the_model_classes():
    assert "minibert.model" not in graph_closure(import_graph(), "minibert.checkpoint")


def graph_closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


@pytest.mark.slow  # starts an interpreter
def test_config_and_readers_import_no_torch():
    code = f"import sys; import {', '.join(TORCH_FREE)}; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False", "importing a torch-free module pulled in torch"


def test_lazy_names_resolve():
    import minibert
    import minibert.data

    for package in (minibert, minibert.data):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"


def test_nothing_asks_a_model_what_task_it_is():
    """The task object knows (tasks/); probing a model for a head is what the Task seam replaced."""
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "hasattr(model" not in text and "hasattr(self.model" not in text, path


if __name__ == "__main__":
    graph = import_graph()
    for name in sorted(graph):
        print(f"{name} -> {', '.join(sorted(graph[name])) or '-'}")
    cycle = find_cycle(graph)
    print("cycle: " + " -> ".join(cycle) if cycle else f"no import cycle among {len(graph)} modules")
    edges = back_edges(graph)
    print("back edges: " + ", ".join(f"{a} -> {b}" for a, b in edges) if edges else "no back edge")
