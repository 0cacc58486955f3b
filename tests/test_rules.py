from __future__ import annotations

import pytest

from tokengrpc import rules
from tokengrpc.addresses import ClientAddressResolver, address_allowed, compile_networks
from tokengrpc.errors import InvalidArgument, PermissionDenied
from tokengrpc.store import TokenRecord

NOW = 1_000_000_000_000


def _record(**changes: object) -> TokenRecord:
    base: dict[str, object] = {
        "id": 1,
        "owner": "alice",
        "name": "n",
        "secret_hash": b"",
        "scopes": (),
        "active": True,
        "expire_time": None,
        "allowed_ips": (),
        "create_time": 0,
        "update_time": 0,
        "revoke_time": None,
        "last_use_time": None,
        "usage_count": 0,
        "sealed_value": None,
    }
    base.update(changes)
    return TokenRecord(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({}, rules.Status.ACTIVE),
        ({"active": False}, rules.Status.INACTIVE),
        ({"expire_time": NOW}, rules.Status.EXPIRED),
        ({"expire_time": NOW + 1}, rules.Status.ACTIVE),
        ({"expire_time": NOW - 1, "active": False}, rules.Status.EXPIRED),
        ({"revoke_time": 5, "expire_time": NOW - 1, "active": False}, rules.Status.REVOKED),
        ({"not_before": NOW + 1}, rules.Status.PENDING),
        ({"not_before": NOW}, rules.Status.ACTIVE),
        ({"not_before": NOW + 1, "active": False}, rules.Status.INACTIVE),
        ({"not_before": NOW + 1, "expire_time": NOW}, rules.Status.EXPIRED),
    ],
)
def test_status_precedence(changes: dict[str, object], status: rules.Status) -> None:
    assert rules.status_of(_record(**changes), NOW, None) is status


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"secret_time": NOW - 100}, rules.Status.EXPIRED),
        ({"secret_time": NOW - 99}, rules.Status.ACTIVE),
        ({"secret_time": NOW - 100, "revoke_time": 5}, rules.Status.REVOKED),
        ({"secret_time": NOW, "expire_time": NOW}, rules.Status.EXPIRED),
        ({"secret_time": NOW - 100, "not_before": NOW + 1}, rules.Status.EXPIRED),
    ],
)
def test_the_maximum_secret_age_expires_a_token(
    changes: dict[str, object], status: rules.Status
) -> None:
    assert rules.status_of(_record(**changes), NOW, 100) is status
    assert rules.status_of(_record(**changes), NOW, None) is not rules.Status.EXPIRED or (
        changes.get("expire_time") == NOW
    )


def test_ungrantable_lists_what_is_not_held() -> None:
    assert rules.ungrantable(["write", "read:x"], ["write"]) == ["read:x"]
    assert rules.ungrantable(["anything"], ["admin"]) == []
    assert rules.ungrantable([], []) == []


def test_granting_a_scope_not_held_is_refused_and_counted_not_named() -> None:
    rules.check_grant(["write"], ["write", "read"])
    rules.check_grant(["anything"], ["admin"])
    with pytest.raises(PermissionDenied) as caught:
        rules.check_grant(["write", "secret-scope", "other"], ["write"])
    assert "2 of them" in str(caught.value)
    assert "secret-scope" not in str(caught.value)


def test_acting_on_a_stronger_token_is_refused() -> None:
    target = _record(scopes=("write", "deploy"))
    rules.check_not_stronger(target, ["write", "deploy", "read"], "revoke")
    rules.check_not_stronger(target, ["admin"], "revoke")
    with pytest.raises(PermissionDenied) as caught:
        rules.check_not_stronger(target, ["write"], "rotate")
    assert "cannot rotate" in str(caught.value)


@pytest.mark.parametrize(
    ("owner", "is_admin", "record", "seen"),
    [
        ("alice", False, {}, True),
        ("bob", False, {}, False),
        ("bob", True, {}, True),
        ("", False, {"owner": ""}, False),  # a service token: admins only
        ("", True, {"owner": ""}, True),
    ],
)
def test_visible_to_admins_and_to_the_owner_of_a_personal_token(
    owner: str, is_admin: bool, record: dict[str, object], seen: bool
) -> None:
    assert rules.visible(owner, is_admin, _record(**record)) is seen


@pytest.mark.parametrize(
    ("raw", "problem"),
    [("", "required"), ("   ", "required"), ("x" * 256, "at most 255"), ("a\x00b", "control")],
)
def test_bad_names(raw: str, problem: str) -> None:
    problems = rules.Violations()
    rules.clean_name(raw, "name", problems)
    with pytest.raises(InvalidArgument) as caught:
        problems.raise_if_any()
    assert problem in caught.value.violations[0].description


def test_names_are_trimmed_and_255_is_fine() -> None:
    problems = rules.Violations()
    assert rules.clean_name("  deploy  ", "name", problems) == "deploy"
    assert rules.clean_name("é" * 255, "name", problems) == "é" * 255
    problems.raise_if_any()


def test_scopes_deduplicate_and_reject_spaces() -> None:
    problems = rules.Violations()
    assert rules.clean_scopes(["a", "b", "a"], "scopes", problems) == ("a", "b")
    rules.clean_scopes(["has space", ""], "scopes", problems)
    assert len(problems.items) == 2


def test_allowed_ips_normalise_and_explain() -> None:
    problems = rules.Violations()
    cleaned = rules.clean_allowed_ips(["10.0.0.0/24", " 203.0.113.12 ", "::1"], "f", problems)
    assert cleaned == ("10.0.0.0/24", "203.0.113.12", "::1")
    rules.clean_allowed_ips(["10.0.0.1/24", "300.1.1.1", "nope"], "f", problems)
    # Each problem names the item by index; none repeats what was sent.
    assert [p.description for p in problems.items] == [
        "item 0 has host bits set; write the network address of the range",
        "item 1 is not an IP address or CIDR range",
        "item 2 is not an IP address or CIDR range",
    ]


def test_address_matching() -> None:
    networks = compile_networks(["10.0.0.0/24", "2001:db8::/32"])
    resolver = ClientAddressResolver()
    inside = resolver.resolve("ipv4:10.0.0.7:5000", None)
    outside = resolver.resolve("ipv4:10.0.1.7:5000", None)
    v6 = resolver.resolve("ipv6:[2001:db8::1]:5000", None)
    assert address_allowed(inside, networks)
    assert not address_allowed(outside, networks)
    assert address_allowed(v6, networks)
    assert not address_allowed(None, networks)
    assert address_allowed(None, ())


def test_forwarded_for_only_from_trusted_proxies() -> None:
    resolver = ClientAddressResolver(["127.0.0.0/8"])
    assert str(resolver.resolve("ipv4:127.0.0.1:1", "10.0.0.9, 127.0.0.1")) == "10.0.0.9"
    assert str(resolver.resolve("ipv4:192.0.2.1:1", "10.0.0.9")) == "192.0.2.1"
    assert str(resolver.resolve("unix:/tmp/s", "10.0.0.9")) == "10.0.0.9"
    assert str(resolver.resolve("ipv6:[::ffff:127.0.0.1]:1", "10.0.0.9")) == "10.0.0.9"
    nobody = ClientAddressResolver([])
    assert str(nobody.resolve("ipv4:127.0.0.1:1", "10.0.0.9")) == "127.0.0.1"
