"""
Per-server edge rules: C{rewrite} (L{Rewrite}, L{rewrite_path}), applied to
the stripped path before keys, patterns and forwarding; and C{headers}
(L{HeaderRules}), set and removed on forwarded requests and on answers.
"""

from __future__ import annotations

import re
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Pattern, Tuple

import attr

__all__ = [
    "NO_RULES",
    "PROTECTED",
    "VARIABLES",
    "HeaderRules",
    "Rewrite",
    "TemplateError",
    "apply_rewrite",
    "check_template",
    "rewrite_path",
    "rewrites",
    "variables_of",
]


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


#: The variables a header rule's value may use.
VARIABLES = ("remote_addr", "host", "request_id")

_VARIABLE = re.compile(r"\$([a-z_]+)")

#: Headers the rules may not set or remove: the framing and routing of the
#: message belong to the proxy.
PROTECTED = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade", b"te", b"trailer"}
)


def check_template(value: str) -> None:
    """
    @raise ValueError: when C{value} uses a variable other than
        L{VARIABLES}, or holds a control character.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("a header value may not hold control characters")
    for name in _VARIABLE.findall(value):
        if name not in VARIABLES:
            raise ValueError(f"${name} is not a variable; use one of ${', $'.join(VARIABLES)}")


def _render(template: str, variables: Dict[str, str]) -> bytes:
    if "$" not in template:
        return template.encode("latin-1")
    return _VARIABLE.sub(lambda m: variables.get(m.group(1), ""), template).encode("latin-1")


@attr.s(frozen=True, auto_attribs=True)
class HeaderRules:
    """
    A server's C{[server.NAME.headers]}: headers set and removed on what is
    forwarded to the origin, and on every answer, from the cache or not.

    @ivar request_set: C{(name, value template)} pairs set on forwarded
        requests (replacing any the client sent).
    @ivar request_remove: lower-cased names left out of forwarded requests.
    @ivar response_set: C{(name, value template)} pairs set on answers.
    @ivar response_remove: lower-cased names left out of answers.
    """

    request_set: Tuple[Tuple[bytes, str], ...] = ()
    request_remove: FrozenSet[bytes] = frozenset()
    response_set: Tuple[Tuple[bytes, str], ...] = ()
    response_remove: FrozenSet[bytes] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.request_set or self.request_remove or self.response_set or self.response_remove)

    @property
    def response_dropped(self) -> FrozenSet[bytes]:
        """
        @return: the lower-cased names an answer must not carry as stored
            or relayed: removed, or set by a rule.
        """
        return self.response_remove | frozenset(n.lower() for n, _ in self.response_set)

    def request(self, pairs: Iterable[Tuple[bytes, bytes]], variables: Dict[str, str]) -> List[Tuple[bytes, bytes]]:
        """
        @return: the forwarded request headers C{pairs}, the rules applied.
        """
        dropped = self.request_remove | frozenset(n.lower() for n, _ in self.request_set)
        out = [(n, v) for n, v in pairs if n.lower() not in dropped]
        out.extend((name, _render(template, variables)) for name, template in self.request_set)
        return out

    def response_lines(self, variables: Dict[str, str]) -> bytes:
        """
        @return: the C{response_set} headers, serialised (each line ending
            with CRLF), for an answer written as bytes.
        """
        return b"".join(
            name + b": " + _render(template, variables) + b"\r\n" for name, template in self.response_set
        )

    def response(self, headers: Any, variables: Dict[str, str]) -> None:
        """
        Apply the response rules to twisted.web C{Headers} about to be sent.
        """
        for name in self.response_remove:
            headers.removeHeader(name)
        for name, template in self.response_set:
            headers.setRawHeaders(name, [_render(template, variables)])


NO_RULES = HeaderRules()


def variables_of(view: Any) -> Dict[str, str]:
    """
    @return: the values of L{VARIABLES} for the request C{view}.
    """
    headers = view.headers
    return {
        "remote_addr": view.client or "",
        "host": headers.get("host", ""),
        "request_id": headers.get("x-request-id", ""),
    }
