"""
Checking single configuration values.

Each C{check_*} function takes a value as C{tomllib} returns it and returns
it converted, or raises L{Invalid} saying what was expected; the factories
(L{seconds_check}, L{integer_check}, L{choice_check}, L{list_check}) make
such checks. Each C{env_*} function turns the text of an
environment variable named by a C{$env:NAME} reference into a TOML-like
value for a check (sizes are in L{phantom_frame.config.sizes}); L{show}
and L{suggest} phrase error messages.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

from phantom_frame.cache.patterns import PathPattern, PatternError

__all__ = [
    "Invalid",
    "check_bind_to",
    "check_bool",
    "check_dotenv",
    "check_path",
    "check_port",
    "check_string",
    "check_token",
    "check_workers",
    "choice_check",
    "env_bool",
    "env_dotenv",
    "env_float",
    "env_int",
    "env_list",
    "env_text",
    "env_workers",
    "has_control",
    "integer_check",
    "is_path",
    "is_pattern",
    "list_check",
    "seconds_check",
    "show",
    "string_check",
    "suggest",
]


class Invalid(Exception):
    """
    A value is not of the expected form.

    @ivar problems: C{(where, message)} pairs; C{where} is appended to the
        key path (C{"[2]"} for the third item of a list), C{message} says what
        was expected.
    """

    def __init__(self, message: str, where: str = "") -> None:
        """
        @param message: what was expected, and what was found.
        @param where: appended to the key path; C{""} for the value itself.
        """
        super().__init__(message)
        self.problems: List[Tuple[str, str]] = [(where, message)]

    @classmethod
    def several(cls, problems: Sequence[Tuple[str, str]]) -> Invalid:
        """
        @param problems: C{(where, message)} pairs, at least one.
        @return: an error carrying them all.
        """
        error = cls(problems[0][1], problems[0][0])
        error.problems = list(problems)
        return error


def show(value: object) -> str:
    """
    @param value: a value from the configuration.
    @return: a short description of it for an error message.
    """
    if isinstance(value, dict):
        return "a table"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return text


def _is_int(value: object) -> bool:
    """
    @return: whether C{value} is an integer (a boolean is not).
    """
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """
    @return: whether C{value} is a finite integer or float (not a boolean).
    """
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def suggest(word: str, known: Iterable[str]) -> Optional[str]:
    """
    @param word: a misspelt key or value.
    @param known: the accepted spellings.
    @return: the closest accepted spelling, or L{None} when none is close.
    """
    known = list(known)
    matches = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    if not matches:
        matches = difflib.get_close_matches(word.lower(), known, n=1, cutoff=0.6)
    return matches[0] if matches else None


def env_text(text: str) -> str:
    """
    @return: an environment variable's text, unchanged, for string keys.
    """
    return text


def env_int(text: str) -> int:
    """
    @return: the integer an environment variable holds.
    @raise Invalid: when it holds none.
    """
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise Invalid("an integer") from None


def env_float(text: str) -> float:
    """
    @return: the number an environment variable holds (C{"2.5"}, C{"3"}).
    @raise Invalid: when it holds none.
    """
    try:
        return float(text.strip())
    except ValueError:
        raise Invalid("a number") from None


_BOOL_WORDS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}


def env_bool(text: str) -> bool:
    """
    @return: the boolean an environment variable holds (C{true/false},
        C{1/0}, C{yes/no}, C{on/off}, in any case).
    @raise Invalid: when it holds none.
    """
    try:
        return _BOOL_WORDS[text.strip().lower()]
    except KeyError:
        raise Invalid("a boolean (true/false, yes/no, on/off, 1/0)") from None


def env_list(text: str) -> List[str]:
    """
    @return: the comma-separated items of an environment variable, trimmed,
        empty items left out.
    """
    return [item.strip() for item in text.split(",") if item.strip()]


def check_port(value: object) -> int:
    """
    @return: C{value}, an integer port 0-65535.
    @raise Invalid: otherwise.
    """
    if _is_int(value) and 0 <= value <= 65535:  # type: ignore[operator]
        return value  # type: ignore[return-value]
    raise Invalid(f"expected an integer port 0-65535, got {show(value)}")


def check_bool(value: object) -> bool:
    """
    @return: C{value}, a boolean.
    @raise Invalid: otherwise.
    """
    if isinstance(value, bool):
        return value
    raise Invalid(f"expected true or false, got {show(value)}")


def check_string(value: object) -> str:
    """
    @return: C{value}, a non-empty string.
    @raise Invalid: otherwise.
    """
    if isinstance(value, str) and value:
        return value
    raise Invalid(f"expected a non-empty string, got {show(value)}")


def has_control(text: str) -> bool:
    """
    @return: whether C{text} holds a control character (C{U+0000}-C{U+001F},
        C{U+007F}-C{U+009F}), which no file name, address or URL may hold.
    """
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)


def check_path(value: object) -> str:
    """
    @return: C{value}, a non-empty file or directory name without control
        characters.
    @raise Invalid: otherwise.
    """
    if isinstance(value, str) and value and not has_control(value):
        return value
    raise Invalid(
        f"expected a file name without control characters, got {show(value)}"
    )


def check_token(value: object) -> str:
    """
    @return: C{value}, a bearer token: printable, without spaces.
    @raise Invalid: otherwise.
    """
    if value == "":
        raise Invalid(
            "must not be empty; leave the key out for a control site without"
            " authentication"
        )
    if isinstance(value, str) and value.isprintable() and value.split() == [value]:
        return value
    raise Invalid(
        f"expected a bearer token without spaces or control characters,"
        f" got {show(value)}"
    )


def check_dotenv(value: object) -> Union[bool, str]:
    """
    @return: C{value}, a boolean or the path of a C{.env} file.
    @raise Invalid: otherwise.
    """
    if isinstance(value, bool) or (
        isinstance(value, str) and value and not has_control(value)
    ):
        return value  # type: ignore[return-value]
    raise Invalid(
        f"expected true, false or the path of a .env file, got {show(value)}"
    )


def env_dotenv(text: str) -> Union[bool, str]:
    """
    @return: a boolean when the variable holds a boolean word, else its text.
    """
    return _BOOL_WORDS.get(text.strip().lower(), text)


def seconds_check(minimum: float, inclusive: bool) -> Callable[[object], float]:
    """
    @param minimum: the bound.
    @param inclusive: whether the bound itself is allowed.
    @return: a check accepting finite numbers above (or at) C{minimum}.
    """
    relation = ">=" if inclusive else ">"

    def check(value: object) -> float:
        if _is_number(value) and (
            value >= minimum if inclusive else value > minimum  # type: ignore[operator]
        ):
            return float(value)  # type: ignore[arg-type]
        raise Invalid(
            f"expected a number of seconds {relation} {minimum:g}, got {show(value)}"
        )

    return check


def integer_check(minimum: int) -> Callable[[object], int]:
    """
    @param minimum: the smallest accepted value.
    @return: a check accepting integers at or above C{minimum}.
    """

    def check(value: object) -> int:
        if _is_int(value) and value >= minimum:  # type: ignore[operator]
            return value  # type: ignore[return-value]
        bound = ">= 0" if minimum == 0 else f"> {minimum - 1}"
        raise Invalid(f"expected an integer {bound}, got {show(value)}")

    return check


def choice_check(
    choices: Sequence[str], convert: Callable[[str], Any] = str
) -> Callable[[object], Any]:
    """
    @param choices: the accepted strings.
    @param convert: applied to an accepted string (an enum class).
    @return: a check accepting exactly one of C{choices}.
    """

    def check(value: object) -> Any:
        if isinstance(value, str) and value in choices:
            return convert(value)
        message = f"expected one of {', '.join(choices)}, got {show(value)}"
        if isinstance(value, str):
            close = suggest(value, choices)
            if close is not None:
                message += f"; did you mean {close}?"
        raise Invalid(message)

    return check


def string_check(parse: Callable[[str], Any], form: str) -> Callable[[object], Any]:
    """
    @param parse: reads a string, raising L{ValueError} when it is wrong.
    @param form: what a right value looks like, for the error.
    @return: a check of a value that must be a string C{parse} accepts.
    """

    def check(value: object) -> Any:
        if isinstance(value, str):
            try:
                return parse(value)
            except ValueError:
                pass
        raise Invalid(f"expected {form}, got {show(value)}")

    return check


_BIND_TO_FORM = 'expected "*" or a path prefix such as "/api"'


def check_bind_to(value: object) -> str:
    """
    @return: C{value}, C{"*"} or a path prefix (C{"/api"}): segments, no
        trailing slash, no C{.} or C{..}, no pattern characters.
    @raise Invalid: otherwise.
    """
    if value == "*":
        return "*"
    if not isinstance(value, str):
        raise Invalid(f"{_BIND_TO_FORM}, got {show(value)}")
    problem = None
    if not value.startswith("/"):
        problem = 'a prefix starts with "/"'
    elif value == "/":
        problem = 'use "*" for everything'
    elif value.endswith("/"):
        problem = 'no trailing "/"'
    elif "//" in value:
        problem = "no empty segments"
    elif re.search(r"[?#\s]", value) or has_control(value):
        problem = 'no "?", "#", spaces or control characters'
    elif "*" in value:
        problem = 'a prefix is not a pattern; no "*"'
    elif any(segment in (".", "..") for segment in value.split("/")):
        problem = 'no "." or ".." segments'
    if problem is None:
        return value
    raise Invalid(f"{_BIND_TO_FORM} ({problem}), got {show(value)}")


def list_check(
    item_ok: Callable[[str], bool], item_form: str
) -> Callable[[object], Tuple[str, ...]]:
    """
    @param item_ok: whether a string item is acceptable.
    @param item_form: what an item should look like, for error messages.
    @return: a check accepting lists of acceptable strings, returning a
        tuple; each bad item is reported at its index.
    """

    def check(value: object) -> Tuple[str, ...]:
        if not isinstance(value, list):
            raise Invalid(
                f"expected a list of strings, each {item_form}, got {show(value)}"
            )
        problems = [
            (f"[{index}]", f"expected {item_form}, got {show(item)}")
            for index, item in enumerate(value)
            if not (isinstance(item, str) and item_ok(item))
        ]
        if problems:
            raise Invalid.several(problems)
        return tuple(value)

    return check


def is_pattern(text: str) -> bool:
    """
    @return: whether C{text} is an C{include_paths}/C{exclude_paths} pattern.
    """
    try:
        PathPattern.parse(text)
    except PatternError:
        return False
    return True


def is_path(text: str) -> bool:
    """
    @return: whether C{text} is a request path (with an optional query).
    """
    return (
        text.startswith("/")
        and not any(c.isspace() for c in text)
        and not has_control(text)
    )


def check_workers(value: object) -> Union[int, str]:
    """
    @return: C{value}, a positive integer or C{"auto"} (one per CPU).
    @raise Invalid: for anything else.
    """
    if value == "auto" or (type(value) is int and value >= 1):
        return value  # type: ignore[return-value]
    raise Invalid(f'expected an integer > 0 or "auto", got {show(value)}')


def env_workers(text: str) -> Union[int, str]:
    """
    @return: the C{workers} an environment variable holds.
    """
    return text if text == "auto" else env_int(text)
