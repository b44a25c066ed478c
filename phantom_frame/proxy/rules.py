"""
Per-server edge rules: C{rewrite} (L{Rewrite}, L{rewrite_path}), applied to
the stripped path before keys, patterns and forwarding.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Optional, Pattern, Tuple

import attr

__all__ = ["Rewrite", "TemplateError", "apply_rewrite", "rewrite_path", "rewrites"]


class TemplateError(ValueError):
    """
    A rewrite's C{to} refers to a group its C{from} does not have, or does
    not make a path.
    """


_REFERENCE = re.compile(r"\\(?:(\d+)|g<([^>]*)>)")


def _check_template(pattern: Pattern[str], to: str) -> None:
    """
    @raise TemplateError: when C{to} does not start with C{/} or names a
        group C{pattern} does not have.
    """
    if not to.startswith("/"):
        raise TemplateError(f'the result must be a path starting with "/", got {to!r}')
    for number, name in _REFERENCE.findall(to):
        if number and int(number) > pattern.groups:
            raise TemplateError(f"\\{number} refers to a group that the regex does not have")
        if name:
            known = name.isdigit() and int(name) <= pattern.groups or name in pattern.groupindex
            if not known:
                raise TemplateError(f"\\g<{name}> refers to a group that the regex does not have")


@attr.s(auto_attribs=True, frozen=True)
class Rewrite:
    """
    One C{rewrite} rule: when C{pattern} is found in the stripped path
    (C{re.search}, as nginx's C{rewrite}: anchor it with C{^...$} to match
    the whole path), the path becomes C{to} with the groups expanded
    (C{\\1}, C{\\g<name>}). A C{?} in the result starts a new query, the
    request's own query following after C{&}.

    @ivar pattern: the compiled C{from}.
    @ivar to: the template.
    """

    pattern: Pattern[str]
    to: str

    @classmethod
    def compile(cls, source: str, to: str) -> Rewrite:
        """
        @param source: the C{from} regex (Python C{re} syntax).
        @param to: the template.
        @return: the rule.
        @raise re.error: for an invalid regex.
        @raise TemplateError: for a template that cannot be used with it.
        """
        pattern = re.compile(source)
        _check_template(pattern, to)
        return cls(pattern, to)


def rewrites(value: Iterable[Any]) -> Tuple[Rewrite, ...]:
    """
    The converter of L{phantom_frame.proxy.settings.CreateProxyConfig.rewrite}.

    @param value: L{Rewrite}s, C{(from, to)} pairs or C{{"from", "to"}}
        mappings.
    @return: the rules, compiled.
    """
    rules = []
    for item in value:
        if isinstance(item, Rewrite):
            rules.append(item)
        elif isinstance(item, dict):
            rules.append(Rewrite.compile(item["from"], item["to"]))
        else:
            source, to = item
            rules.append(Rewrite.compile(source, to))
    return tuple(rules)


def rewrite_path(
    rules: Tuple[Rewrite, ...], path: bytes, query: bytes
) -> Optional[Tuple[bytes, bytes]]:
    """
    @param rules: a server's rules, in order.
    @param path: the stripped raw path.
    @param query: the raw query, without C{?}.
    @return: the path and query the first matching rule makes, or L{None}
        when none matches.
    """
    text = path.decode("latin-1")
    for rule in rules:
        found = rule.pattern.search(text)
        if found is None:
            continue
        result = found.expand(rule.to).encode("latin-1")
        new_path, mark, new_query = result.partition(b"?")
        if not mark:
            return new_path, query
        if query:
            new_query = new_query + b"&" + query if new_query else query
        return new_path, new_query
    return None


def apply_rewrite(rules: Tuple[Rewrite, ...], view: Any) -> None:
    """
    Rewrite a request's L{phantom_frame.proxy.view.RequestView} in place
    (its C{path} and C{query}) by the first matching rule, if any.
    """
    rewritten = rewrite_path(rules, view.path, view.query)
    if rewritten is not None:
        view.path, view.query = rewritten
