"""The hand-written OpenAPI fragments: the legacy families, OAuth and the probes.

These routes reproduce other applications' documents, so their shapes are
written down here as they answer (``tests/test_schemathesis.py`` holds them
to it); each family's ``openapi()`` returns its fragment from here, and a
test checks that every routed path is described.

A body a family also reads as a form is described as JSON only, with the
form named in the description: one operation offering a required body in
two media types is more than client generators handle (``docs/http.md``).
"""

from __future__ import annotations

from gateway.family import EVERY_METHOD, Fragment, Schema

ME = "/api/v1/me/tokens"
JSON = "application/json"
PROBLEM = "application/problem+json"
FORM = "application/x-www-form-urlencoded"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Schema], *, required: tuple[str, ...] = ()) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}
_BOOLEAN = {"type": "boolean"}
_STRINGS = {"type": "array", "items": _STRING}
_OR_NULL_STRING = {"type": ["string", "null"]}
_OR_NULL_INTEGER = {"type": ["integer", "null"]}
_BY_FIELD = {"type": "object", "additionalProperties": _STRINGS}

_ME_ITEM = _object(
    {
        "id": _INTEGER,
        "name": _STRING,
        "status": {"type": "string", "enum": ["active", "expired", "revoked", "inactive"]},
        "last_used_at": _OR_NULL_STRING,
        "usage_count": _INTEGER,
        "expires_at": _OR_NULL_STRING,
        "created_at": _STRING,
        "allowed_ips": {"type": ["array", "null"], "items": _STRING},
    },
    required=(
        "id",
        "name",
        "status",
        "last_used_at",
        "usage_count",
        "expires_at",
        "created_at",
        "allowed_ips",
    ),
)
_ME_LINK = _object(
    {
        "url": _OR_NULL_STRING,
        "label": _STRING,
        "page": _OR_NULL_INTEGER,
        "active": _BOOLEAN,
    },
    required=("url", "label", "page", "active"),
)
_ADMIN_TOKEN = _object(
    {
        "name": _STRING,
        "expiration_date": {**_OR_NULL_INTEGER, "description": "Epoch milliseconds."},
        "active": _BOOLEAN,
        "write": _BOOLEAN,
        "created_at": _INTEGER,
        "updated_at": _INTEGER,
        "last_used_at": _OR_NULL_INTEGER,
        "usage_count": _INTEGER,
    },
    required=(
        "name",
        "expiration_date",
        "active",
        "write",
        "created_at",
        "updated_at",
        "last_used_at",
        "usage_count",
    ),
)


_ME_PAGE = _object(
    {
        "data": {"type": "array", "items": _ref("me.Token")},
        "links": _object(
            {
                "first": _STRING,
                "last": _STRING,
                "prev": _OR_NULL_STRING,
                "next": _OR_NULL_STRING,
            },
            required=("first", "last", "prev", "next"),
        ),
        "meta": _object(
            {
                "current_page": _INTEGER,
                "from": _OR_NULL_INTEGER,
                "last_page": _INTEGER,
                "links": {"type": "array", "items": _ME_LINK},
                "path": _STRING,
                "per_page": _INTEGER,
                "to": _OR_NULL_INTEGER,
                "total": _INTEGER,
            },
            required=(
                "current_page",
                "from",
                "last_page",
                "links",
                "path",
                "per_page",
                "to",
                "total",
            ),
        ),
    },
    required=("data", "links", "meta"),
)


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(name: str, statuses: dict[int, str], media: str = JSON) -> dict[str, Schema]:
    """Error responses of one family: the listed statuses, and any other as ``default``."""
    answer = {"description": "", "content": {media: {"schema": _ref(name)}}}
    found = {str(code): {**answer, "description": text} for code, text in statuses.items()}
    found["default"] = {**answer, "description": "Any other error, in the same shape."}
    return found


def _body(schema: Schema, *, form: bool = False, required: bool = True) -> Schema:
    body: Schema = {"required": required, "content": {JSON: {"schema": schema}}}
    if form:
        body["description"] = (
            "JSON, or the same fields as an `application/x-www-form-urlencoded` form "
            "(as Laravel reads one: lists as repeated or `[]` keys)."
        )
    return body


def solder() -> Fragment:
    errors = {401: "No or invalid token.", 403: "The token lacks the scope this needs."}
    schemas = {
        "solder.Error": _object(
            {"error": {"anyOf": [_STRING, _BY_FIELD]}},
            required=("error",),
        ),
        "solder.Token": _object(
            {
                "id": _INTEGER,
                "name": _STRING,
                "last_used_at": _OR_NULL_STRING,
                "created_at": _STRING,
            },
            required=("id", "name", "last_used_at", "created_at"),
        ),
    }
    paths: dict[str, dict[str, Schema]] = {
        "/api/token": {
            "get": {
                "operationId": "solder_list",
                "tags": ["solder"],
                "summary": "The caller's tokens that are not revoked, oldest first.",
                "responses": {
                    "200": _json(
                        _object(
                            {"tokens": {"type": "array", "items": _ref("solder.Token")}},
                            required=("tokens",),
                        ),
                        "The tokens.",
                    ),
                    **_errors("solder.Error", errors),
                },
            },
            "post": {
                "operationId": "solder_create",
                "tags": ["solder"],
                "summary": "Create a token with the caller's scopes, minus admin.",
                "requestBody": _body(_object({"name": _STRING}), form=True),
                "responses": {
                    "201": _json(
                        _object(
                            {
                                "token": _object(
                                    {
                                        "id": _INTEGER,
                                        "name": _STRING,
                                        "plaintext": _STRING,
                                        "created_at": _STRING,
                                    },
                                    required=("id", "name", "plaintext", "created_at"),
                                )
                            },
                            required=("token",),
                        ),
                        "Created; the plaintext is shown only here.",
                    ),
                    **_errors(
                        "solder.Error",
                        {
                            400: "The body is not valid JSON.",
                            413: "The body is larger than the limit.",
                            422: "Invalid fields, in Laravel's words.",
                            **errors,
                        },
                    ),
                },
            },
        },
        "/api/token/{tokenId}": {
            "delete": {
                "operationId": "solder_revoke",
                "tags": ["solder"],
                "summary": "Revoke one of the caller's own tokens.",
                "parameters": [
                    {"name": "tokenId", "in": "path", "required": True, "schema": _STRING}
                ],
                "responses": {
                    "200": _json(_object({"success": _STRING}, required=("success",)), "Revoked."),
                    **_errors(
                        "solder.Error", {404: "Unknown, revoked or another owner's.", **errors}
                    ),
                },
            }
        },
    }
    return Fragment(paths, schemas)


def me() -> Fragment:
    trace = {"X-Trace-Id": {"schema": {"type": "string", "format": "uuid"}}}
    errors = {
        key: {**value, "headers": trace}
        for key, value in _errors(
            "me.Problem", {401: "Authentication failed.", 422: "Invalid fields."}, PROBLEM
        ).items()
    }
    paths: dict[str, dict[str, Schema]] = {
        ME: {
            "get": {
                "operationId": "me_list",
                "tags": ["me"],
                "summary": "The caller's tokens, revoked ones included, 20 a page, oldest first.",
                "parameters": [
                    {
                        "name": "page",
                        "in": "query",
                        "required": False,
                        "description": "1-based; anything that is not a number of at least 1 "
                        "means 1.",
                        "schema": {"type": "integer"},
                    }
                ],
                "responses": {"200": _json(_ref("me.Page"), "One page."), **errors},
            },
            "post": {
                "operationId": "me_create",
                "tags": ["me"],
                "summary": "Create a token (default scopes: the caller's, minus admin).",
                "requestBody": _body(
                    _object(
                        {
                            "name": _STRING,
                            "expires_at": {"type": "string", "format": "date-time"},
                            "allowed_ips": _STRINGS,
                            "scopes": _STRINGS,
                        }
                    ),
                    form=True,
                ),
                "responses": {
                    "201": _json(
                        _object(
                            {"data": _ref("me.Token"), "plaintext": _STRING},
                            required=("data", "plaintext"),
                        ),
                        "Created; the plaintext is shown only here.",
                    ),
                    **errors,
                },
            },
        },
        f"{ME}/{{id}}": {
            "delete": {
                "operationId": "me_revoke",
                "tags": ["me"],
                "summary": "Revoke one of the caller's own tokens.",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": _STRING}],
                "responses": {"204": {"description": "Revoked."}, **errors},
            }
        },
    }
    schemas = {
        "me.Token": _ME_ITEM,
        "me.Problem": _object(
            {
                "type": _STRING,
                "title": _STRING,
                "status": _INTEGER,
                "detail": _STRING,
                "instance": _STRING,
                "trace_id": {"type": "string", "format": "uuid"},
                "errors": _BY_FIELD,
            },
            required=("type", "title", "status", "detail", "instance", "trace_id"),
        ),
        "me.Page": _ME_PAGE,
    }
    return Fragment(paths, schemas)


def admin() -> Fragment:
    fields = _object(
        {
            "name": _STRING,
            "expiration_date": {**_OR_NULL_INTEGER, "description": "Epoch milliseconds."},
            "active": _BOOLEAN,
            "write": _BOOLEAN,
        }
    )
    errors = _errors(
        "admin.Error",
        {400: "Bad input.", 401: "No or invalid token.", 403: "The token lacks admin."},
    )
    token = _ref("admin.Token")
    paths: dict[str, dict[str, Schema]] = {
        "/_/token": {
            "post": {
                "operationId": "admin_create",
                "tags": ["admin"],
                "summary": "Create a service token.",
                "requestBody": _body(fields),
                "responses": {
                    "201": _json(
                        {"allOf": [token, _object({"value": _STRING}, required=("value",))]},
                        "Created, with its value.",
                    ),
                    **errors,
                    "409": _json(_ref("admin.Error"), "The name is taken."),
                },
            },
            "get": {
                "operationId": "admin_list",
                "tags": ["admin"],
                "summary": "The service tokens that are not revoked, by name.",
                "responses": {
                    "200": _json({"type": "array", "items": token}, "The tokens."),
                    **errors,
                },
            },
            "put": {
                "operationId": "admin_update",
                "tags": ["admin"],
                "summary": "Change the fields given of the service token named.",
                "requestBody": _body(fields),
                "responses": {
                    "200": _json(token, "The token after the change."),
                    **errors,
                    "404": _json(_ref("admin.Error"), "No such token."),
                },
            },
            "delete": {
                "operationId": "admin_revoke",
                "tags": ["admin"],
                "summary": "Revoke the service token named.",
                "requestBody": _body(_object({"name": _STRING}), required=False),
                "responses": {
                    "200": _json(_object({"deleted": _STRING}, required=("deleted",)), "Revoked."),
                    **errors,
                    "404": _json(_ref("admin.Error"), "No such token."),
                },
            },
        },
        "/_/token/value": {
            "get": {
                "operationId": "admin_value",
                "tags": ["admin"],
                "summary": "A service token's value.",
                "parameters": [
                    {"name": "name", "in": "query", "required": True, "schema": _STRING}
                ],
                "responses": {
                    "200": _json(
                        _object({"name": _STRING, "value": _STRING}, required=("name", "value")),
                        "The value.",
                    ),
                    **errors,
                    "404": _json(_ref("admin.Error"), "No such token."),
                },
            }
        },
    }
    schemas = {
        "admin.Token": _ADMIN_TOKEN,
        "admin.Error": _object({"error": _STRING}, required=("error",)),
    }
    return Fragment(paths, schemas)


def introspection() -> Fragment:
    """RFC 7662 over IntrospectToken."""
    challenge = {"WWW-Authenticate": {"schema": _STRING}}
    errors = _errors("oauth.Error", {400: "invalid_request", 403: "insufficient_scope"})
    errors["401"] = {
        **_json(_ref("oauth.Error"), "invalid_token: the caller's bearer token."),
        "headers": challenge,
    }
    form = _object(
        {"token": _STRING, "token_type_hint": _STRING, "client_ip": _STRING},
        required=("token",),
    )
    paths: dict[str, dict[str, Schema]] = {
        "/oauth/introspect": {
            "post": {
                "operationId": "oauth_introspect",
                "tags": ["oauth"],
                "summary": "RFC 7662 token introspection (needs introspect or admin).",
                "requestBody": {"required": True, "content": {FORM: {"schema": form}}},
                "responses": {
                    "200": _json(_ref("oauth.Introspection"), "The token's claims, or inactive."),
                    **errors,
                },
            }
        },
    }
    schemas = {
        "oauth.Error": _object(
            {"error": _STRING, "error_description": _STRING},
            required=("error", "error_description"),
        ),
        "oauth.Introspection": {
            "anyOf": [
                _object({"active": {"const": False}}, required=("active",)),
                _object(
                    {
                        "active": {"const": True},
                        "token_type": {"const": "Bearer"},
                        "sub": _STRING,
                        "client_id": _STRING,
                        "scope": _STRING,
                        "exp": _INTEGER,
                        "iat": _INTEGER,
                        "jti": _STRING,
                    },
                    required=("active", "token_type", "client_id", "scope", "iat", "jti"),
                ),
            ]
        },
    }
    return Fragment(paths, schemas)


def revocation() -> Fragment:
    """RFC 7009 over RevokeTokenByValue."""
    form = _object({"token": _STRING, "token_type_hint": _STRING}, required=("token",))
    paths: dict[str, dict[str, Schema]] = {
        "/oauth/revoke": {
            "post": {
                "operationId": "oauth_revoke",
                "tags": ["oauth"],
                "summary": "RFC 7009 revocation by value: the token itself is the proof.",
                "security": [],
                "requestBody": {"required": True, "content": {FORM: {"schema": form}}},
                "responses": {
                    "200": {"description": "Revoked, or there was no such token: the same answer."},
                    "400": _json(_ref("oauth.RevokeError"), "invalid_request: no token given."),
                },
            }
        },
    }
    schemas = {"oauth.RevokeError": _object({"error": _STRING}, required=("error",))}
    return Fragment(paths, schemas)


def forward_auth(path: str) -> Fragment:
    """``/auth/check`` and every path below it, any method (documented under each)."""
    error = _ref("forward.Error")
    header = {"schema": _STRING}
    allowed = {
        "description": "The token is active and holds every scope demanded: let the "
        "request pass with these headers. The body is empty.",
        "headers": {
            "Cache-Control": {"schema": {"const": "no-store"}, "required": True},
            "X-Token-Id": {**header, "required": True},
            "X-Token-Name": {**header, "required": True},
            "X-Token-Scopes": {**header, "description": "Absent for a token without scopes."},
            "X-Token-Owner": {**header, "description": "Absent for a service token."},
        },
    }
    responses = {
        "200": allowed,
        "401": {
            **_json(error, "No token, not exactly one, or one that does not authenticate."),
            "headers": {"WWW-Authenticate": {"schema": {"const": "Bearer"}, "required": True}},
        },
        "403": _json(error, "The token lacks a scope the route demands."),
        "503": _json(error, "The service cannot answer now: the request must not pass."),
    }
    demanded = {
        "name": "X-Required-Scopes",
        "in": "header",
        "required": False,
        "description": "Scopes the protected route demands, space separated; every line counts.",
        "schema": _STRING,
    }
    query = {
        "name": "scope",
        "in": "query",
        "required": False,
        "description": "A scope the protected route demands (repeatable); read on "
        f"`{path}` itself only.",
        "schema": _STRINGS,
        "style": "form",
        "explode": True,
    }
    below = {
        "name": "path",
        "in": "path",
        "required": True,
        "description": "The protected request's path and query, as Envoy's `http_service` "
        "appends them: never read.",
        "schema": _STRING,
    }
    summary = "Forward auth: may the request carrying this bearer token pass?"
    paths: dict[str, dict[str, Schema]] = {path: {}, f"{path}/{{path}}": {}}
    for method in EVERY_METHOD:
        for where, parameters in (
            (path, [demanded, query]),
            (f"{path}/{{path}}", [demanded, below]),
        ):
            suffix = "" if where == path else "_below"
            paths[where][method] = {
                "operationId": f"forward_auth_{method}{suffix}",
                "tags": ["forward auth"],
                "summary": summary,
                "description": "Any method; no body is read. The proxy forwards the "
                "client's `Authorization` and `X-Forwarded-For`.",
                "parameters": parameters,
                "responses": responses,
            }
    schemas = {"forward.Error": _object({"error": _STRING}, required=("error",))}
    return Fragment(paths, schemas)


def leaks() -> Fragment:
    """GitHub secret scanning's partner endpoint over ReportLeakedTokens."""
    entry = _object(
        {"token": _STRING, "type": _STRING, "url": _STRING, "source": _STRING},
        required=("token", "type"),
    )
    feedback = _object(
        {
            "token_hash": _STRING,
            "token_type": _STRING,
            "label": {"type": "string", "enum": ["true_positive", "false_positive"]},
        },
        required=("token_hash", "token_type", "label"),
    )
    header = {"in": "header", "required": True, "schema": _STRING}
    paths: dict[str, dict[str, Schema]] = {
        "/v1/leaks/github": {
            "post": {
                "operationId": "leaks_github",
                "tags": ["leaks"],
                "summary": "A signed leak report: the tokens of ours it names are revoked.",
                "security": [],
                "parameters": [
                    {"name": "Github-Public-Key-Identifier", **header},
                    {"name": "Github-Public-Key-Signature", **header},
                ],
                "requestBody": _body({"type": "array", "items": entry}),
                "responses": {
                    "200": _json({"type": "array", "items": feedback}, "One label per token."),
                    **_errors(
                        "google.rpc.Status",
                        {
                            401: "The signature does not verify: nothing was read.",
                            400: "A verified report that is not such an array.",
                            503: "The keys that sign reports cannot be fetched now.",
                        },
                    ),
                },
            }
        },
    }
    return Fragment(paths)


def ops(document_path: str, metrics: bool) -> Fragment:
    """The probes, the document itself and, when served, the metrics."""
    status = _object({"status": _STRING, "reason": _STRING}, required=("status",))
    paths: dict[str, dict[str, Schema]] = {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "tags": ["ops"],
                "summary": "The process is up.",
                "security": [],
                "responses": {"200": _json(status, "Up.")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "tags": ["ops"],
                "summary": "The gRPC server and its store answer.",
                "security": [],
                "responses": {
                    "200": _json(status, "Ready."),
                    "503": _json(status, "Not ready, with the reason."),
                },
            }
        },
        document_path: {
            "get": {
                "operationId": "openapi",
                "tags": ["ops"],
                "summary": "This document.",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
            }
        },
    }
    if metrics:
        paths["/metrics"] = {
            "get": {
                "operationId": "metrics",
                "tags": ["ops"],
                "summary": "Prometheus metrics, in its text format.",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The metrics.",
                        "content": {"text/plain": {"schema": _STRING}},
                    }
                },
            }
        }
    return Fragment(paths)
