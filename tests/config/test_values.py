"""
Tests for L{phantom_frame.config.values}: control characters, which no file
name or path may hold, are configuration errors rather than crashes.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.config import ConfigError, parse_config
from phantom_frame.config.values import Invalid, check_path, has_control


def errors(data: Dict[str, Any]) -> List[str]:
    """
    @return: the errors L{parse_config} reports for C{data}.
    """
    try:
        parse_config(data, environ={})
    except ConfigError as e:
        return e.errors
    return []


class ControlCharacterTests(SynchronousTestCase):
    """
    File names, prefixes and paths with control characters are refused,
    naming the key.
    """

    def test_hasControl(self) -> None:
        """
        C0 and C1 control characters and DEL count; printable text and
        other non-ASCII text do not.
        """
        for text in ["a\u0000b", "\t", "\n", "x\u001f", "\u007f", "\u0085", "\u009f"]:
            self.assertTrue(has_control(text), repr(text))
        for text in ["plain", "bücher", "/var/cache/pf", " "]:
            self.assertFalse(has_control(text), repr(text))

    def test_paths(self) -> None:
        """
        C{cert_path}, C{key_path}, C{cache_directory}, C{execute_dir} and a
        C{dotenv} file name with a NUL are errors naming the key (opening
        them would raise C{ValueError}).
        """
        self.assertRaises(Invalid, check_path, "/etc/p\u0000f")
        root = {"https_port": 1, "cert_path": "a\u0000", "key_path": "b\u0000"}
        found = errors(dict(root, server={"a": {}}))
        self.assertEqual([e.split(":")[0] for e in found], ["cert_path", "key_path"])
        self.assertTrue(found[0].startswith("cert_path: expected a file name"), found)
        block = {"cache_directory": "/var/cache/p\u0000f", "execute_dir": "/srv/\u0000"}
        found = errors({"server": {"a": block}})
        self.assertEqual(
            [e.split(":")[0] for e in found], ["server.a.cache_directory", "server.a.execute_dir"]
        )
        found = errors({"dotenv": ".e\u0000nv", "server": {"a": {}}})
        self.assertEqual([e.split(":")[0] for e in found], ["dotenv"])

    def test_requestPaths(self) -> None:
        """
        A C{bind_to} prefix or a C{pre_generate_paths} path with a control
        character is an error naming the key.
        """
        found = errors({"server": {"a": {"bind_to": "/a\u0000b"}}})
        self.assertEqual([e.split(":")[0] for e in found], ["server.a.bind_to"])
        found = errors({"server": {"a": {"pre_generate_paths": ["/ok", "/a\u0001"]}}})
        self.assertEqual([e.split(":")[0] for e in found], ["server.a.pre_generate_paths[1]"])
