"""``GET /openapi.json``: valid OpenAPI 3.1, every route in it, and real answers fit it."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import jsonschema
import pytest
from google.protobuf.message_factory import GetMessageClass
from openapi_spec_validator import validate

from gateway.app import SERVICE, document, routes
from gateway.authfirst import UNAUTHENTICATED_RPCS
from gateway.openapi import documented_as, openapi_path, parameter_names
from gateway.transcode import bindings
from gateway.upstream import Upstream
from tests.helpers import LiveGateway, LiveService

Document = dict[str, Any]


async def described() -> Document:
    """The document, from an upstream that is never dialled: describing makes no call."""
    upstream = Upstream(grpc.aio.insecure_channel("127.0.0.1:9"))
    try:
        return document(upstream)
    finally:
        await upstream.close()


@pytest.fixture(scope="module")
def spec() -> Document:
    return asyncio.run(described())


def fits(spec: Document, schema: dict[str, Any], value: Any) -> list[str]:
    """Why ``value`` does not fit ``schema`` (whose refs point into the document); [] if it does."""
    root = {**schema, "components": spec["components"]}
    validator = jsonschema.Draft202012Validator(
        root, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return [error.message for error in validator.iter_errors(value)]


def answer(spec: Document, path: str, method: str, status: int) -> dict[str, Any]:
    responses = spec["paths"][path][method]["responses"]
    chosen: dict[str, Any] = responses.get(str(status)) or responses["default"]
    return chosen


def response_schema(spec: Document, path: str, method: str, status: int, media: str) -> Any:
    return answer(spec, path, method, status)["content"][media]["schema"]


async def test_the_served_document_is_valid_openapi_31(gateway: LiveGateway) -> None:
    # No credentials needed: the document describes routes, not tokens.
    response = await gateway.client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    served = response.json()
    assert served["openapi"] == "3.1.0"
    validate(served)
    assert served == await described()
    assert served["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A token's plaintext, `<id>|<secret>`.",
    }
    assert served["security"] == [{"bearer": []}]
    for probe in ("/healthz", "/readyz", "/openapi.json"):
        assert served["paths"][probe]["get"]["security"] == []


async def test_every_routed_path_is_documented_and_nothing_else(
    service: LiveService, spec: Document
) -> None:
    routed: set[tuple[str, str]] = set()
    for route, _ in routes(Upstream(service.channel)):
        routed |= documented_as(route)
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert documented == routed
    # {token.id}, under the one name OpenAPI allows for the path.
    assert ("/v1/tokens/{id}", "patch") in documented
    assert ("/oauth/introspect", "post") in documented


def test_canonical_operations_follow_the_http_annotations(spec: Document) -> None:
    paths = spec["paths"]
    create = paths["/v1/tokens"]["post"]
    assert create["parameters"] == []  # body "*": nothing comes from the query
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/tokengrpc.v1.CreateTokenRequest"
    }
    listed = {p["name"]: p["schema"] for p in paths["/v1/tokens"]["get"]["parameters"]}
    assert listed == {
        "pageSize": {"type": "integer", "format": "int32"},
        "pageToken": {"type": "string"},
        "page": {"type": "integer", "format": "int32"},
        "owner": {"type": "string"},
        "serviceTokens": {"type": "boolean"},
        "showRevoked": {"type": "boolean"},
        "orderBy": {"type": "string"},
    }
    update = paths["/v1/tokens/{id}"]["patch"]
    assert [(p["name"], p["in"]) for p in update["parameters"]] == [
        ("id", "path"),
        ("updateMask", "query"),
    ]
    assert update["parameters"][0]["description"] == "Binds `token.id`."
    token = {"$ref": "#/components/schemas/tokengrpc.v1.Token"}
    assert update["requestBody"]["content"]["application/json"]["schema"]["anyOf"][0] == token
    # response_body "token": the answer is the Token itself.
    assert response_schema(spec, "/v1/tokens/{id}", "get", 200, "application/json") == {
        "anyOf": [token, {"type": "null"}]
    }
    by_name = paths["/v1/service-tokens/{name}"]["get"]
    # An additional binding is named for what it is called by, not numbered.
    assert by_name["operationId"] == "TokenService_GetTokenByName"
    assert by_name["parameters"][0]["schema"] == {"type": "string", "minLength": 1}
    assert response_schema(spec, "/v1/tokens", "get", 404, "application/json") == {
        "$ref": "#/components/schemas/google.rpc.Status"
    }


def test_message_schemas_are_proto3_json(spec: Document) -> None:
    schemas = spec["components"]["schemas"]
    token = schemas["tokengrpc.v1.Token"]["properties"]
    assert token["id"] == {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
    assert token["usageCount"]["type"] == "string"
    assert token["expireTime"] == {
        "anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]
    }
    assert token["scopes"] == {"type": "array", "items": {"type": "string"}}
    assert token["status"] == {"$ref": "#/components/schemas/tokengrpc.v1.TokenStatus"}
    assert schemas["tokengrpc.v1.TokenStatus"]["enum"][1] == "TOKEN_STATUS_ACTIVE"
    assert "serviceToken" in token
    assert "service_token" not in token
    assert schemas["tokengrpc.v1.Token"]["additionalProperties"] is False
    request = schemas["tokengrpc.v1.CreateTokenRequest"]["properties"]
    assert request["active"] == {"type": "boolean"}  # proto3 optional: absent, never null
    mask = spec["paths"]["/v1/tokens/{id}"]["patch"]["parameters"][1]["schema"]
    assert mask["type"] == "string"


async def test_real_answers_fit_the_document(gateway: LiveGateway, spec: Document) -> None:
    """Every family's success and error shapes, as served, against the document."""
    client, admin = gateway.client, gateway.admin
    json_media, problem = "application/json", "application/problem+json"
    before = gateway.service.snapshot()
    checks: list[tuple[str, str, int, str, Any]] = []

    async def record(path: str, method: str, response: Any, media: str = json_media) -> Any:
        assert response.headers["content-type"] == media, response.text
        body = response.json() if response.content else None
        checks.append((path, method, response.status_code, media, body))
        return body

    await record("/v1/tokens", "get", await client.get("/v1/tokens", headers=admin))
    await record("/v1/tokens/{id}", "get", await client.get("/v1/tokens/1", headers=admin))
    await record("/v1/tokens/{id}", "get", await client.get("/v1/tokens/999", headers=admin))
    await record("/v1/tokens", "get", await client.get("/v1/tokens?pageSize=x", headers=admin))
    await record("/v1/tokens", "get", await client.get("/v1/tokens"))
    await record(
        "/v1/tokens:introspect",
        "post",
        await client.post(
            "/v1/tokens:introspect", json={"token": gateway.service.admin_token}, headers=admin
        ),
    )
    await record("/api/token", "get", await client.get("/api/token", headers=admin))
    await record("/api/token", "post", await client.post("/api/token", json={"name": 5}))
    await record("/api/token", "post", await client.post("/api/token", json={}, headers=admin))
    await record("/api/v1/me/tokens", "get", await client.get("/api/v1/me/tokens", headers=admin))
    await record("/api/v1/me/tokens", "get", await client.get("/api/v1/me/tokens"), media=problem)
    await record(
        "/api/v1/me/tokens",
        "post",
        await client.post("/api/v1/me/tokens", json={"name": ""}, headers=admin),
        media=problem,
    )
    await record("/_/token", "get", await client.get("/_/token", headers=admin))
    await record(
        "/_/token/value", "get", await client.get("/_/token/value?name=none", headers=admin)
    )
    await record(
        "/oauth/introspect",
        "post",
        await client.post(
            "/oauth/introspect", data={"token": gateway.service.admin_token}, headers=admin
        ),
    )
    await record("/oauth/introspect", "post", await client.post("/oauth/introspect"))
    await record("/healthz", "get", await client.get("/healthz"))
    await record("/readyz", "get", await client.get("/readyz"))

    statuses = sorted({status for _, _, status, _, _ in checks})
    assert statuses == [200, 400, 401, 404, 422]
    for path, method, status, media, body in checks:
        schema = response_schema(spec, path, method, status, media)
        assert fits(spec, schema, body) == [], (path, method, status)
    assert gateway.service.snapshot() == before


def test_the_schemas_are_not_vacuous(spec: Document) -> None:
    """Shapes the routes never answer are refused: the checks above could fail."""
    token = {"$ref": "#/components/schemas/tokengrpc.v1.Token"}
    assert fits(spec, token, {"id": 1})  # int64 must be a string
    assert fits(spec, token, {"expireTime": "yesterday"})
    assert fits(spec, token, {"status": "ACTIVE"})
    assert fits(spec, token, {"surprise": True})
    me_token = {"$ref": "#/components/schemas/me.Token"}
    assert fits(spec, me_token, {"id": 1, "name": "n"})  # fields missing
    assert fits(spec, {"$ref": "#/components/schemas/google.rpc.Status"}, {"error": "x"})
    introspection = {"$ref": "#/components/schemas/oauth.Introspection"}
    assert fits(spec, introspection, {"active": True})
    assert fits(spec, introspection, {"active": False}) == []


async def test_security_matches_which_routes_answer_without_a_token(
    gateway: LiveGateway, spec: Document
) -> None:
    """The document's per-operation ``security`` is held to what the server does:
    every canonical route is called without a token, and exactly those that
    do not answer 401 are documented with ``security: []``."""
    before = gateway.service.snapshot()
    open_operations: set[str] = set()
    for binding in bindings(SERVICE):
        path = openapi_path(binding.template)
        filled = path.format(**{name: "1" for name in parameter_names(binding.template).values()})
        answer_ = await gateway.client.request(
            binding.http_method, filled, json={} if binding.body else None
        )
        operation = spec["paths"][path][binding.http_method.lower()]
        anonymous = answer_.status_code != 401
        print(binding.http_method, filled, answer_.status_code)
        assert (operation.get("security") == []) is anonymous, (filled, answer_.status_code)
        if anonymous:
            open_operations.add(binding.method.name)
    assert open_operations == UNAUTHENTICATED_RPCS == {"RevokeTokenByValue"}
    assert gateway.service.snapshot() == before


async def test_unauthenticated_rpcs_are_the_ones_the_servicer_serves_without_a_token(
    service: LiveService,
) -> None:
    """The same table over gRPC, for RPCs with no HTTP binding as well."""
    answered: set[str] = set()
    for method in SERVICE.methods:
        call: grpc.aio.UnaryUnaryMultiCallable[Any, bytes] = service.channel.unary_unary(
            f"/{SERVICE.full_name}/{method.name}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=lambda raw: raw,
        )
        request = GetMessageClass(method.input_type)()
        try:
            await call(request)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                continue
        answered.add(method.name)
    assert answered == UNAUTHENTICATED_RPCS
