"""proto3 JSON out, with unpopulated fields emitted as grpc-gateway v2 does.

``MessageToDict`` already emits unpopulated scalars and lists; protojson's
EmitUnpopulated also writes unset message fields as ``null``, so we add those.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

_WELL_KNOWN_PACKAGE = "google.protobuf"


def to_json(message: Message) -> Any:
    value = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    if isinstance(value, dict):
        _add_nulls(message.DESCRIPTOR, value)
    return value


def _add_nulls(descriptor: Any, value: dict[str, Any]) -> None:
    if descriptor.full_name.startswith(_WELL_KNOWN_PACKAGE):
        return  # their JSON form is not an object of fields
    for field in descriptor.fields:
        if field.message_type is None or field.containing_oneof is not None:
            continue
        if field.is_repeated:
            if field.message_type.GetOptions().map_entry:
                continue
            for item in value.get(field.json_name, []):
                if isinstance(item, dict):
                    _add_nulls(field.message_type, item)
            continue
        nested = value.get(field.json_name)
        if nested is None:
            value[field.json_name] = None
        elif isinstance(nested, dict):
            _add_nulls(field.message_type, nested)
