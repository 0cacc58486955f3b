"""A webhook's body: the event and the token as ``/v1`` shows them (proto3 JSON
with unpopulated fields, unset messages as ``null``), never a secret."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from tokengrpc.convert import event_fields, token_fields
from tokengrpc.store import EventAction, Outgoing
from tokengrpc.v1 import tokens_pb2

TYPES = {
    EventAction.CREATED: "token.created",
    EventAction.UPDATED: "token.updated",
    EventAction.ROTATED: "token.rotated",
    EventAction.REVOKED: "token.revoked",
    EventAction.VALUE_READ: "token.value_read",
    EventAction.EXPIRING: "token.expiring",
    EventAction.EXPIRED: "token.expired",
}


def message_id(outgoing: Outgoing) -> str:
    """``webhook-id``: the event's, so a receiver sees the same one on every try."""
    return f"evt_{outgoing.event.id}"


def body(outgoing: Outgoing, max_secret_age: int | None) -> bytes:
    """``{"type", "timestamp", "data": {"event", "token"}}``; the token is judged
    (its status, its effective expiry) at the event's time, as ``/v1`` answered
    right after it."""
    event = _shown(tokens_pb2.TokenEvent(**event_fields(outgoing.event)))
    fields = token_fields(outgoing.token, outgoing.event.event_time, max_secret_age)
    token = _shown(tokens_pb2.Token(**fields))
    document = {
        "type": TYPES[outgoing.event.action],
        "timestamp": event["eventTime"],
        "data": {"event": event, "token": token},
    }
    return json.dumps(document, separators=(",", ":")).encode()


def _shown(message: Message) -> dict[str, Any]:
    """As the gateway writes it (``gateway/protojson.py``): these messages hold
    no nested message but well-known ones, so only top-level nulls are added."""
    value = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    for field in message.DESCRIPTOR.fields:
        if field.message_type is not None and not field.is_repeated:
            value.setdefault(field.json_name, None)
    return value
