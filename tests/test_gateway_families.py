"""The family contract: every route family lists, describes and renders; the
app alone guards (authenticate first, body limits); limits reach a family as
numbers in the error's details, never by reading the service's English."""

from __future__ import annotations

import ast
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from gateway import legacy
from gateway.app import families
from gateway.family import Family, NoSuchToken, path_id
from gateway.openapi import documented_as
from gateway.pattern import Template, compile_template
from gateway.upstream import FieldProblem, Upstream
from tests.helpers import LiveService, bearer, status_details
from tokengrpc.v1 import tokens_pb2 as pb

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"
#: The guard applies authenticate-first; authfirst defines it.
_GUARDS = {"family.py", "authfirst.py"}


def _calls(module: Path) -> set[str]:
    """The names a module calls (``authfirst.authenticate(...)`` gives ``authenticate``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            found.add(node.func.attr)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            found.add(node.func.id)
    return found


@pytest.mark.parametrize("module", sorted(GATEWAY.glob("*.py")), ids=lambda path: path.name)
def test_no_family_authenticates_first_by_hand(module: Path) -> None:
    if module.name in _GUARDS:
        return
    assert not {"authenticate", "before_body"} & _calls(module), module.name


@pytest.mark.parametrize("module", sorted(GATEWAY.glob("*.py")), ids=lambda path: path.name)
def test_body_limits_are_defined_in_one_place(module: Path) -> None:
    """Sizes in KiB and MiB live in ``gateway/limits.py`` (the head's, in connections.py)."""
    if module.name in ("limits.py", "connections.py"):
        return
    sizes = [
        node
        for node in ast.walk(ast.parse(module.read_text()))
        if isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Mult)
        and 1024 in (getattr(node.left, "value", None), getattr(node.right, "value", None))
    ]
    assert not sizes, module.name
    assert "MiB" not in module.read_text(), module.name


async def test_every_family_documents_exactly_its_routes(service: LiveService) -> None:
    upstream = Upstream(service.channel)
    seen: set[tuple[str, str]] = set()
    for family in families(upstream):
        assert _implements(family), type(family).__name__
        routed = {pair for route in family.routes() for pair in documented_as(route)}
        fragment = family.openapi()
        documented = {(path, method) for path, ops in fragment.paths.items() for method in ops}
        assert routed == documented, type(family).__name__
        assert not routed & seen, "a route belongs to one family"
        seen |= routed


def _compiled(template: Template | str) -> Template:
    return compile_template(template) if isinstance(template, str) else template


def _implements(family: Family) -> bool:
    return all(
        callable(getattr(family, name, None))
        for name in ("routes", "openapi", "bad_input", "failed")
    )


async def test_a_length_limit_comes_as_a_number(service: LiveService) -> None:
    """The service sends the limit in an ErrorInfo beside the field violation."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.stub.CreateToken(
            pb.CreateTokenRequest(name="n" * 300), metadata=bearer(service.admin_token)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    infos = []
    for detail in status_details(refused.value).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            infos.append((info.reason, info.domain, dict(info.metadata)))
    assert infos == [("MAX_LENGTH", "tokengrpc", {"name": "255"})]


def test_a_family_words_the_limit_from_the_number_not_the_message() -> None:
    problem = FieldProblem("name", "is longer than allowed", "TOO_LONG", max_length=7)
    assert legacy.laravel_message("name", problem) == (
        "The name field must not be greater than 7 characters."
    )
    # Without the number the service's words are shown, never read for one.
    wordy = FieldProblem("name", "must be at most 9 characters", "TOO_LONG")
    assert legacy.laravel_message("name", wordy) == "The name field must be at most 9 characters."


@pytest.mark.parametrize(
    ("text", "token_id"),
    [("1", 1), ("9223372036854775807", 2**63 - 1), ("9223372036854775808", None),
     ("12|tgr_x", None), ("", None), ("\u0661", None), ("-1", None)],
)  # fmt: skip
def test_a_path_names_a_token_id_or_none(text: str, token_id: int | None) -> None:
    if token_id is None:
        with pytest.raises(NoSuchToken):
            path_id(text)
    else:
        assert path_id(text) == token_id
