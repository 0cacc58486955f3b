"""The path-template compiler and the router, on their own."""

from __future__ import annotations

import pytest

from gateway.http import Request, Response
from gateway.pattern import BadPath, TemplateError, compile_template
from gateway.router import AmbiguousRoute, Match, NotAllowed, Router


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/v1/tokens/{id}", "/v1/tokens/42", {"id": "42"}),
        ("/v1/tokens/{id}", "/v1/tokens/a%2Fb", {"id": "a/b"}),
        ("/v1/tokens/{id}", "/v1/tokens/caf%C3%A9", {"id": "café"}),
        ("/v1/tokens/{id}", "/v1/tokens/1:2", {"id": "1:2"}),  # no verb in the template
        ("/v1/tokens/{id}", "/v1/tokens/a/b", None),
        ("/v1/tokens/{id}", "/v1/tokens/", None),
        ("/v1/tokens/{token.id}", "/v1/tokens/7", {"token.id": "7"}),
        ("/v1/tokens:introspect", "/v1/tokens:introspect", {}),
        ("/v1/tokens:introspect", "/v1/tokens", None),
        ("/v1/tokens:introspect", "/v1/tokens:other", None),
        ("/v1/{name=shelves/*}", "/v1/shelves/s1", {"name": "shelves/s1"}),
        ("/v1/{name=shelves/*}", "/v1/books/s1", None),
        ("/v1/{name=files/**}", "/v1/files/a/b%2Fc/d", {"name": "files/a/b%2Fc/d"}),
        ("/v1/{name=files/**}", "/v1/files", {"name": "files"}),
        ("/v1/{name=**}:get", "/v1/a/b:get", {"name": "a/b"}),
        ("/v1/*/x", "/v1/anything/x", {}),
        ("/v1/**", "/v1/a/b/c", {}),
    ],
)
def test_templates_match(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert compile_template(template).match(path) == expected


@pytest.mark.parametrize(
    "template",
    [
        "v1/no-slash",
        "/v1/{id",
        "/v1/{a}/{a}",
        "/v1/**/x",
        "/v1/{a={b}}",
        "/v1//x",
        "/v1/{9bad}",
        "/v1/x:",
        "/v1/sp ace",
    ],
)
def test_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(TemplateError):
        compile_template(template)


@pytest.mark.parametrize("path", ["/v1/tokens/%zz", "/v1/tokens/%4", "/v1/tokens/%ff"])
def test_malformed_escapes_are_errors(path: str) -> None:
    with pytest.raises(BadPath):
        compile_template("/v1/tokens/{id}").match(path)


def _endpoint(label: str) -> object:
    async def endpoint(request: Request, variables: dict[str, str]) -> Response:
        return Response(200, label.encode())

    endpoint.label = label  # type: ignore[attr-defined]
    return endpoint


def _label(result: object) -> str:
    assert isinstance(result, Match)
    return str(result.endpoint.label)  # type: ignore[attr-defined]


def test_specificity_beats_registration_order() -> None:
    router = Router()
    router.add("GET", "/v1/**", _endpoint("deep"))  # type: ignore[arg-type]
    router.add("GET", "/v1/{id}", _endpoint("wild"))  # type: ignore[arg-type]
    router.add("GET", "/v1/tokens", _endpoint("literal"))  # type: ignore[arg-type]
    router.add("GET", "/v1/tokens:count", _endpoint("verb"))  # type: ignore[arg-type]
    assert _label(router.resolve("GET", "/v1/tokens")) == "literal"
    assert _label(router.resolve("GET", "/v1/tokens/")) == "literal"
    assert _label(router.resolve("GET", "/v1/other")) == "wild"
    assert _label(router.resolve("GET", "/v1/a/b")) == "deep"
    assert _label(router.resolve("GET", "/v1/tokens:count")) == "verb"
    assert _label(router.resolve("GET", "/v1/tokens:other")) == "wild"


def test_method_not_allowed_lists_the_methods() -> None:
    router = Router()
    router.add("GET", "/v1/tokens/{id}", _endpoint("get"))  # type: ignore[arg-type]
    router.add("DELETE", "/v1/tokens/{id}", _endpoint("delete"))  # type: ignore[arg-type]
    result = router.resolve("PUT", "/v1/tokens/1")
    assert isinstance(result, NotAllowed)
    assert result.allow == ("GET", "DELETE")
    assert router.resolve("GET", "/v2/nothing") is None


def test_the_same_route_twice_is_refused() -> None:
    router = Router()
    router.add("GET", "/v1/{a}", _endpoint("a"))  # type: ignore[arg-type]
    with pytest.raises(AmbiguousRoute):
        router.add("GET", "/v1/{b}", _endpoint("b"))  # type: ignore[arg-type]
    router.add("POST", "/v1/{b}", _endpoint("b"))  # type: ignore[arg-type]


def test_an_exact_literal_path_defers_to_other_methods_and_escapes() -> None:
    """All-literal routes are looked up directly; everything else still scans."""
    router = Router()
    router.add("GET", "/v1/tokens", _endpoint("literal"))  # type: ignore[arg-type]
    router.add("POST", "/v1/{id}", _endpoint("wild"))  # type: ignore[arg-type]
    assert _label(router.resolve("GET", "/v1/tokens")) == "literal"
    assert _label(router.resolve("POST", "/v1/tokens")) == "wild"
    assert _label(router.resolve("GET", "/v1/%74okens")) == "literal"
    result = router.resolve("PUT", "/v1/tokens")
    assert isinstance(result, NotAllowed)
    assert result.allow == ("GET", "POST")
