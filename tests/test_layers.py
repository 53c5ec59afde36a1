"""The package's layers: every import of gmim's own code goes down (data → masking → model → losses
→ engine → CLI), so that no package needs one above it and none is part of a cycle.

Imports inside functions count: a lazy import couples the packages as much as one at the top."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import gmim

SOURCE = Path(gmim.__file__).parent

#: Each package or top-level module of ``gmim`` and its layer; an import must reach a lower one.
LAYERS = {
    "__init__": 0,  # the version
    "presets": 0,  # YAML files
    "errors": 0,
    "rules": 1,
    "atomic": 1,
    "resources": 1,
    "weights_only": 1,
    "methods": 1,  # names the methods' code by import path, loaded when asked
    "config": 2,
    "swin": 3,
    "data": 3,
    "engine": 4,
    "pretraining": 5,
    "swinssl": 6,  # a second pre-training method: GMIM's data pipeline, encoder and health beneath it
    "segmentation": 5,
    "sample_data": 5,
    "export": 7,
    "cli": 8,
    "__main__": 9,
}


def unit(path: Path) -> str:
    """The package or top-level module that ``path`` belongs to."""
    first = path.relative_to(SOURCE).parts[0]
    return first.removesuffix(".py")


def imported_units(tree: ast.AST) -> list[tuple[str, int]]:
    """(the package or top-level module imported, line) for each import of gmim's own code."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "gmim":
            parts = node.module.split(".")
            names = [parts[1]] if len(parts) > 1 else [alias.name for alias in node.names]
            found += [(name if name in LAYERS else "__init__", node.lineno) for name in names]
        elif isinstance(node, ast.Import):
            found += [(alias.name.split(".")[1], node.lineno) for alias in node.names if alias.name.startswith("gmim.")]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"line {node.lineno}: a relative import; gmim imports by absolute names")
    return found


def import_graph() -> dict[str, dict[str, str]]:
    """{importer: {imported: where}} between the units of :data:`LAYERS`."""
    graph: dict[str, dict[str, str]] = defaultdict(dict)
    for path in sorted(SOURCE.rglob("*.py")):
        importer = unit(path)
        assert importer in LAYERS, f"{path.relative_to(SOURCE)}: a new package or module; give it a layer in LAYERS"
        for imported, line in imported_units(ast.parse(path.read_text(), str(path))):
            if imported != importer:
                graph[importer].setdefault(imported, f"{path.relative_to(SOURCE)}:{line}")
    return graph


def test_every_import_goes_down_a_layer():
    upward = [
        f"{where}: {importer} (layer {LAYERS[importer]}) imports {imported} (layer {LAYERS[imported]})"
        for importer, targets in import_graph().items()
        for imported, where in targets.items()
        if LAYERS[imported] >= LAYERS[importer]
    ]
    assert not upward, "\n".join(upward)


def test_no_package_is_part_of_a_cycle():
    """Implied by the layers; checked on its own so that a failure names the cycle."""
    graph = import_graph()

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, {}):
                if nxt == start:
                    return [*path, start]
                if nxt not in path:
                    stack.append((nxt, [*path, nxt]))
        return None

    cycles = [cycle for node in graph if (cycle := cycle_from(node))]
    assert not cycles, " ; ".join(" → ".join(c) for c in cycles)


def test_the_check_sees_an_upward_import(tmp_path):
    """The walker finds imports at the top, inside functions and of the package itself."""
    tree = ast.parse("from gmim.engine.loop import Trainer\ndef f():\n    import gmim.cli\n    from gmim import __version__\n")
    assert imported_units(tree) == [("engine", 1), ("cli", 3), ("__init__", 4)]
