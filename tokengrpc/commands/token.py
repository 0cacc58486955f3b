"""``tokengrpc token …``: the operator's way in without a token, straight to the store.

Each action is one ``TokenManager`` call as the operator (actor 0); a refusal
is one line on stderr and exit 1, and nothing is printed on stdout before
the store has answered.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
from typing import TypeVar

from google.protobuf import duration_pb2, timestamp_pb2

from tokengrpc.auth import Caller, operator
from tokengrpc.commands.printing import (
    EVENT_COLUMNS,
    LIST_COLUMNS,
    event_row,
    say,
    token_row,
    warn_all,
)
from tokengrpc.config import TOKEN, Settings, add_flags, secrets_epilog
from tokengrpc.durations import parse_duration
from tokengrpc.errors import DomainError
from tokengrpc.server import Core
from tokengrpc.store import REASON_CLI
from tokengrpc.tokens import TokenManager
from tokengrpc.v1 import tokens_pb2 as pb

log = logging.getLogger("tokengrpc")

_ACTIONS = {
    "create": "create a token and print its plaintext",
    "list": "list tokens",
    "revoke": "revoke a token",
    "rotate": "give a token a new secret and print it",
    "events": "list the audit events, newest first",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    made = {
        name: actions.add_parser(
            name,
            help=text,
            description=text,
            epilog=secrets_epilog(TOKEN),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for name, text in _ACTIONS.items()
    }
    for action in made.values():
        add_flags(action, TOKEN)

    create = made["create"]
    create.add_argument("--name", required=True, help="what the token is for")
    who = create.add_mutually_exclusive_group(required=True)
    who.add_argument("--owner", help="the subject the token belongs to")
    who.add_argument("--service", action="store_true", help="a service token (no owner)")
    create.add_argument(
        "--scope", action="append", default=[], metavar="SCOPE", help="repeat for several"
    )
    create.add_argument(
        "--expires", metavar="TIME", help="RFC 3339 time, e.g. 2030-01-01T00:00:00Z (default never)"
    )
    create.add_argument(
        "--not-before",
        metavar="TIME",
        help="RFC 3339 time before which the token authenticates nothing (default at once)",
    )
    create.add_argument(
        "--allowed-ip", action="append", default=[], metavar="CIDR", help="address or CIDR range"
    )

    whose = made["list"].add_mutually_exclusive_group()
    whose.add_argument("--owner", help="whose tokens (default admin)")
    whose.add_argument("--service", action="store_true", help="list service tokens")
    made["list"].add_argument("--all", action="store_true", help="include revoked tokens")

    for name in ("revoke", "rotate"):
        made[name].add_argument("target", help="a token id, or a service token's name")
    made["rotate"].add_argument(
        "--grace",
        type=duration,
        default=duration_pb2.Duration(),
        metavar="DURATION",
        help="how long the old secret keeps working, e.g. 30s, 15m, 2h (default 0, at most 7d)",
    )

    made["events"].add_argument(
        "token_id", nargs="?", type=int, metavar="ID", help="only this token's events"
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(run(args, settings))


async def run(args: argparse.Namespace, settings: Settings) -> int:
    core = await Core.open(settings, bootstrap=False, create=False)
    warn_all(core.notices)
    try:
        await _ACT[args.action](core.manager, args)
    except DomainError as error:
        log.error("%s", error.message)
        return 1
    finally:
        await core.close()
    return 0


async def _create(manager: TokenManager, args: argparse.Namespace) -> None:
    request = pb.CreateTokenRequest(
        name=args.name,
        owner=args.owner or "",
        scopes=args.scope,
        service_token=args.service,
        allowed_ips=args.allowed_ip,
    )
    if args.expires:
        request.expire_time.CopyFrom(timestamp(args.expires))
    if args.not_before:
        request.not_before.CopyFrom(timestamp(args.not_before))
    created = await manager.create_token(_operator(), request)
    say(created.plaintext)


async def _list(manager: TokenManager, args: argparse.Namespace) -> None:
    """Every page first, then the table: a refusal prints no header."""
    page_token, rows = "", list[pb.Token]()
    while True:
        page = await manager.list_tokens(
            _operator(),
            pb.ListTokensRequest(
                owner=args.owner or "",
                service_tokens=args.service,
                show_revoked=args.all,
                page_size=1000,
                page_token=page_token,
            ),
        )
        rows.extend(page.tokens)
        page_token = page.next_page_token
        if not page_token:
            break
    say(LIST_COLUMNS)
    for token in rows:
        say(token_row(token))


async def _rotate(manager: TokenManager, args: argparse.Namespace) -> None:
    request = _select(pb.RotateTokenRequest(grace_period=args.grace), args.target)
    say((await manager.rotate_token(_operator(), request)).plaintext)


async def _revoke(manager: TokenManager, args: argparse.Namespace) -> None:
    revoked = await manager.revoke_token(_operator(), _select(pb.RevokeTokenRequest(), args.target))
    say(f"revoked token {revoked.token.id} ({revoked.token.name})")


async def _events(manager: TokenManager, args: argparse.Namespace) -> None:
    """Every event (of one token, or all), newest first, one line each, page by page.

    The header follows the first page, so a refusal (a token that does not
    exist) is the only output.
    """
    page_token, first = "", True
    while True:
        page = await manager.list_token_events(
            _operator(),
            pb.ListTokenEventsRequest(
                token_id=args.token_id or 0, page_size=1000, page_token=page_token
            ),
        )
        if first:
            say(EVENT_COLUMNS)
            first = False
        for event in page.events:
            say(event_row(event))
        page_token = page.next_page_token
        if not page_token:
            return


def _operator() -> Caller:
    """The caller of every action here: its events' reason is ``cli``."""
    return operator(reason=REASON_CLI)


_ACT = {
    "create": _create,
    "list": _list,
    "rotate": _rotate,
    "revoke": _revoke,
    "events": _events,
}

Selecting = TypeVar("Selecting", pb.RevokeTokenRequest, pb.RotateTokenRequest)


def _select(message: Selecting, target: str) -> Selecting:
    """``message`` picking a token by id (ASCII digits) or a service token by name."""
    if target.isascii() and target.isdigit():
        message.id = int(target)
    else:
        message.name = target
    return message


def timestamp(text: str) -> timestamp_pb2.Timestamp:
    """An RFC 3339 time (``Z`` or an offset; none is UTC)."""
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def duration(text: str) -> duration_pb2.Duration:
    """A grace period for ``token rotate``, as every duration is written (``durations``)."""
    try:
        micros = parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    result = duration_pb2.Duration()
    result.FromMicroseconds(micros)
    return result
