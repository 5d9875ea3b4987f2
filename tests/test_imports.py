"""The package's import graph has no cycle, and light modules stay light."""

import ast
import subprocess
import sys
from pathlib import Path

import diffattr

ROOT = Path(diffattr.__file__).parent


def module_graph() -> dict[str, set[str]]:
    """Module -> the diffattr modules it imports (top level or inside functions)."""
    files = {}
    for f in ROOT.rglob("*.py"):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = f

    def resolve(target: str) -> str | None:
        while target and target not in files:
            target = target.rpartition(".")[0]
        return target or None

    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, f in files.items():
        package = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                if t.split(".")[0] != "diffattr":
                    continue
                r = resolve(t)
                # a package importing its own submodules, or a module its parent package,
                # is how Python packages work, not a cycle between concerns
                if r and r != mod and not mod.startswith(r + ".") and not r.startswith(mod + "."):
                    graph[mod].add(r)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycle_detector_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_package_has_no_import_cycle():
    found = cycles(module_graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_settings_and_config_do_not_import_torch():
    """The run plan is validated before torch (or diffusers) is imported."""
    code = (
        "import sys; from diffattr.config import build_config; build_config(None, 'quick'); "
        "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""


#: The floors of the package, bottom first: a module imports only from its own package or
#: from floors at or below its own. ``*.settings`` modules (pydantic only) form a floor of
#: their own, so that a run's whole configuration validates before torch loads.
FLOORS = [
    {"errors", "settings", "fileio", "torchutils", "lazy", "registry", "images", "store"},
    {"<settings>"},
    {"data", "diffusion", "coalitions"},
    {"estimators", "sparsify", "behaviors"},
    {"baselines"},
    {"families"},
    {"counterfactual"},
    {"config"},
    {"runner"},
    {"evaluate", "report"},
    {"commands", "given", "api", "results", "cli", "<root>"},
]
#: Imports against the floors, each with the reason it is there.
ALLOWED_UPWARD = {
    ("diffattr.families.settings", "diffattr.diffusion.architectures"): (
        "the architecture names: a constant table, no torch"
    ),
    ("diffattr.families.settings", "diffattr.diffusion.checkpoint"): (
        "read_meta, called only when a model directory's family is looked up"
    ),
}


def _floor(module: str) -> int:
    parts = module.split(".")[1:]
    if not parts:
        return len(FLOORS) - 1
    if len(parts) >= 2 and parts[-1] == "settings":
        return 1
    name = parts[0] if parts[0] != "__init__" else "<root>"
    for i, members in enumerate(FLOORS):
        if name in members:
            return i
    raise AssertionError(f"{module} is on no floor: add its package to FLOORS")


def _imports_outside_type_checking(tree: ast.AST):
    """(line, module) of every diffattr import, except under ``if TYPE_CHECKING:``."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skip |= {id(n) for b in node.body for n in ast.walk(b)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("diffattr"):
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("diffattr"):
                    yield node.lineno, a.name


def test_imports_follow_the_floors():
    """No module imports from a floor above its own (type-only imports aside), except the
    listed ones; a new package must be given a floor."""
    upward = []
    for f in sorted(ROOT.rglob("*.py")):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = ".".join(module.split(".")[:2])
        for line, target in _imports_outside_type_checking(ast.parse(f.read_text())):
            if target.startswith(package + ".") or target == package:
                continue  # within its own package
            if _floor(target) > _floor(module) and (module, target) not in ALLOWED_UPWARD:
                upward.append(f"{module}:{line} imports {target}")
    assert upward == [], "\n".join(upward)
