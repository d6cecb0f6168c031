"""Client addresses behind trusted proxies, actors of principals, audit filters, times, cursors."""

from __future__ import annotations

import pytest

from dockyard.auth.origin import TrustedProxies, actor_of
from dockyard.auth.principal import ANONYMOUS, Principal
from dockyard.config import Settings
from dockyard.domain.audit import Actor, AuditEntry, AuditFilter, kind_matches
from dockyard.domain.errors import InvalidRequest
from dockyard.services.audit import archive_key, decode_cursor, encode_cursor
from dockyard.services.durations import parse_instant

pytestmark = pytest.mark.unit

PROXIES = TrustedProxies(["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("198.51.100.7", [], "198.51.100.7"),  # no proxy in front
        ("198.51.100.7", ["203.0.113.5"], "198.51.100.7"),  # an untrusted peer's header is ignored
        ("10.1.2.3", ["203.0.113.5"], "203.0.113.5"),
        ("10.1.2.3", ["1.1.1.1, 203.0.113.5"], "203.0.113.5"),  # the client's own claims are left of it
        ("10.1.2.3", ["203.0.113.5, 10.9.9.9"], "203.0.113.5"),  # trusted hops are skipped
        ("10.1.2.3", ["203.0.113.5", "192.0.2.1"], "203.0.113.5"),  # several header lines, in order
        ("10.1.2.3", ["10.4.4.4, 10.5.5.5"], "10.4.4.4"),  # only proxies: the left-most of them
        ("10.1.2.3", ["garbage, 10.5.5.5"], "10.5.5.5"),  # a hop that is no address stops the walk
        ("10.1.2.3", ["203.0.113.5:4711"], "203.0.113.5"),
        ("10.1.2.3", ["[2001:db9::1]:443"], "2001:db9::1"),
        ("2001:db8::5", ["2001:db9::1"], "2001:db9::1"),
        ("::ffff:10.1.2.3", ["203.0.113.5"], "203.0.113.5"),  # v4-mapped peers are v4
        ("10.1.2.3", [""], "10.1.2.3"),
        (None, ["203.0.113.5"], "unknown"),
    ],
)
def test_client_ip_behind_trusted_proxies(peer: str | None, forwarded: list[str], client: str) -> None:
    assert PROXIES.client_ip(peer, forwarded) == client


def test_no_trusted_proxies_means_the_peer() -> None:
    assert TrustedProxies().client_ip("10.1.2.3", ["203.0.113.5"]) == "10.1.2.3"


def test_trusted_proxies_setting_is_validated() -> None:
    assert Settings.model_validate({"server": {"trusted_proxies": ["10.0.0.0/8", "::1"]}})
    with pytest.raises(ValueError, match="not an IP address or CIDR"):
        Settings.model_validate({"server": {"trusted_proxies": ["proxy.example"]}})
    with pytest.raises(ValueError, match=r"audit\.archive_location"):
        Settings.model_validate({"audit": {"archive_location": "nowhere"}})


def test_actor_of_each_kind_of_principal() -> None:
    user = Principal(account_id=1, name="alice", kind="user", via="password")
    robot = Principal(account_id=2, name="acme+ci", kind="robot", via="robot_token")
    app = Principal(account_id=1, name="alice", kind="user", app_token_id=9, via="app_token")
    assert actor_of(ANONYMOUS, "1.2.3.4", "curl") == Actor(None, "anonymous", "1.2.3.4", "curl")
    assert actor_of(user, "1.2.3.4", None) == Actor("alice", "user", "1.2.3.4", None, performer_id=1)
    assert actor_of(robot, "1.2.3.4", None).performer_kind == "robot"
    assert actor_of(app, "1.2.3.4", None) == Actor(
        "alice", "app-token", "1.2.3.4", None, performer_id=1, app_token_id=9
    )
    via = actor_of(user, "1.2.3.4", None, via_app="ci-bot")
    assert (via.performer, via.performer_kind, via.via_app) == ("alice", "oauth-app", "ci-bot")
    assert actor_of(user, "1.2.3.4", "x" * 2000).user_agent == "x" * 512


@pytest.mark.parametrize(
    ("pattern", "kind", "matches"),
    [
        ("tag", "tag", True),
        ("tag", "tag.move", True),
        ("tag", "tagged", False),
        ("tag.move", "tag.move", True),
        ("tag.move", "tag", False),
        ("tag*", "tagged", True),
        ("login", "login.failure", True),
        ("team", "team.member.add", True),
    ],
)
def test_kind_patterns(pattern: str, kind: str, matches: bool) -> None:
    assert kind_matches(pattern, kind) is matches


def test_filter_matches_archived_entries_like_the_query() -> None:
    entry = AuditEntry(7, "push", "alice", "user", 1, None, "acme", "acme/web", "1.2.3.4", None, 1000, {})
    assert AuditFilter(namespace="acme", performer="alice", kind="push", since=1000, until=1001).matches(entry)
    assert not AuditFilter(until=1000).matches(entry)
    assert not AuditFilter(repository="acme/api").matches(entry)
    assert AuditEntry.from_json(entry.as_json()) == entry


def test_times_are_iso_or_durations_ago() -> None:
    now = 1_800_000_000_000
    assert parse_instant("2h", now) == now - 7_200_000
    assert parse_instant("2026-11-26", now) == 1_795_651_200_000
    assert parse_instant("2026-11-26T10:00:00Z", now) == 1_795_651_200_000 + 36_000_000
    assert parse_instant("2026-11-26T12:00:00+02:00", now) == 1_795_651_200_000 + 36_000_000
    with pytest.raises(InvalidRequest):
        parse_instant("last tuesday", now)


def test_cursors_round_trip_and_archive_keys() -> None:
    entry = AuditEntry(42, "pull", None, "anonymous", None, None, None, None, None, None, 1_795_651_200_123)
    assert decode_cursor(encode_cursor(entry)) == (1_795_651_200_123, 42)
    with pytest.raises(InvalidRequest):
        decode_cursor("!!")
    assert archive_key(1_795_651_200_000) == "audit/2026/11/26.jsonl.gz"
