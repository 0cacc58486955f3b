"""The canonical REST surface, generated from the ``google.api.http`` rules.

At start-up every RPC's HttpRule (and its ``additional_bindings``) becomes a
route; adding an annotated RPC needs no code here. Per request: path
variables, then the body (``*`` or one field), then the query string for
every field left unbound build the request message; the response (or its
``response_body`` field) goes back as proto3 JSON. Errors are a
``google.rpc.Status`` in JSON with the status from ``gateway.status``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.api import annotations_pb2, http_pb2
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message
from google.rpc import status_pb2

from gateway import strconv
from gateway.authfirst import UNAUTHENTICATED_RPCS
from gateway.family import Route
from gateway.http import BadInput, Request, Response, json_response
from gateway.names import shown
from gateway.pattern import Template, compile_template
from gateway.protojson import to_json
from gateway.router import Endpoint
from gateway.status import http_status
from gateway.upstream import Upstream

log = logging.getLogger(__name__)

_HTTP_METHODS = ("get", "put", "post", "delete", "patch")
# Well-known types whose JSON form is a string, so a query parameter can carry them.
_STRING_FORM = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
}
_WRAPPERS = {
    f"google.protobuf.{name}Value": name
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
}
#: Integer kinds by how Go parses them from a URL: (signed, bits).
_INTEGERS = {
    FieldDescriptor.TYPE_INT32: (True, 32),
    FieldDescriptor.TYPE_SINT32: (True, 32),
    FieldDescriptor.TYPE_SFIXED32: (True, 32),
    FieldDescriptor.TYPE_INT64: (True, 64),
    FieldDescriptor.TYPE_SINT64: (True, 64),
    FieldDescriptor.TYPE_SFIXED64: (True, 64),
    FieldDescriptor.TYPE_UINT32: (False, 32),
    FieldDescriptor.TYPE_FIXED32: (False, 32),
    FieldDescriptor.TYPE_UINT64: (False, 64),
    FieldDescriptor.TYPE_FIXED64: (False, 64),
}
_FLOATS = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}
_PARSE_CHAIN = re.compile(r"Failed to parse (\w+) field")
_PARSE_AT = re.compile(r" at [A-Za-z0-9_]+\.([A-Za-z0-9_.]+?)\.*$")
_NO_FIELD = re.compile(r'has no field named "(.*)" at "')
_SNAKE = re.compile(r"_([a-z0-9])")
#: Response fields the service fills only when a request field is set. An
#: int64 has no presence in proto3 (and ``optional`` now would break the
#: API), so without that request field the JSON leaves the field out rather
#: than show a count of "0" that was never made.
FILLED_ONLY_WITH = {"tokengrpc.v1.ListTokensResponse.total_size": "page"}


class BadRequest(BadInput):
    """A request that cannot become a message; the text names the culprit."""


@dataclass(frozen=True, slots=True)
class Binding:
    method: MethodDescriptor
    http_method: str
    template: Template
    body: str
    response_body: str


def bindings(service: ServiceDescriptor) -> Iterator[Binding]:
    for method in service.methods:
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            continue
        rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
        for each in (rule, *rule.additional_bindings):
            kind = each.WhichOneof("pattern")
            if kind is None:
                continue
            if kind == "custom":
                verb, path = each.custom.kind.upper(), each.custom.path
            else:
                verb, path = kind.upper(), getattr(each, kind)
            yield Binding(method, verb, compile_template(path), each.body, each.response_body)


def error_response(
    code: grpc.StatusCode,
    message: str,
    status: status_pb2.Status | None = None,
    *,
    http: int | None = None,
) -> Response:
    """A google.rpc.Status as JSON, with the HTTP status of its code unless given."""
    status = status or status_pb2.Status(code=code.value[0], message=message)
    content = json_format.MessageToDict(status, always_print_fields_with_no_presence=True)
    return json_response(http or http_status(code), content)


def _parse_error_text(error: json_format.ParseError) -> str:
    """ParseError quotes the value it could not take; say which field instead."""
    text = str(error)
    unknown = _NO_FIELD.search(text)
    if unknown is not None:
        return f"unknown field {shown(unknown.group(1))} in the body"
    chain = _PARSE_CHAIN.findall(text)
    at = _PARSE_AT.search(text)
    path = ".".join(chain) if chain else at.group(1) if at is not None else ""
    if path:
        return f"field {shown(path)} has a value of the wrong type or out of range"
    return "the request does not fit the call's message"


def _field(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    found = descriptor.fields_by_name.get(name)
    if found is not None:
        return found
    return next((f for f in descriptor.fields if f.json_name == name), None)


def _resolve(descriptor: Descriptor, path: str) -> list[FieldDescriptor]:
    """The fields along a dotted path (proto or JSON names); BadRequest if unknown."""
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for part in path.split("."):
        found = _field(current, part) if current is not None else None
        if found is None:
            raise BadRequest(f"unknown field {shown(path)}")
        fields.append(found)
        current = found.message_type
    return fields


def _scalar(field: FieldDescriptor, text: str, name: str) -> Any:
    """A query or path string in the JSON form ParseDict expects for this field.

    Numbers and booleans parse as grpc-gateway parses them (Go's strconv).
    """
    kind = field.type
    message_type = field.message_type
    if message_type is not None:
        full = message_type.full_name
        if full == "google.protobuf.FieldMask":
            return _camel_mask(text)
        if full in _STRING_FORM:
            return text
        if full in _WRAPPERS:
            return _scalar(message_type.fields_by_name["value"], text, name)
        raise BadRequest(f"{shown(name)} is a message and cannot be set from the URL")
    if kind == FieldDescriptor.TYPE_BOOL:
        flag = strconv.parse_bool(text)
        if flag is None:
            raise BadRequest(f"{shown(name)} must be true or false")
        return flag
    if kind in _INTEGERS:
        signed, bits = _INTEGERS[kind]
        number = strconv.parse_int(text, bits) if signed else strconv.parse_uint(text, bits)
        if number is None:
            kind_text = "an integer" if signed else "an unsigned integer"
            raise BadRequest(f"{shown(name)} must be {kind_text} ({bits}-bit, decimal digits)")
        return number
    if kind in _FLOATS:
        real = strconv.parse_float(text)
        if real is None:
            raise BadRequest(f"{shown(name)} must be a number")
        return real
    if kind == FieldDescriptor.TYPE_ENUM:
        if field.enum_type is not None and text in field.enum_type.values_by_name:
            return text
        number = strconv.parse_int(text, 32)
        if number is None:
            raise BadRequest(f"{shown(name)} must be one of the enum's names or numbers")
        return number
    return text  # strings, bytes (base64)


def _camel_mask(text: str) -> str:
    """A FieldMask's JSON form has lowerCamel paths; grpc-gateway clients also
    send the proto (snake_case) names, which grpc-gateway accepts too."""
    return ",".join(_SNAKE.sub(lambda m: m.group(1).upper(), p) for p in text.split(","))


def _place(target: dict[str, Any], fields: list[FieldDescriptor], value: Any) -> None:
    for field in fields[:-1]:
        nested = target.setdefault(field.name, {})
        if not isinstance(nested, dict):
            raise BadRequest(f"{shown(field.name)} is set twice")
        target = nested
    target[fields[-1].name] = value


def _mask_paths(descriptor: Descriptor, body: dict[str, Any], prefix: str = "") -> list[str]:
    """Field paths present in a PATCH body, for an unset ``update_mask``.

    In the JSON form a FieldMask is written with lowerCamel names.
    """
    paths = []
    for key, value in body.items():
        field = _field(descriptor, key)
        if field is None:
            raise BadRequest(f"unknown field {shown(prefix + key)} in the body")
        path = prefix + field.json_name
        message = field.message_type
        if (
            isinstance(value, dict)
            and message is not None
            and not field.is_repeated
            and not message.full_name.startswith("google.protobuf.")
        ):
            paths.extend(_mask_paths(message, value, path + "."))
        else:
            paths.append(path)
    return paths


def check_named_once(descriptor: Descriptor, body: dict[str, Any], prefix: str = "") -> None:
    """BadRequest if one object of the body names a field twice (proto and JSON names).

    Repeats of one exact key were refused by the parser; this walks the body
    along the message once, so it is linear in the body's size.
    """
    seen: set[str] = set()
    for key, value in body.items():
        field = _field(descriptor, key)
        if field is None:
            continue  # unknown: ParseDict names it
        path = prefix + field.name
        if field.name in seen:
            raise BadRequest(f"field {shown(path)} is given more than once in the body")
        seen.add(field.name)
        message = field.message_type
        if message is None or message.full_name.startswith("google.protobuf."):
            continue
        if message.GetOptions().map_entry:
            value_field = message.fields_by_name["value"]
            if value_field.message_type is not None and isinstance(value, dict):
                for item in value.values():
                    if isinstance(item, dict):
                        check_named_once(value_field.message_type, item, path + ".")
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    check_named_once(message, item, path + ".")
        elif isinstance(value, dict):
            check_named_once(message, value, path + ".")


class Transcoder:
    """Turns each HttpRule binding of a service into a route.

    An endpoint raises what goes wrong (BadInput, RpcFailure): the canonical
    family renders it as a ``google.rpc.Status`` (``gateway.canonical``).
    """

    def __init__(self, upstream: Upstream, service: ServiceDescriptor) -> None:
        self._upstream = upstream
        self._service = service

    def routes(self) -> Iterator[Route]:
        for binding in bindings(self._service):
            needs_token = binding.method.name not in UNAUTHENTICATED_RPCS
            yield Route(binding.http_method, binding.template, self._endpoint(binding), needs_token)

    def _endpoint(self, binding: Binding) -> Endpoint:
        request_class = message_factory.GetMessageClass(binding.method.input_type)
        response_class = message_factory.GetMessageClass(binding.method.output_type)
        call = self._upstream.channel.unary_unary(
            f"/{self._service.full_name}/{binding.method.name}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        response_key = ""
        if binding.response_body:
            response_key = _resolve(binding.method.output_type, binding.response_body)[-1].json_name
        conditional = [
            (field.json_name, FILLED_ONLY_WITH[field.full_name])
            for field in binding.method.output_type.fields
            if field.full_name in FILLED_ONLY_WITH
        ]
        upstream = self._upstream

        async def endpoint(request: Request, variables: dict[str, str]) -> Response:
            message = await decode_request(binding, request_class, request, variables)
            reply = await upstream.call(call, message, request)
            content = to_json(reply)
            for key, when in conditional:
                if not getattr(message, when):
                    content.pop(key, None)
            return json_response(200, content[response_key] if response_key else content)

        return endpoint


async def decode_request(
    binding: Binding,
    request_class: type[Message],
    request: Request,
    variables: dict[str, str],
) -> Message:
    """The request message an HTTP request stands for; BadInput if none."""
    descriptor = binding.method.input_type
    payload: dict[str, Any] = {}
    bound: set[str] = set()
    # As protojson: a field named twice in one object (even once by its proto
    # name and once by its JSON name) is refused, so no two readers of one
    # body (a proxy, this gateway) can take different values from it.
    if binding.body == "*":
        payload = await request.json_object(allow_empty=True, unique_keys=True)
        check_named_once(descriptor, payload)
    elif binding.body:
        body_field = _resolve(descriptor, binding.body)[-1]
        value = await request.json(allow_empty=True, unique_keys=True)
        if value is not None:
            payload[body_field.name] = value
            check_named_once(descriptor, {body_field.name: value})
        bound.add(body_field.name)

    query: dict[str, list[str]] = {}
    for key, value in request.query():
        query.setdefault(key, []).append(value)
    for key, values in query.items():
        if binding.body == "*":
            raise BadRequest(f"unknown query parameter {shown(key)}: this call takes a JSON body")
        fields = _resolve(descriptor, key)
        if fields[0].name in bound or key in variables:
            raise BadRequest(f"{shown(key)} is already bound by the path or the body")
        leaf = fields[-1]
        if leaf.is_repeated:
            converted: Any = [_scalar(leaf, v, key) for v in values]
        elif len(values) > 1:
            raise BadRequest(f"{shown(key)} is given more than once but takes one value")
        else:
            converted = _scalar(leaf, values[0], key)
        _place(payload, fields, converted)

    mask = descriptor.fields_by_name.get("update_mask")
    mask_type = mask.message_type if mask is not None else None
    body_type = (
        _resolve(descriptor, binding.body)[-1].message_type
        if binding.body not in ("", "*")
        else None
    )
    if (
        request.method == "PATCH"
        and body_type is not None
        and mask_type is not None
        and mask_type.full_name == "google.protobuf.FieldMask"
        and "update_mask" not in query
        and "updateMask" not in query
        and isinstance(payload.get(binding.body), dict)
    ):
        # As grpc-gateway does: a PATCH without a mask changes what the body names.
        payload["update_mask"] = ",".join(_mask_paths(body_type, payload[binding.body]))

    for path, text in variables.items():
        fields = _resolve(descriptor, path)
        _place(payload, fields, _scalar(fields[-1], text, path))

    message = request_class()
    try:
        json_format.ParseDict(payload, message)
    except json_format.ParseError as error:
        raise BadRequest(_parse_error_text(error)) from None
    return message
