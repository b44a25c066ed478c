"""
Reading C{.env} files.

L{parse_dotenv} turns the text of a C{.env} file into variables, the way
the configuration's C{dotenv} key loads them: C{KEY=VALUE} lines, optionally
prefixed by C{export }, with unquoted, single-quoted or double-quoted values.
"""

from __future__ import annotations

import re
from typing import Dict, List, Tuple

from phantom_frame.config.values import show

__all__ = ["parse_dotenv"]

_DOTENV_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)\Z")
_DOTENV_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def _after_quote(rest: str) -> None:
    """
    @param rest: what follows a quoted value's closing quote.
    @raise ValueError: unless it is blank or a comment.
    """
    if rest.strip() and not rest.strip().startswith("#"):
        raise ValueError("unexpected text after the closing quote")


def _dotenv_value(raw: str) -> str:
    """
    @param raw: everything after the C{=} of a C{.env} line.
    @return: the value: unquoted and trimmed up to a C{" #"} comment,
        single-quoted (literal) or double-quoted (with C{\\n}, C{\\"}, C{\\\\}
        escapes).
    @raise ValueError: when a quote is not closed, or text follows it.
    """
    value = raw.lstrip()
    if value.startswith('"'):
        out: List[str] = []
        index = 1
        while index < len(value):
            char = value[index]
            if char == "\\" and index + 1 < len(value):
                following = value[index + 1]
                out.append(_DOTENV_ESCAPES.get(following, "\\" + following))
                index += 2
                continue
            if char == '"':
                _after_quote(value[index + 1 :])
                return "".join(out)
            out.append(char)
            index += 1
        raise ValueError("unterminated double-quoted value")
    if value.startswith("'"):
        end = value.find("'", 1)
        if end < 0:
            raise ValueError("unterminated single-quoted value")
        _after_quote(value[end + 1 :])
        return value[1:end]
    comment = re.search(r"\s#", raw)
    if comment is not None:
        raw = raw[: comment.start()]
    return raw.strip()


def parse_dotenv(text: str, filename: str) -> Tuple[Dict[str, str], List[str]]:
    """
    Parse the contents of a C{.env} file.

    Lines are C{KEY=VALUE}, optionally prefixed by C{export }; blank lines
    and lines starting with C{#} are skipped. A later line overrides an
    earlier one for the same key.

    @param text: the file's contents.
    @param filename: the file's name, for error messages.
    @return: the variables, and one error message (C{"FILE:LINE: ..."}) per
        malformed line.
    """
    values: Dict[str, str] = {}
    errors: List[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _DOTENV_LINE.match(stripped)
        if match is None:
            errors.append(
                f"{filename}:{number}: expected KEY=VALUE, got {show(stripped)}"
            )
            continue
        try:
            values[match.group(1)] = _dotenv_value(match.group(2))
        except ValueError as e:
            errors.append(f"{filename}:{number}: {e}")
    return values, errors
