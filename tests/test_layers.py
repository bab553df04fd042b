"""The package's layers, read from its import graph: the math core imports neither the app nor
the report (nor the data layer), and no module takes part in an import cycle."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "intvae"

CORE = ("intvae.checks", "intvae.likelihoods", "intvae.intervals", "intvae.bounds",
        "intvae.networks", "intvae.noise", "intvae.numerics", "intvae.estimate")
"""The library a user imports into a model of their own."""


def modules(package: Path) -> dict[str, Path]:
    """Module name -> file of every module of ``package``."""
    found = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The intvae modules ``path`` imports anywhere in it (function-level imports included),
    with the packages whose ``__init__`` each import runs."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & known
    return found - {"intvae"}


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the intvae modules it imports, leaving out its own parent packages (Python
    imports those before the module itself, so they never close a cycle through it)."""
    found = modules(package)
    return {name: imports(path, set(found)) - ancestors(name) for name, path in found.items()}


def ancestors(name: str) -> set[str]:
    """``name`` and the packages that contain it."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """An import cycle of ``edges`` (its modules in order, the first repeated at the end), or
    None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for dep in sorted(edges[name]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(edges):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def in_layer(name: str, layer: tuple[str, ...]) -> bool:
    return any(name == top or name.startswith(top + ".") for top in layer)


def test_the_core_imports_only_the_core():
    edges = graph()
    core = [name for name in edges if in_layer(name, CORE)]
    assert len(core) >= 15, core  # the walk found the core's modules
    outside = {name: sorted(d for d in edges[name] if not in_layer(d, CORE)) for name in core}
    assert {name: deps for name, deps in outside.items() if deps} == {}


def test_the_data_layer_imports_no_app_or_report():
    edges = graph()
    for name, deps in edges.items():
        if in_layer(name, ("intvae.data",)):
            assert not [d for d in deps if in_layer(d, ("intvae.app", "intvae.report"))], name


def test_there_is_no_import_cycle():
    assert find_cycle(graph()) is None


def test_the_checker_finds_a_cycle_and_a_core_import(tmp_path):
    """The walk itself: a core module that imports the app, and two modules that import each
    other (one inside a function), are both caught."""
    fake = tmp_path / "intvae"
    (fake / "app").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "app" / "__init__.py").write_text("")
    (fake / "app" / "a.py").write_text("from intvae.app import b\n")
    (fake / "app" / "b.py").write_text("def f():\n    import intvae.app.a\n")
    (fake / "noise.py").write_text("from intvae.app.a import x\n")
    edges = graph(fake)
    assert edges["intvae.noise"] == {"intvae.app", "intvae.app.a"}
    assert find_cycle(edges) == ["intvae.app.a", "intvae.app.b", "intvae.app.a"]
