"""What the commands print on stdout: their answers and serve's start-up lines.

Scripts read these lines (``grpc listening on …``, a plaintext, a table), so
they go to stdout unformatted and flushed at once; every other message goes
through ``logging`` on stderr.
"""

from __future__ import annotations

import datetime as dt
import logging

from google.protobuf import timestamp_pb2

from tokengrpc.v1 import tokens_pb2 as pb

log = logging.getLogger("tokengrpc")

LIST_COLUMNS = "ID\tSTATUS\tOWNER\tNAME\tSCOPES\tEXPIRES\tLAST USED\tUSES"
EVENT_COLUMNS = "TIME\tACTION\tTOKEN\tACTOR\tACTOR OWNER\tCLIENT\tFIELDS\tREASON\tDETAIL"


def say(line: str) -> None:
    print(line, flush=True)


def warn_all(notices: list[str]) -> None:
    """The store's start-up notices (a key file others can read, say), as warnings."""
    for notice in notices:
        log.warning("%s", notice)


def _time(token: pb.Token, field: str) -> str:
    if not token.HasField(field):  # type: ignore[arg-type]
        return "-"
    stamp: timestamp_pb2.Timestamp = getattr(token, field)
    return stamp.ToDatetime(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def token_row(token: pb.Token) -> str:
    """One line of ``token list``, in ``LIST_COLUMNS``'s columns."""
    status = pb.TokenStatus.Name(token.status).removeprefix("TOKEN_STATUS_").lower()
    owner = token.owner or "(service)"
    return (
        f"{token.id}\t{status}\t{owner}\t{token.name}\t{' '.join(token.scopes)}\t"
        f"{_time(token, 'expire_time')}\t{_time(token, 'last_use_time')}\t{token.usage_count}"
    )


def event_row(event: pb.TokenEvent) -> str:
    """One line of ``token events``, in ``EVENT_COLUMNS``'s columns."""
    when = event.event_time.ToDatetime(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    action = pb.TokenEventAction.Name(event.action).removeprefix("TOKEN_EVENT_ACTION_")
    return (
        f"{when}\t{action.lower()}\t{event.token_id}\t{event.actor_token_id}\t"
        f"{event.actor_owner or '-'}\t{event.client_ip or '-'}\t"
        f"{','.join(event.changed_fields) or '-'}\t{event.reason or '-'}\t{event.detail or '-'}"
    )
