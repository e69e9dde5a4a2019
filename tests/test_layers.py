"""The package's layers, read from the imports themselves (ast, not running them): each package of
``aes`` imports only the packages below it (``aes.core`` nothing else, ``aes.data`` only core, ...),
no module of ``aes`` takes part in an import circle, and the modules of ``aes.data`` hide no ``aes``
import inside a function (where a circle would go unseen until run time)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aes.ops import stage_deps

ROOT = Path(__file__).resolve().parents[1]


def aes_imports(path: Path) -> list[tuple[str, bool]]:
    return stage_deps.aes_imports(path.relative_to(ROOT), ROOT)


def assert_no_circle(graph: dict[str, set[str]]) -> None:
    """Fails naming the first import circle in ``graph`` ({module: modules it imports})."""
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import circle: {' -> '.join((*path, module))}"
        if module not in done:
            for other in sorted(graph.get(module, ())):
                visit(other, (*path, module))
            done.add(module)

    for module in sorted(graph):
        visit(module, ())


def modules(package: str) -> list[Path]:
    return sorted((ROOT / "aes" / package).glob("*.py"))


# What each package may import besides itself: the layers from the bottom up. The writing features and
# the encoders sit beside the data, not on it; ops (command-line tools, no stage) may use anything.
BELOW = {
    "core": (),
    "data": ("core",),
    "encoders": ("core",),
    "features": ("core",),
    "baseline": ("core", "data", "features"),
    "report": ("core", "data", "features"),
    "finetune": ("core", "data", "encoders", "features", "baseline"),
    "holdout": ("core", "data", "encoders", "features", "baseline", "finetune"),
    "ops": ("core", "data", "encoders", "features", "baseline", "finetune", "report", "holdout"),
}


def test_every_package_has_a_layer():
    assert {p.parent.name for p in (ROOT / "aes").glob("*/__init__.py")} == set(BELOW)


@pytest.mark.parametrize("package,allowed", [(name, tuple(f"aes.{b}" for b in (name, *below))) for name, below in BELOW.items()])
def test_a_layer_imports_nothing_above_it(package, allowed):
    above = {f"{p.relative_to(ROOT)}: {name}" for p in modules(package) for name, _ in aes_imports(p)
             if not any(name == a or name.startswith(a + ".") for a in allowed)}
    assert not above, f"aes/{package} imports from above it: {sorted(above)}"


def test_no_aes_import_hides_inside_a_function():
    hidden = {f"{p.relative_to(ROOT)}: {name}" for p in modules("data") for name, top in aes_imports(p) if not top}
    assert not hidden, f"imports inside functions: {sorted(hidden)}"


def test_the_data_modules_import_one_another_without_a_circle():
    graph = {f"aes.data.{p.stem}": {n for n, _ in aes_imports(p) if n.startswith("aes.data.")} for p in modules("data")}
    assert_no_circle(graph)
    # the one tuple of datasets is the registry's: the dataset modules do not import it
    assert all("aes.data.registry" not in graph[f"aes.data.{name}"] for name in ("ellipse", "asap", "dataset", "protocols"))


def test_no_module_of_the_package_is_in_an_import_circle():
    """Module by module over the whole package (``aes.x`` naming a package counts as its ``__init__``)."""
    paths = {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in (ROOT / "aes").rglob("*.py")}
    paths = {name.removesuffix(".__init__"): p for name, p in paths.items()}
    graph = {name: {n for n, _ in aes_imports(p) if n in paths and n != name} for name, p in paths.items()}
    assert_no_circle(graph)
