"""
The package's layers: which package may import which, and no import
cycles between modules.
"""

from __future__ import annotations

import ast
import os
from typing import Dict, Set

from twisted.trial.unittest import SynchronousTestCase

import phantom_frame

ROOT = os.path.dirname(os.path.abspath(phantom_frame.__file__))

#: What each package may import from the others (arrows point down; ops
#: observes; config reads the settings of the layers it configures).
ALLOWED = {
    "cache": {"cache", "_version"},
    "proxy": {"proxy", "cache", "_version"},
    "http": {"http", "proxy", "cache", "_version"},
    "ops": {"ops", "http", "proxy", "cache", "config", "_version"},
    "config": {"config", "proxy", "cache", "http", "_version"},
}


def imports() -> Dict[str, Set[str]]:
    """
    @return: for each module of the package, the package modules it
        imports (at any depth in the module, function bodies included).
    """
    graph: Dict[str, Set[str]] = {}
    for directory, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            module = "phantom_frame." + os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
            module = module[: -len(".__init__")] if module.endswith(".__init__") else module
            targets: Set[str] = set()
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                targets.update(n for n in names if n.startswith("phantom_frame."))
            graph[module] = targets
    return graph


def package(module: str) -> str:
    """
    @return: the first-level package of C{module} (C{"top"} for modules at
        the top of phantom_frame).
    """
    parts = module.split(".")
    if len(parts) == 1:
        return "top"
    if len(parts) == 2:
        return parts[1] if parts[1] in ALLOWED or parts[1] == "_version" else "top"
    return parts[1]


class LayerTests(SynchronousTestCase):
    """
    The package keeps its shape.
    """

    def test_arrows_point_down(self) -> None:
        """
        C{cache} imports nothing above it, C{proxy} only C{cache}, C{http}
        only C{proxy} and C{cache}; nothing below the top imports the top
        modules (C{service}, C{tap}, C{embed}).
        """
        wrong = []
        for module, targets in imports().items():
            source = package(module)
            if source not in ALLOWED:
                continue
            for target in targets:
                if package(target) not in ALLOWED[source]:
                    wrong.append(f"{module} -> {target}")
        self.assertEqual(wrong, [])

    def test_no_cycles(self) -> None:
        """
        No module imports itself through others, even lazily.
        """
        graph = imports()
        modules = set(graph)
        seen: Set[str] = set()
        cycles = []

        def visit(module: str, stack: list) -> None:
            if module in stack:
                cycles.append(" -> ".join(stack[stack.index(module):] + [module]))
                return
            if module in seen:
                return
            seen.add(module)
            for target in sorted(graph.get(module, ())):
                # "from phantom_frame.proxy import status" names a module too.
                if target not in modules:
                    continue
                visit(target, stack + [module])

        for module in sorted(graph):
            visit(module, [])
        self.assertEqual(cycles, [])

    def test_small_modules(self) -> None:
        """
        No module of the package is over 500 lines, and at most eight live
        at its top.
        """
        long = []
        top = []
        for directory, _, files in os.walk(ROOT):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    with open(path, encoding="utf-8") as f:
                        if sum(1 for _ in f) > 500:
                            long.append(os.path.relpath(path, ROOT))
                    if directory == ROOT:
                        top.append(name)
        self.assertEqual(long, [])
        self.assertLessEqual(len(top), 8, top)
