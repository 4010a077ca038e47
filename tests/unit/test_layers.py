"""The architecture as the imports draw it: every import of mpidecent's own code (at the top of a module,
inside a function or for type checking alike) points to a package of the same or a lower layer, and the
packages import each other without cycles. docs/architecture.md draws these layers."""

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mpidecent"

# Low → high. A package may import its own modules and any package of a lower or the same layer, as
# long as the packages stay acyclic.
LAYERS = [
    {"errors", "params", "rng", "threads", "texttable", "progress", "preemption", "plugins", "machine"},  # foundations
    {"topology", "compression", "coding", "gossip", "learning"},  # pure maths and data, no MPI
    {"comm", "io"},  # MPI: communication patterns, transports; parallel HDF5, readers
    {"algorithms"},  # declarations (catalog) and one file of update equations per family
    {"config"},  # job file → Job, against the declarations
    {"plan", "footprint"},  # Job × ranks → graph schedule, weights, checks (footprint: memory per rank)
    {"runner"},  # one run: build, step loop, metrics, checkpoints
    {"report", "bench"},  # reading results; measuring
    {"cli", "__main__", "api"},  # the commands; mpidecent.train
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def _component(module: str) -> str | None:
    """``mpidecent.comm.neighbor`` → ``comm``; the package root → None (it only holds the version)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "mpidecent" and len(parts) > 1 else None


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names}  # `from pkg import module`
    return {name for name in found if name.split(".")[0] == "mpidecent"}


def _edges() -> dict[str, set[tuple[str, str]]]:
    """component → {(imported component, where)}."""
    edges = defaultdict(set)
    known = set(LEVEL)
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _component(_module_name(path))
        for target in _imports(path):
            component = _component(target)
            if source and component and component != source and component in known:
                edges[source].add((component, f"{_module_name(path)} imports {target}"))
    return edges


def test_every_package_has_a_layer():
    packages = {_component(_module_name(p)) for p in PACKAGE.rglob("*.py")} - {None}
    assert packages <= set(LEVEL), f"give these a layer: {sorted(packages - set(LEVEL))}"


def test_imports_point_down():
    upward = [where for source, targets in _edges().items() for target, where in targets
              if LEVEL[target] > LEVEL[source]]
    assert not upward, "\n".join(sorted(upward))


def test_packages_import_each_other_without_cycles():
    graph = {source: {target for target, _ in targets} for source, targets in _edges().items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [])
            assert cycle is None, " → ".join(cycle)


def test_the_pure_layers_never_import_mpi4py_torch_or_matplotlib():
    """topology, compression, coding, gossip, learning's declarations and the algorithm catalog load in a
    bare process (torch only where a model is built or run: learning/flat.py, networks.py, problems.py,
    trial.py)."""
    heavy = {"mpi4py", "matplotlib"}
    torch_allowed = {"mpidecent.learning.flat", "mpidecent.learning.networks", "mpidecent.learning.problems",
                     "mpidecent.learning.trial"}
    offending = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if LEVEL.get(_component(module), 99) > 1 and module != "mpidecent.algorithms.catalog":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        bad = names & (heavy | ({"torch"} if module not in torch_allowed else set()))
        if bad:
            offending.append(f"{module}: {sorted(bad)}")
    assert not offending, offending
