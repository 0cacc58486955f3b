"""Path templates of ``google.api.http``: compiled once, matched per request.

Grammar (from ``google/api/http.proto``)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;

Matching works on the raw (still percent-encoded) path so that ``%2F`` can be
told from ``/``: a single-segment variable is fully decoded, a multi-segment
one keeps ``%2F``. A ``:`` is a verb only when the template has that verb.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

LITERAL, WILD, DEEP = 3, 2, 1  # also each segment's rank: literal beats * beats **

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_LITERAL = re.compile(r"^[A-Za-z0-9\-._~!$&'()+,;=@%]+$")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class TemplateError(ValueError):
    """A path template that does not follow the grammar."""


class BadPath(ValueError):
    """A request path that cannot be decoded (a malformed ``%`` escape)."""


@dataclass(frozen=True, slots=True)
class Variable:
    field_path: str
    start: int
    #: One past the last segment; None when the variable ends in ``**``.
    end: int | None

    @property
    def multi(self) -> bool:
        return self.end is None or self.end - self.start > 1


@dataclass(frozen=True, slots=True)
class Template:
    source: str
    #: Per segment: (kind, literal text or "").
    segments: tuple[tuple[int, str], ...]
    variables: tuple[Variable, ...]
    verb: str

    @property
    def rank(self) -> tuple[tuple[int, ...], int]:
        """Sort key: the more specific template matches first."""
        return tuple(kind for kind, _ in self.segments), int(bool(self.verb))

    def match(self, raw_path: str) -> dict[str, str] | None:
        """Variable values for a raw path, or None if it does not match.

        Raises BadPath for a malformed percent escape in a variable.
        """
        if self.verb:
            suffix = ":" + self.verb
            if not raw_path.endswith(suffix):
                return None
            raw_path = raw_path[: -len(suffix)]
        if not raw_path.startswith("/"):
            return None
        parts = raw_path[1:].split("/")
        count = len(self.segments)
        deep = bool(self.segments) and self.segments[-1][0] == DEEP
        if len(parts) < count - deep or (not deep and len(parts) != count):
            return None
        for index, (kind, text) in enumerate(self.segments):
            if kind == DEEP:
                break
            part = parts[index]
            if kind == LITERAL:
                if part != text and decode(part) != text:
                    return None
            elif not part:
                return None
        values: dict[str, str] = {}
        for variable in self.variables:
            chosen = parts[variable.start : variable.end]
            if variable.multi:
                values[variable.field_path] = "/".join(decode(p, keep_slash=True) for p in chosen)
            else:
                values[variable.field_path] = decode(chosen[0])
        return values


def decode(part: str, *, keep_slash: bool = False) -> str:
    if "%" not in part:
        return part
    if _BAD_ESCAPE.search(part):
        raise BadPath("a path segment has a malformed percent-escape")
    if keep_slash:
        pieces = re.split(r"(%2[Ff])", part)
        return "".join(p if i % 2 else decode(p) for i, p in enumerate(pieces))
    try:
        return unquote_to_bytes(part).decode("utf-8")
    except UnicodeDecodeError:
        raise BadPath("a path segment is not UTF-8 once decoded") from None


def compile_template(source: str) -> Template:
    if not source.startswith("/"):
        raise TemplateError(f"{source!r}: a template starts with '/'")
    body, verb = source[1:], ""
    # The verb is a ':' after the last '/' and outside any variable.
    last = body.rfind("/")
    depth, colon = 0, -1
    for index, char in enumerate(body):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == ":" and depth == 0 and index > last:
            colon = index
    if colon >= 0:
        body, verb = body[:colon], body[colon + 1 :]
        if not _LITERAL.match(verb):
            raise TemplateError(f"{source!r}: bad verb {verb!r}")
    segments: list[tuple[int, str]] = []
    variables: list[Variable] = []
    for token in _split_top(body, source):
        if token.startswith("{"):
            if not token.endswith("}"):
                raise TemplateError(f"{source!r}: unclosed variable")
            name, _, inner = token[1:-1].partition("=")
            if not _IDENT.match(name):
                raise TemplateError(f"{source!r}: bad field path {name!r}")
            if any(v.field_path == name for v in variables):
                raise TemplateError(f"{source!r}: {name!r} bound twice")
            start = len(segments)
            for part in (inner or "*").split("/"):
                if part.startswith("{"):
                    raise TemplateError(f"{source!r}: nested variable")
                segments.append(_segment(part, source))
            multi = segments[-1][0] == DEEP
            variables.append(Variable(name, start, None if multi else len(segments)))
        else:
            segments.append(_segment(token, source))
    if any(kind == DEEP for kind, _ in segments[:-1]):
        raise TemplateError(f"{source!r}: '**' must be the last segment")
    return Template(source, tuple(segments), tuple(variables), verb)


def _split_top(body: str, source: str) -> list[str]:
    """Split on '/' that are not inside a variable."""
    tokens, current, depth = [], "", 0
    for char in body:
        if char == "{":
            depth += 1
            if depth > 1:
                raise TemplateError(f"{source!r}: nested variable")
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise TemplateError(f"{source!r}: unbalanced '}}'")
        if char == "/" and depth == 0:
            tokens.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise TemplateError(f"{source!r}: unclosed variable")
    tokens.append(current)
    if any(not token for token in tokens):
        raise TemplateError(f"{source!r}: empty segment")
    return tokens


def _segment(text: str, source: str) -> tuple[int, str]:
    if text == "*":
        return WILD, ""
    if text == "**":
        return DEEP, ""
    if not _LITERAL.match(text):
        raise TemplateError(f"{source!r}: bad literal {text!r}")
    return LITERAL, text


def parameter_names(template: Template) -> dict[str, str]:
    """OpenAPI names of a template's variables: ``token.id`` is ``id``.

    Dotted names are legal OpenAPI, but tools fill paths in with Python's
    ``str.format`` or RFC 6570 expansion, where a dot means something else;
    and ``/v1/tokens/{token.id}`` must read as the same path as
    ``/v1/tokens/{id}``, which OpenAPI allows only under one name. Two
    variables with the same last part keep their whole path, dots as ``_``.
    """
    paths = [variable.field_path for variable in template.variables]
    lasts = [path.rsplit(".", 1)[-1] for path in paths]
    return {
        path: last if lasts.count(last) == 1 else path.replace(".", "_")
        for path, last in zip(paths, lasts, strict=True)
    }


def openapi_path(template: Template) -> str:
    """The OpenAPI form of a template: ``/v1/tokens/{token.id}`` is ``/v1/tokens/{id}``."""
    names = parameter_names(template)
    parts: list[str] = []
    starts = {variable.start: variable for variable in template.variables}
    covered: set[int] = set()
    for index, (kind, text) in enumerate(template.segments):
        if index in covered:
            continue
        variable = starts.get(index)
        if variable is not None:
            end = len(template.segments) if variable.end is None else variable.end
            covered.update(range(index, end))
            parts.append("{" + names[variable.field_path] + "}")
        else:
            parts.append(text if kind == LITERAL else "*")
    path = "/" + "/".join(parts)
    return f"{path}:{template.verb}" if template.verb else path
