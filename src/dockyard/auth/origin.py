"""Where a request comes from and who makes it, as the audit log records it.

The client address is the TCP peer, unless the peer is one of the configured trusted proxies
(`server.trusted_proxies`): then it is the right-most address of `X-Forwarded-For` that is not
itself a trusted proxy. Addresses further left were written by the client or by proxies we do
not know, and are never believed. A header hop that is not an IP address stops the walk at the
last trusted hop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from dockyard.auth.principal import Principal
from dockyard.domain import audit

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TrustedProxies:
    def __init__(self, networks: Iterable[str] = ()) -> None:
        self.networks: tuple[_Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def trusts(self, address: str) -> bool:
        parsed = _parse(address)
        return parsed is not None and any(parsed in network for network in self.networks)

    def client_ip(self, peer: str | None, forwarded_for: Sequence[str] = ()) -> str:
        """The client's address given the TCP peer and the X-Forwarded-For header values."""
        if peer is None:
            return "unknown"
        if not self.networks or not forwarded_for or not self.trusts(peer):
            return peer
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
        nearest = peer
        for hop in reversed(hops):
            parsed = _parse(hop)
            if parsed is None:
                return nearest
            nearest = str(parsed)
            if not any(parsed in network for network in self.networks):
                return nearest
        return nearest


def _parse(text: str) -> _Address | None:
    value = text.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def actor_of(
    principal: Principal, ip: str | None, user_agent: str | None, *, via_app: str | None = None
) -> audit.Actor:
    """The audit actor of an authenticated principal (anonymous included) at `ip`. An OAuth2
    application the principal acts through is recorded as `via_app` (its client id)."""
    agent = user_agent[:512] if user_agent else None
    if principal.anonymous:
        return audit.Actor(None, audit.ANONYMOUS, ip, agent)
    via_app = via_app or principal.oauth_app
    if via_app is not None:
        kind = audit.OAUTH_APP
    elif principal.kind == "robot":
        kind = audit.ROBOT
    elif principal.app_token_id is not None:
        kind = audit.APP_TOKEN
    else:
        kind = audit.USER
    return audit.Actor(
        performer=principal.name,
        performer_kind=kind,
        ip=ip,
        user_agent=agent,
        via_app=via_app,
        performer_id=principal.account_id,
        app_token_id=principal.app_token_id,
    )
