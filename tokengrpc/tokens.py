"""The token operations: validate, apply the rules, touch the store.

Shared by the gRPC servicer and the command line; both hand in a Caller and a
request message and get a response message back, or a DomainError.
"""

from __future__ import annotations

import dataclasses

from tokengrpc import plaintext, rules
from tokengrpc.addresses import parse_address
from tokengrpc.auth import Authenticator, Caller
from tokengrpc.convert import duration_micros, event_fields, micros, token_fields, token_init
from tokengrpc.durations import format_duration
from tokengrpc.errors import AlreadyExists, FailedPrecondition, NotFound, PermissionDenied
from tokengrpc.lifetime import effective_expiry
from tokengrpc.pagetokens import (
    EVENT_PAGE_TOKEN_LABEL,
    NAME_PAGE_TOKEN_LABEL,
    PAGE_TOKEN_LABEL,
    decode_name_page_token,
    decode_page_token,
    encode_name_page_token,
    encode_page_token,
)
from tokengrpc.rules import Violations
from tokengrpc.sealing import Sealer
from tokengrpc.store import (
    REASON_BY_VALUE,
    Actor,
    EventQuery,
    ListQuery,
    NameTaken,
    NewToken,
    Rotation,
    TokenChanges,
    TokenRecord,
    TokenStore,
)
from tokengrpc.store.base import SERVICE_OWNER
from tokengrpc.v1 import tokens_pb2 as pb

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: The one ``order_by`` besides the default (AIP-132): service tokens by name.
ORDER_BY_NAME = "name"
UPDATABLE = ("name", "scopes", "active", "expire_time", "allowed_ips", "not_before")
_TOKEN_FIELDS = frozenset(pb.Token.DESCRIPTOR.fields_by_name)
#: More than the updatable fields, so repeats are tolerated; a bound on the work.
MAX_MASK_PATHS = 16


#: GetToken, RevokeToken and GetTokenValue requests all pick a token alike.
_Selecting = (
    pb.GetTokenRequest | pb.RevokeTokenRequest | pb.GetTokenValueRequest | pb.RotateTokenRequest
)


def _require(caller: Caller, scope: str, action: str) -> None:
    if not caller.holds(scope):
        raise PermissionDenied(f"{action} needs the {scope!r} scope")


def _time(
    message: pb.CreateTokenRequest | pb.Token, name: str, field: str, problems: Violations
) -> int | None:
    """A timestamp field's microseconds; None if unset (or invalid, then noted)."""
    if not message.HasField(name):  # type: ignore[arg-type]
        return None
    value = micros(getattr(message, name))
    if value is None:
        problems.add(field, "is not a valid timestamp")
    return value


def _expiry(
    message: pb.CreateTokenRequest | pb.Token, field: str, now: int, problems: Violations
) -> int | None:
    value = _time(message, "expire_time", field, problems)
    rules.check_expiry(value, now, field, problems)
    return value


def _echoed(requested: int | None, reported: int | None) -> bool:
    """Whether ``requested`` is the expiry a listing reported, sent back as it
    came (a read-modify-write client): to the microsecond, or cut to the
    millisecond or second the legacy families show."""
    if requested is None or reported is None:
        return False
    return requested in (reported, reported - reported % 1000, reported - reported % 1_000_000)


#: Compared against when a revoked-by-value token does not exist, so an
#: unknown token costs the same lookup and compare as a known one.
_NO_HASH = bytes(32)


class TokenManager:
    def __init__(
        self,
        store: TokenStore,
        authenticator: Authenticator,
        sealer: Sealer,
        prefix: str = "tgr_",
        max_secret_age: int | None = None,
    ) -> None:
        self._store = store
        self._auth = authenticator
        self._sealer = sealer
        self._prefix = prefix
        self._page_key = sealer.derive(PAGE_TOKEN_LABEL)
        self._event_page_key = sealer.derive(EVENT_PAGE_TOKEN_LABEL)
        self._name_page_key = sealer.derive(NAME_PAGE_TOKEN_LABEL)
        #: Microseconds a secret authenticates after it was issued (``lifetime``).
        self._max_age = max_secret_age
        self._max_age_text = "" if max_secret_age is None else format_duration(max_secret_age)

    def _token(self, record: TokenRecord, now: int) -> pb.Token:
        """The ``token`` of a response, with the effective expiry."""
        return token_init(record, now, self._max_age)

    def _secret_end(self, secret_time: int) -> int | None:
        """When a secret issued at ``secret_time`` stops, under the maximum age."""
        return None if self._max_age is None else secret_time + self._max_age

    async def create_token(
        self, caller: Caller, request: pb.CreateTokenRequest, *, first: bool = False
    ) -> pb.CreateTokenResponse:
        """``first``: only into an empty store (the bootstrap); else ``StoreNotEmpty``."""
        _require(caller, rules.WRITE, "creating a token")
        now = caller.now
        problems = Violations()
        name = rules.clean_name(request.name, "name", problems)
        owner = rules.clean_owner(request.owner, "owner", problems)
        if request.service_token:
            _require(caller, rules.ADMIN, "creating a service token")
            if owner:
                problems.add("owner", "must be empty for a service token")
            owner = SERVICE_OWNER
        else:
            owner = owner or caller.owner
            if owner != caller.owner:
                _require(caller, rules.ADMIN, "creating a token for another owner")
            if owner == SERVICE_OWNER:
                _require(caller, rules.ADMIN, "creating a token as a service token")
                # An admin service token has no owner to lend: without one named,
                # the token would be neither personal nor a service token.
                problems.add(
                    "owner", "name the owner of a personal token (or set service_token)", "REQUIRED"
                )
        scopes = rules.clean_scopes(request.scopes, "scopes", problems)
        if request.inherit_caller_scopes:
            if scopes:
                problems.add("scopes", "must be empty when inherit_caller_scopes is set")
            scopes = rules.inherited_scopes(caller.scopes)
        expire_time = _expiry(request, "expire_time", now, problems)
        secret_end = self._secret_end(now)
        rules.check_secret_age(expire_time, secret_end, self._max_age_text, "expire_time", problems)
        not_before = _time(request, "not_before", "not_before", problems)
        ends = [end for end in (expire_time, secret_end) if end is not None]
        rules.check_not_before(not_before, min(ends, default=None), "not_before", problems)
        allowed_ips = rules.clean_allowed_ips(request.allowed_ips, "allowed_ips", problems)
        problems.raise_if_any()
        rules.check_grant(scopes, caller.scopes)

        secret = plaintext.new_secret(self._prefix)
        secret_hash = plaintext.hash_secret(secret)
        new = NewToken(
            owner=owner,
            name=name,
            secret_hash=secret_hash,
            scopes=scopes,
            active=request.active if request.HasField("active") else True,
            expire_time=expire_time,
            allowed_ips=allowed_ips,
            now=now,
            sealed_value=self._sealer.seal(secret, secret_hash) if request.service_token else None,
            actor=caller.actor,
            not_before=not_before,
            only_into_empty_store=first,
        )
        try:
            record = await self._store.insert(new)
        except NameTaken:
            raise AlreadyExists("a service token with this name already exists") from None
        return pb.CreateTokenResponse(
            token=self._token(record, now), plaintext=plaintext.join(record.id, secret)
        )

    async def list_tokens(
        self, caller: Caller, request: pb.ListTokensRequest
    ) -> pb.ListTokensResponse:
        problems = Violations()
        if len(request.owner) > rules.MAX_OWNER:
            # No such owner can exist; refused before it is hashed or looked up.
            problems.add("owner", f"must be at most {rules.MAX_OWNER} characters", "TOO_LONG")
            problems.raise_if_any()
        if request.service_tokens:
            _require(caller, rules.ADMIN, "listing service tokens")
            if request.owner:
                problems.add("owner", "must be empty when listing service tokens")
            owner = SERVICE_OWNER
        else:
            owner = request.owner or caller.owner
            if owner != caller.owner:
                _require(caller, rules.ADMIN, "listing another owner's tokens")
        if request.page_size < 0:
            problems.add("page_size", "must not be negative")
        if request.page < 0:
            problems.add("page", "must not be negative")
        if request.page and request.page_token:
            problems.add("page", "give either page or page_token, not both")
        by_name = request.order_by == ORDER_BY_NAME
        if request.order_by and not by_name:
            problems.add("order_by", f"must be empty or {ORDER_BY_NAME}")
        elif by_name and not request.service_tokens:
            # Only service tokens have a name index; an owner's tokens by name
            # would be a sort of all of them on every page.
            problems.add("order_by", f"{ORDER_BY_NAME} is offered for service tokens only")
        elif by_name and request.page:
            problems.add("page", f"is not offered with order_by {ORDER_BY_NAME}")
        after_id, after_name = 0, "" if by_name else None
        if request.page_token:
            found: int | tuple[str, int] | None
            if by_name:
                found = decode_name_page_token(
                    self._name_page_key, request.page_token, owner, request.show_revoked
                )
            else:
                found = decode_page_token(
                    self._page_key, request.page_token, owner, request.show_revoked
                )
            if found is None:
                problems.add("page_token", "is not a page token of this listing")
            elif isinstance(found, tuple):
                after_name, after_id = found
            else:
                after_id = found
        problems.raise_if_any()

        if owner == SERVICE_OWNER and not caller.is_admin:
            # A service token without admin owns nothing it may see.
            return pb.ListTokensResponse()
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        offset = (request.page - 1) * size if request.page > 1 else 0
        query = ListQuery(
            owner=owner,
            include_revoked=request.show_revoked,
            limit=size + 1,
            after_id=after_id,
            offset=offset,
            after_name=after_name,
        )
        records = await self._store.list(query)
        now = caller.now
        response = pb.ListTokensResponse()
        for record in records[:size]:
            response.tokens.add(**token_fields(record, now, self._max_age))
        if len(records) > size:
            last = records[size - 1]
            response.next_page_token = (
                encode_page_token(self._page_key, last.id, owner, request.show_revoked)
                if after_name is None
                else encode_name_page_token(
                    self._name_page_key, last.id, last.name, owner, request.show_revoked
                )
            )
        if request.page:
            response.total_size = await self._store.count(query)
        return response

    async def get_token(self, caller: Caller, request: pb.GetTokenRequest) -> pb.GetTokenResponse:
        record = await self._find(caller, request)
        return pb.GetTokenResponse(token=self._token(record, caller.now))

    async def update_token(
        self, caller: Caller, request: pb.UpdateTokenRequest
    ) -> pb.UpdateTokenResponse:
        _require(caller, rules.WRITE, "updating a token")
        now = caller.now
        problems = Violations()
        token = request.token
        if not request.HasField("token") or token.id <= 0:
            problems.add("token.id", "the id of the token to update is required")
        raw_paths = request.update_mask.paths
        paths: list[str] = []
        if len(raw_paths) > MAX_MASK_PATHS:  # before any per-path work
            problems.add("update_mask", f"must name at most {MAX_MASK_PATHS} paths", "TOO_MANY")
        elif not raw_paths:
            problems.add(
                "update_mask", f"name at least one field to change: {', '.join(UPDATABLE)}"
            )
        else:
            paths = list(dict.fromkeys(raw_paths))
            for index, path in enumerate(raw_paths):
                if path not in UPDATABLE:
                    # Only our own field names are repeated, never a client's string.
                    which = path if path in _TOKEN_FIELDS else f"path {index}"
                    problems.add(
                        "update_mask", f"{which} cannot be updated; use {', '.join(UPDATABLE)}"
                    )
        changes = TokenChanges(
            name=rules.clean_name(token.name, "token.name", problems) if "name" in paths else None,
            scopes=rules.clean_scopes(token.scopes, "token.scopes", problems)
            if "scopes" in paths
            else None,
            active=token.active if "active" in paths else None,
            allowed_ips=rules.clean_allowed_ips(token.allowed_ips, "token.allowed_ips", problems)
            if "allowed_ips" in paths
            else None,
            set_expire_time="expire_time" in paths,
            expire_time=_expiry(token, "token.expire_time", now, problems)
            if "expire_time" in paths
            else None,
            set_not_before="not_before" in paths,
            not_before=_time(token, "not_before", "token.not_before", problems)
            if "not_before" in paths
            else None,
        )
        problems.raise_if_any()
        if changes.scopes is not None:
            rules.check_grant(changes.scopes, caller.scopes)
        record = await self._find_by_id(caller, token.id)
        rules.check_not_stronger(record, caller.scopes, "update")
        if record.revoke_time is not None:
            raise FailedPrecondition("the token is revoked and can no longer be changed")
        changes = self._within_lifetime(record, changes)
        if not changes.fields():
            return pb.UpdateTokenResponse(token=self._token(record, now))  # nothing to store
        try:
            updated = await self._store.update(record.id, changes, now, caller.actor)
        except NameTaken:
            raise AlreadyExists("a service token with this name already exists") from None
        if updated is None:
            raise FailedPrecondition("the token is revoked and can no longer be changed")
        return pb.UpdateTokenResponse(token=self._token(updated, now))

    def _within_lifetime(self, record: TokenRecord, changes: TokenChanges) -> TokenChanges:
        """``changes`` checked against the token's lifetime (its secret's maximum
        age, its not_before), or INVALID_ARGUMENT. The expiry a listing reported,
        sent back unchanged, is no request for a later one: it is dropped, so the
        maximum age's end is never stored as the token's own."""
        problems = Violations()
        secret_end = self._secret_end(record.secret_time)
        if changes.set_expire_time and secret_end is not None:
            reported = effective_expiry(record, self._max_age)
            if reported != record.expire_time and _echoed(changes.expire_time, reported):
                changes = dataclasses.replace(changes, set_expire_time=False, expire_time=None)
            rules.check_secret_age(
                changes.expire_time, secret_end, self._max_age_text, "token.expire_time", problems
            )
        expire_time = changes.expire_time if changes.set_expire_time else record.expire_time
        ends = [end for end in (expire_time, secret_end) if end is not None]
        if changes.set_not_before:
            rules.check_not_before(
                changes.not_before, min(ends, default=None), "token.not_before", problems
            )
        elif changes.set_expire_time and ends and (record.not_before or 0) >= min(ends):
            # The expiry moved to or before the token's not_before: refused on its own field.
            problems.add("token.expire_time", "must be after not_before", "BEFORE_NOT_BEFORE")
        problems.raise_if_any()
        return changes

    async def revoke_token(
        self, caller: Caller, request: pb.RevokeTokenRequest
    ) -> pb.RevokeTokenResponse:
        _require(caller, rules.WRITE, "revoking a token")
        record = await self._find(caller, request)
        if request.caller_owner_only and (record.is_service or record.owner != caller.owner):
            raise NotFound()
        rules.check_not_stronger(record, caller.scopes, "revoke")
        now = caller.now
        revoked = (
            await self._store.revoke(record.id, now, caller.actor)
            if record.revoke_time is None
            else None
        )
        if revoked is None:
            raise NotFound("token not found or already revoked")
        return pb.RevokeTokenResponse(token=self._token(revoked, now))

    async def get_token_value(
        self, caller: Caller, request: pb.GetTokenValueRequest
    ) -> pb.GetTokenValueResponse:
        _require(caller, rules.ADMIN, "reading a token's value")
        record = await self._find(caller, request)
        if not record.is_service or record.sealed_value is None:
            raise FailedPrecondition(
                "only a service token's value can be read back;"
                " a personal token is shown once, at creation"
            )
        if record.revoke_time is not None:
            raise FailedPrecondition("the token is revoked")
        secret = self._sealer.open(record.sealed_value, record.secret_hash)
        if secret is None:
            raise FailedPrecondition("the stored value cannot be decrypted with the configured key")
        # No value without its audit event: should the event fail, so does the read.
        await self._store.record_value_read(record.id, caller.now, caller.actor)
        return pb.GetTokenValueResponse(
            value=plaintext.join(record.id, secret),
            token=self._token(record, caller.now),
        )

    async def introspect_token(
        self, caller: Caller, request: pb.IntrospectTokenRequest
    ) -> pb.IntrospectTokenResponse:
        _require(caller, rules.INTROSPECT, "introspecting a token")
        token, client_ip = request.token, request.client_ip
        address = None
        if not token or client_ip:  # the hot path has neither problem nor address to parse
            problems = Violations()
            if not token:
                problems.add("token", "the token to introspect is required")
            if client_ip:
                address = parse_address(client_ip)
                if address is None:
                    problems.add("client_ip", "is not an IP address")
            problems.raise_if_any()
        found = await self._auth.check(token, address, caller.now, counted=True)
        if found is None:
            return pb.IntrospectTokenResponse(active=False)
        record, replaced = found
        # A replaced secret's own end (its grace) is its expiry, when it comes first.
        grace_end = record.previous_until if replaced else None
        fields = token_init(record, caller.now, self._max_age, grace_end)
        return pb.IntrospectTokenResponse(active=True, token=fields)

    async def rotate_token(
        self, caller: Caller, request: pb.RotateTokenRequest
    ) -> pb.RotateTokenResponse:
        """A new secret; the old one keeps working until ``now + grace_period``."""
        problems = Violations()
        grace = 0
        if request.HasField("grace_period"):
            found = duration_micros(request.grace_period)
            if found is None:
                problems.add("grace_period", "is not a valid duration")
            else:
                rules.check_grace(found, "grace_period", problems)
                grace = found
        problems.raise_if_any()
        if caller.replaced_secret:
            # Else a leaked secret, replaced for that very reason, could rotate
            # its token once more and lock its owner out.
            raise PermissionDenied("a secret replaced by a rotation cannot rotate; use the new one")
        itself = request.WhichOneof("selector") == "id" and request.id == caller.token_id > 0
        if itself:
            # Any token may rotate itself, a service token without admin
            # (which sees no service token, itself included) too.
            record = await self._find_by_id(caller, request.id, itself=True)
        else:
            _require(caller, rules.WRITE, "rotating another token")
            record = await self._find(caller, request)
        rules.check_not_stronger(record, caller.scopes, "rotate")
        if record.revoke_time is not None:
            raise FailedPrecondition("the token is revoked and can no longer be rotated")
        now = caller.now
        secret = plaintext.new_secret(self._prefix)
        secret_hash = plaintext.hash_secret(secret)
        rotation = Rotation(
            secret_hash=secret_hash,
            # Bound to the new hash, in the same write: the value read back is the new one.
            sealed_value=self._sealer.seal(secret, secret_hash) if record.is_service else None,
            previous_until=now + grace if grace > 0 else None,
            now=now,
        )
        rotated = await self._store.rotate(record.id, rotation, caller.actor)
        if rotated is None:
            raise FailedPrecondition("the token is revoked and can no longer be rotated")
        return pb.RotateTokenResponse(
            token=self._token(rotated, now),
            plaintext=plaintext.join(rotated.id, secret),
        )

    async def revoke_token_by_value(
        self, caller: Caller, request: pb.RevokeTokenByValueRequest
    ) -> pb.RevokeTokenByValueResponse:
        """Revoke the token whose plaintext this is, if there is one (RFC 7009).

        The caller need not authenticate: holding the secret is the proof. The
        answer never says whether the token existed (``revoke_by_value`` does
        the work, for leak reports too).
        """
        if not request.token:
            problems = Violations()
            problems.add("token", "the token to revoke is required", "REQUIRED")
            problems.raise_if_any()
        actor = dataclasses.replace(caller.actor, reason=REASON_BY_VALUE)
        await self.revoke_by_value(request.token, caller.now, actor)
        return pb.RevokeTokenByValueResponse()

    async def revoke_by_value(self, token: str, now: int, actor: Actor) -> bool:
        """Revoke the token whose plaintext this is, or end the grace of the
        replaced secret it is; whether it did either (a leak report's label).

        A well-formed unknown token costs the same lookup and hash compares
        as a known one; only a real revocation adds its write.
        """
        parsed = plaintext.parse(token)
        if parsed is None:
            return False
        record = await self._store.get(parsed.id)
        current = plaintext.secret_matches(parsed, record.secret_hash if record else _NO_HASH)
        previous_hash = record.previous_hash if record else None
        previous = plaintext.secret_matches(parsed, previous_hash or _NO_HASH)
        if record is None or record.revoke_time is not None:
            return False
        if current:
            return await self._store.revoke(record.id, now, actor) is not None
        if previous and previous_hash is not None and (record.previous_until or 0) > now:
            # A replaced secret speaks only for itself: it ends its own grace,
            # never the token and the secret that replaced it (else whoever
            # holds the leaked old secret could knock out the rotated token).
            return await self._store.end_grace(record.id, previous_hash, now, actor) is not None
        return False

    async def list_token_events(
        self, caller: Caller, request: pb.ListTokenEventsRequest
    ) -> pb.ListTokenEventsResponse:
        """Newest first; ``admin`` sees every event, others those of their owner's tokens."""
        problems = Violations()
        if request.page_size < 0:
            problems.add("page_size", "must not be negative")
        if request.token_id < 0:
            problems.add("token_id", "must not be negative")
        owner = None if caller.is_admin else caller.owner
        listing = f"{'*' if owner is None else 'owner:' + owner}/{request.token_id}"
        before_id = 0
        if request.page_token:
            found = decode_page_token(self._event_page_key, request.page_token, listing, False)
            if found is None:
                problems.add("page_token", "is not a page token of this listing")
            else:
                before_id = found
        problems.raise_if_any()
        if request.token_id:
            await self._find_by_id(caller, request.token_id)  # NOT_FOUND unless visible
        if owner == SERVICE_OWNER:
            # A service token without admin owns nothing it may see.
            return pb.ListTokenEventsResponse()
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        events = await self._store.list_events(
            EventQuery(
                limit=size + 1,
                owner=owner,
                token_id=request.token_id or None,
                before_id=before_id,
            )
        )
        response = pb.ListTokenEventsResponse()
        for event in events[:size]:
            shown = rules.actor_shown(caller.owner, caller.is_admin, event.actor_owner)
            response.events.add(**event_fields(event, actor_shown=shown))
        if len(events) > size:
            response.next_page_token = encode_page_token(
                self._event_page_key, events[size - 1].id, listing, False
            )
        return response

    async def _find(self, caller: Caller, request: _Selecting) -> TokenRecord:
        which = request.WhichOneof("selector")
        if which == "id":
            return await self._find_by_id(caller, request.id)
        if which == "name":
            # Names select service tokens, which only admins manage; checked
            # before the lookup, so it says nothing about whether one exists.
            _require(caller, rules.ADMIN, "selecting a token by name (a service token)")
        problems = Violations()
        if which is None or not request.name.strip():
            field = "name" if which == "name" else "id"
            problems.add(field, "give the id of a token or the name of a service token", "REQUIRED")
            problems.raise_if_any()
        name = request.name.strip()
        if len(name) > rules.MAX_NAME:
            raise NotFound()  # no token has such a name; nothing huge reaches the store
        record = await self._store.get_service_token(name)
        if record is None or not rules.visible(caller.owner, caller.is_admin, record):
            raise NotFound()
        return record

    async def _find_by_id(
        self, caller: Caller, token_id: int, *, itself: bool = False
    ) -> TokenRecord:
        """``itself``: the caller's own token, visible whatever its kind."""
        if token_id <= 0:
            raise NotFound()
        record = await self._store.get(token_id)
        if record is None or not (itself or rules.visible(caller.owner, caller.is_admin, record)):
            raise NotFound()
        return record
