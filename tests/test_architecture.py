"""The folder layout is the architecture: torch stays in core/engine, the engine never reaches
into the UI, and core/ has no import cycle. Read from the source with ast, nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH_PACKAGES = {"torch", "transformers", "peft", "safetensors", "tokenizers"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def python_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def imports(path: Path, top_level_only: bool) -> set[str]:
    """Dotted names a file imports; with top_level_only, only what runs when it is imported
    (module body, if/try blocks), not imports inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path).rpartition(".")[0] if path.name != "__init__.py" else \
        module_name(path)
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                if not top_level_only:
                    visit(node.body)
            elif isinstance(node, ast.ClassDef):
                visit(node.body)
            elif isinstance(node, ast.If) and _is_type_checking(node):
                continue  # annotations only, never executed
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, []) or [])

    visit(tree.body)
    return found


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def test_only_the_engine_imports_torch_at_module_level() -> None:
    offenders = []
    for path in python_files("core", "ui", "pages") + [ROOT / "app.py"]:
        if (ROOT / "core" / "engine") in path.parents:
            continue
        heavy = {n for n in imports(path, top_level_only=True)
                 if n.split(".")[0] in TORCH_PACKAGES}
        if heavy:
            offenders.append(f"{path.relative_to(ROOT)}: {sorted(heavy)}")
    assert not offenders, "torch-family imports outside core/engine: " + "; ".join(offenders)


def test_engine_never_imports_the_ui() -> None:
    offenders = [f"{p.relative_to(ROOT)}: {sorted(n for n in imports(p, False) if _is_ui(n))}"
                 for p in python_files("core") if any(_is_ui(n) for n in imports(p, False))]
    assert not offenders, "core/ imports the UI: " + "; ".join(offenders)


def _is_ui(name: str) -> bool:
    return name.split(".")[0] in {"ui", "pages", "app", "streamlit"}


def core_graph() -> dict[str, set[str]]:
    """core's modules and the core modules each imports, lazy imports included: a cycle
    hidden inside a function is still a cycle."""
    files = {module_name(p): p for p in python_files("core")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for imported in imports(path, top_level_only=False):
            # `from core.runtime import slots` names core.runtime.slots; `from core.x import f`
            # names core.x.f, which resolves to core.x
            while imported and imported not in files:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not _is_package_of(imported, name):
                targets.add(imported)
        graph[name] = targets
    return graph


def _is_package_of(package: str, module: str) -> bool:
    return module.startswith(package + ".")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_core_has_no_import_cycle() -> None:
    cycle = find_cycle(core_graph())
    assert cycle is None, "import cycle in core/: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_import_reader_tells_module_level_from_lazy(tmp_path: Path) -> None:
    path = ROOT / "core" / "engine" / "train.py"
    assert "torch" in imports(path, top_level_only=True)
    runner = ROOT / "core" / "runtime" / "runner.py"
    assert "core.engine.train.train" in imports(runner, top_level_only=False)
    assert "core.engine.train.train" not in imports(runner, top_level_only=True)
