"""
Tests for the face of L{phantom_frame.config}: what it exports, and that its
modules meet only through public names.
"""

from __future__ import annotations

import ast
import os
from typing import Iterator, Tuple

from twisted.trial.unittest import SynchronousTestCase

import phantom_frame
import phantom_frame.config
from phantom_frame.config import loader

PACKAGE = os.path.dirname(os.path.abspath(phantom_frame.__file__))
CONFIG = os.path.join(PACKAGE, "config")


def imports(path: str) -> Iterator[Tuple[str, str]]:
    """
    @param path: a Python source file.
    @return: the C{(module, name)} of each C{from module import name} in it.
    """
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            for alias in node.names:
                yield node.module, alias.name


def sources(top: str) -> Iterator[str]:
    """
    @param top: a directory.
    @return: the paths of the C{.py} files under it.
    """
    for directory, _, names in os.walk(top):
        for name in sorted(names):
            if name.endswith(".py"):
                yield os.path.join(directory, name)


class FaceTests(SynchronousTestCase):
    """
    C{phantom_frame.config} exports the configuration API and nothing else.
    """

    def test_all(self) -> None:
        """
        C{__all__} lists exactly the public names, and each is the object
        L{phantom_frame.config.loader} defines.
        """
        self.assertEqual(
            sorted(phantom_frame.config.__all__),
            [
                "Config",
                "ConfigError",
                "ServerConfig",
                "load_config",
                "parse_config",
                "parse_size",
            ],
        )
        for name in phantom_frame.config.__all__:
            self.assertIs(getattr(phantom_frame.config, name), getattr(loader, name), name)

    def test_modulesListTheirNames(self) -> None:
        """
        Each module of the package has an C{__all__} naming only public
        objects it has.
        """
        for path in sources(CONFIG):
            name = os.path.splitext(os.path.basename(path))[0]
            if name == "__init__":
                continue
            module = __import__(f"phantom_frame.config.{name}", fromlist=["__all__"])
            self.assertTrue(hasattr(module, "__all__"), name)
            for public in module.__all__:
                self.assertFalse(public.startswith("_"), (name, public))
                self.assertTrue(hasattr(module, public), (name, public))

    def test_noPrivateImports(self) -> None:
        """
        No module of the package imports another module's C{_private} name.
        """
        for path in sources(CONFIG):
            for module, name in imports(path):
                private = name.startswith("_") and not name.startswith("__")
                self.assertFalse(
                    private and module.startswith("phantom_frame"),
                    f"{path}: from {module} import {name}",
                )

    def test_outsideUsesTheFace(self) -> None:
        """
        Modules outside the package import the names of the face from
        C{phantom_frame.config}, not from the modules inside it.
        """
        face = set(phantom_frame.config.__all__)
        for path in sources(PACKAGE):
            if path.startswith(CONFIG + os.sep):
                continue
            for module, name in imports(path):
                inner = module.startswith("phantom_frame.config.")
                self.assertFalse(inner and name in face, f"{path}: from {module} import {name}")
