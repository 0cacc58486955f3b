"""``GET /openapi.json``: an OpenAPI 3.1 document of every HTTP route, built once at start-up.

The canonical routes come from the same HttpRule bindings the transcoder
compiles (``transcode.bindings``), so a new annotated RPC is documented
with no code here. Their schemas are the message descriptors in proto3 JSON
form, as ``gateway.protojson`` writes them: lowerCamel names, int64 as a
string, Timestamp as a date-time string, FieldMask as a string, enums by
name, unset messages as ``null``. The other families describe themselves
(by hand, in ``gateway.openapi_legacy``); ``document`` puts the fragments
together.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.descriptor import ServiceDescriptor as Service

from gateway.authfirst import UNAUTHENTICATED_RPCS
from gateway.family import EVERY_METHOD, Fragment, Route, Schema
from gateway.pattern import compile_template, openapi_path, parameter_names
from gateway.router import ANY_METHOD
from gateway.transcode import Binding, bindings

__all__ = ["openapi_path", "parameter_names"]  # at home in gateway.pattern, used here

_INT32 = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32}
_UINT32 = {FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32}
_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64}
_UINT64 = {FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64}
_FLOATS = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}

# Well-known types have a JSON form of their own instead of an object of fields.
_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated field paths, such as `name,expireTime`.",
    },
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
    },
}
_WRAPPERS = {
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
}

STATUS = "google.rpc.Status"
_STATUS_SCHEMA: Schema = {
    "type": "object",
    "description": "An error: a gRPC status code, a message and typed details "
    "(`google.rpc.BadRequest` field violations for bad input).",
    "properties": {
        "code": {"type": "integer", "format": "int32"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"$ref": "#/components/schemas/google.protobuf.Any"}},
    },
    "required": ["code", "message", "details"],
}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


class Schemas:
    """The ``components.schemas`` of the document, filled as messages are referenced."""

    def __init__(self) -> None:
        self.components: dict[str, Schema] = {
            STATUS: _STATUS_SCHEMA,
            "google.protobuf.Any": _WELL_KNOWN["google.protobuf.Any"],
        }

    def message(self, descriptor: Descriptor) -> Schema:
        """A reference to the message's schema (or its well-known JSON form, inline)."""
        name = descriptor.full_name
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        if name in _WRAPPERS:
            return self.scalar(descriptor.fields_by_name["value"])
        if name not in self.components:
            self.components[name] = {}  # reserved first: messages may refer to themselves
            properties = {field.json_name: self.field(field) for field in descriptor.fields}
            self.components[name] = {
                "type": "object",
                "properties": properties,
                "additionalProperties": False,
            }
        return ref(name)

    def enum(self, descriptor: EnumDescriptor) -> Schema:
        name = descriptor.full_name
        self.components.setdefault(
            name, {"type": "string", "enum": [value.name for value in descriptor.values]}
        )
        return ref(name)

    def scalar(self, field: FieldDescriptor) -> Schema:
        """One value of the field, whatever its cardinality."""
        kind = field.type
        if field.message_type is not None:
            return self.message(field.message_type)
        if field.enum_type is not None:
            return self.enum(field.enum_type)
        if kind in _INT32:
            return {"type": "integer", "format": "int32"}
        if kind in _UINT32:
            return {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1}
        if kind in _INT64:
            return {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
        if kind in _UINT64:
            return {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"}
        if kind in _FLOATS:
            return {
                "anyOf": [
                    {"type": "number"},
                    {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]},
                ]
            }
        if kind == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        return {"type": "string"}

    def field(self, field: FieldDescriptor) -> Schema:
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            return {
                "type": "object",
                "additionalProperties": self.scalar(message.fields_by_name["value"]),
            }
        if field.is_repeated:
            return {"type": "array", "items": self.scalar(field)}
        value = self.scalar(field)
        if message is not None and field.containing_oneof is None:
            return nullable(value)  # written as null when unset (gateway.protojson)
        return value


def documented_as(route: Route) -> set[tuple[str, str]]:
    """The (OpenAPI path, method) pairs that describe ``route``: a route for any
    method under each method, a subtree's paths below it as ``{path}``."""
    template = route.template
    path = openapi_path(compile_template(template) if isinstance(template, str) else template)
    methods = EVERY_METHOD if route.method == ANY_METHOD else (route.method.lower(),)
    paths = (path, f"{path}/{{path}}") if route.subtree else (path,)
    return {(where, method) for where in paths for method in methods}


def _walk(descriptor: Descriptor, path: str) -> list[FieldDescriptor]:
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for part in path.split("."):
        assert current is not None, f"{path!r} goes through a scalar"
        found = current.fields_by_name[part]
        fields.append(found)
        current = found.message_type
    return fields


def _in_url(field: FieldDescriptor) -> bool:
    """Whether the transcoder can set the field from one URL string."""
    message = field.message_type
    return message is None or message.full_name in _WRAPPERS or message.full_name in _WELL_KNOWN


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.replace(".", "_").split("_"))


class _Canonical:
    """Operations for the HttpRule bindings of one service."""

    def __init__(self, service: Service, schemas: Schemas) -> None:
        self._service = service
        self._schemas = schemas
        self._ids: set[str] = set()

    def operation_id(self, binding: Binding) -> str:
        """``TokenService_GetToken``; an additional binding says what it is called
        by (``TokenService_GetTokenByName``), so no id is a numbered copy."""
        name = f"{self._service.name}_{binding.method.name}"
        if name in self._ids:
            variables = [_camel(v.field_path) for v in binding.template.variables]
            name += "By" + "And".join(variables)
        if name in self._ids:
            raise ValueError(f"two bindings of {binding.method.name} would share the id {name}")
        self._ids.add(name)
        return name

    def operation(self, binding: Binding) -> tuple[str, str, Schema]:
        method = binding.method
        input_type = method.input_type
        path_fields = {v.field_path for v in binding.template.variables}
        parameters: list[Schema] = []
        names = parameter_names(binding.template)
        for variable in binding.template.variables:
            leaf = _walk(input_type, variable.field_path)[-1]
            parameters.append(
                {
                    "name": names[variable.field_path],
                    "in": "path",
                    "required": True,
                    "description": f"Binds `{variable.field_path}`.",
                    "schema": {**self._schemas.scalar(leaf), "minLength": 1}
                    if leaf.type == FieldDescriptor.TYPE_STRING
                    else self._schemas.scalar(leaf),
                }
            )
        if binding.body != "*":
            body_field = binding.body.split(".")[0] if binding.body else ""
            parameters.extend(self._query(input_type, "", "", path_fields, body_field, 0))
        operation: Schema = {
            "operationId": self.operation_id(binding),
            "tags": [self._service.name],
            "summary": f"{self._service.name}.{method.name}",
            "parameters": parameters,
            **({"security": []} if method.name in UNAUTHENTICATED_RPCS else {}),
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": self._response(binding)}},
                },
                "default": {
                    "description": "An error, with the HTTP status of its gRPC code.",
                    "content": {"application/json": {"schema": ref(STATUS)}},
                },
            },
        }
        if binding.body:
            schema = (
                self._schemas.message(input_type)
                if binding.body == "*"
                else self._schemas.field(_walk(input_type, binding.body)[-1])
            )
            operation["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": schema}},
            }
        return openapi_path(binding.template), binding.http_method.lower(), operation

    def _response(self, binding: Binding) -> Schema:
        if binding.response_body:
            return self._schemas.field(_walk(binding.method.output_type, binding.response_body)[-1])
        return self._schemas.message(binding.method.output_type)

    def _query(
        self,
        descriptor: Descriptor,
        prefix: str,
        json_prefix: str,
        path_fields: set[str],
        body_field: str,
        depth: int,
    ) -> list[Schema]:
        """One parameter per field the path and the body leave unbound, as the transcoder reads."""
        found: list[Schema] = []
        for field in descriptor.fields:
            path = prefix + field.name
            if (not prefix and field.name == body_field) or path in path_fields:
                continue
            message = field.message_type
            if message is not None and message.GetOptions().map_entry:
                continue
            if _in_url(field):
                # A repeated field is repeated keys; a singular one is never null in a URL.
                schema = (
                    self._schemas.field(field) if field.is_repeated else self._schemas.scalar(field)
                )
                found.append(
                    {
                        "name": json_prefix + field.json_name,
                        "in": "query",
                        "required": False,
                        "schema": schema,
                    }
                )
            elif message is not None and not field.is_repeated and depth < 3:
                found.extend(
                    self._query(
                        message,
                        path + ".",
                        json_prefix + field.json_name + ".",
                        path_fields,
                        body_field,
                        depth + 1,
                    )
                )
        return found


def canonical(service: Service) -> Fragment:
    """The operations of every HttpRule binding of ``service``, with the schemas they name."""
    schemas = Schemas()
    paths: dict[str, dict[str, Schema]] = {}
    operations = _Canonical(service, schemas)
    for binding in bindings(service):
        path, method, operation = operations.operation(binding)
        paths.setdefault(path, {})[method] = operation
    return Fragment(paths, schemas.components)


def document(fragments: list[Fragment]) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document of the gateway's families."""
    paths: dict[str, dict[str, Schema]] = {}
    schemas: dict[str, Schema] = {}
    for fragment in fragments:
        for path, operations in fragment.paths.items():
            taken = set(operations) & set(paths.get(path, {}))
            assert not taken, f"{path} {taken} is described twice"
            paths.setdefault(path, {}).update(operations)
        schemas.update(fragment.schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tokengrpc HTTP gateway",
            "version": "1",
            "description": "Bearer tokens over HTTP: the canonical routes transcoded from "
            "the gRPC service's `google.api.http` annotations, and the legacy route families.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token's plaintext, `<id>|<secret>`.",
                }
            },
        },
        "security": [{"bearer": []}],
    }
