"""
Walking the tables of a configuration file.

L{TableChecker} checks every key of a table against its L{Kind},
replacing C{$env:NAME} references by the variables' text converted to the
key's type, reporting unknown keys (with the closest known spelling) and
collecting every error under its key path.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Dict, Iterable, List, Mapping, Sequence, Set, Union

import attr

from phantom_frame.config.values import Invalid, suggest

__all__ = ["BAD", "ENV_PREFIX", "Kind", "Table", "TableChecker", "Unset", "quote_key"]


@attr.s(auto_attribs=True, frozen=True)
class Kind:
    """
    How a key's value is checked.

    @ivar check: takes a TOML value and returns the converted value, or
        raises L{Invalid}.
    @ivar from_env: turns an environment variable's text into a TOML-like
        value for C{check}, or raises L{Invalid} whose message names the
        expected form (C{"an integer"}).
    """

    check: Callable[[Any], Any]
    from_env: Callable[[str], Any]


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
ENV_PREFIX = "$env:"
"""
The start of a string value that names an environment variable.
"""
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def quote_key(name: str) -> str:
    """
    @return: C{name} as it appears in a key path: bare, or quoted.
    """
    if _BARE_KEY.match(name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@attr.s(auto_attribs=True, frozen=True)
class Unset:
    """
    A C{$env:NAME} reference to a variable that is not set.

    @ivar name: the variable's name.
    """

    name: str


BAD = object()
"""
What L{TableChecker.resolve} returns for a value it reported as invalid.
"""


@attr.s(auto_attribs=True)
class Table:
    """
    The outcome of checking one table.

    @ivar values: the keys whose values are valid, converted.
    @ivar unset: the keys whose C{$env:} variable is not set, with its name.
    @ivar failed: the keys whose values are invalid (already reported).
    """

    values: Dict[str, Any] = attr.ib(factory=dict)
    unset: Dict[str, str] = attr.ib(factory=dict)
    failed: Set[str] = attr.ib(factory=set)

    def present(self, key: str) -> bool:
        """
        @return: whether C{key} was given a value, valid or not.
        """
        return key in self.values or key in self.failed


class TableChecker:
    """
    Checks the tables of a parsed configuration key by key, substituting
    C{$env:} references and collecting every error.
    """

    def __init__(self, environ: Dict[str, str], base_dir: str) -> None:
        """
        @param environ: the variables C{$env:} references see; updated with
            the C{.env} file's.
        @param base_dir: the directory relative paths are resolved against.
        """
        self.environ = environ
        self.base_dir = base_dir
        self.errors: List[str] = []

    def error(self, path: str, message: str) -> None:
        """
        Record an error.

        @param path: the key path.
        @param message: what is wrong and what was expected.
        """
        self.errors.append(f"{path}: {message}")

    def path(self, value: str) -> str:
        """
        @param value: a path from the file, possibly relative or with C{~}.
        @return: it as an absolute path, relative paths taken from the
            configuration file's directory.
        """
        return os.path.abspath(
            os.path.join(self.base_dir, os.path.expanduser(value))
        )

    def env_reference(self, path: str, raw: str) -> Union[str, Unset, object]:
        """
        @param path: the key path.
        @param raw: a string starting with C{$env:}.
        @return: the variable's text, an L{Unset}, or L{BAD} (reported)
            when the reference is malformed.
        """
        name = raw[len(ENV_PREFIX) :]
        if not _ENV_NAME.match(name):
            self.error(
                path,
                f"{raw!r} is not a valid $env:NAME reference (NAME is letters,"
                " digits and _)",
            )
            return BAD
        if name not in self.environ:
            return Unset(name)
        return self.environ[name]

    def resolve(self, path: str, raw: object, kind: Kind) -> Any:
        """
        Check one value, substituting C{$env:} references.

        @param path: the key path.
        @param raw: the value from the file.
        @param kind: how to check it.
        @return: the converted value, an L{Unset}, or L{BAD} after
            reporting an error.
        """
        variable = None
        if isinstance(raw, str) and raw.startswith(ENV_PREFIX):
            text = self.env_reference(path, raw)
            if not isinstance(text, str):
                return text
            variable = raw[len(ENV_PREFIX) :]
            try:
                raw = kind.from_env(text)
            except Invalid as e:
                self.error(path, f"$env:{variable} is {text!r}, expected {e}")
                return BAD
        elif isinstance(raw, list):
            raw = self.resolve_items(path, raw)
            if raw is BAD:
                return BAD
        try:
            return kind.check(raw)
        except Invalid as e:
            suffix = f" (from $env:{variable})" if variable else ""
            for where, message in e.problems:
                self.error(path + where, message + suffix)
            return BAD

    def resolve_items(self, path: str, items: List[Any]) -> Any:
        """
        @param path: the key path of the list.
        @param items: a list from the file.
        @return: the list with C{$env:} items replaced by the variables'
            text, or L{BAD} after reporting an unset or malformed one.
        """
        result = []
        bad = False
        for index, item in enumerate(items):
            if isinstance(item, str) and item.startswith(ENV_PREFIX):
                item_path = f"{path}[{index}]"
                text = self.env_reference(item_path, item)
                if isinstance(text, Unset):
                    self.error(item_path, f"$env:{text.name} is not set")
                    bad = True
                elif text is BAD:
                    bad = True
                else:
                    result.append(text)
            else:
                result.append(item)
        return BAD if bad else result

    def unknown(
        self,
        path: str,
        key: str,
        known: Iterable[str],
        elsewhere: Iterable[str] = (),
        elsewhere_hint: str = "",
    ) -> None:
        """
        Report an unknown key.

        @param path: its key path.
        @param key: the key.
        @param known: the keys accepted here.
        @param elsewhere: keys accepted in another table.
        @param elsewhere_hint: the advice when C{key} is one of those.
        """
        if key in elsewhere:
            self.error(path, f"unknown key; {key} {elsewhere_hint}")
            return
        close = suggest(key, known)
        if close is None:
            self.error(path, "unknown key")
        else:
            self.error(path, f"unknown key; did you mean {close}?")

    def table(
        self,
        prefix: str,
        table: Mapping[str, Any],
        kinds: Mapping[str, Kind],
        handled: Sequence[str] = (),
        elsewhere: Iterable[str] = (),
        elsewhere_hint: str = "",
    ) -> Table:
        """
        Check every key of a table.

        @param prefix: the key path of the table, with a trailing dot, or
            C{""} for the root.
        @param table: the table.
        @param kinds: the accepted keys and how to check them.
        @param handled: keys accepted here but checked by the caller.
        @param elsewhere: see L{unknown}.
        @param elsewhere_hint: see L{unknown}.
        @return: the outcome.
        """
        result = Table()
        known = list(kinds) + list(handled)
        for key, raw in table.items():
            path = prefix + quote_key(key)
            if key in handled:
                continue
            kind = kinds.get(key)
            if kind is None:
                self.unknown(path, key, known, elsewhere, elsewhere_hint)
                continue
            value = self.resolve(path, raw, kind)
            if isinstance(value, Unset):
                result.unset[key] = value.name
            elif value is BAD:
                result.failed.add(key)
            else:
                result.values[key] = value
        return result
