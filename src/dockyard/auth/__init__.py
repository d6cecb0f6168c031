"""Who is asking and what they may do: credentials -> Principal, and the one `authorize` function.

Imports `db`, `config` and below. Every decision about access goes through `authorize`; handlers
and services never decide on their own.
"""

from dockyard.auth.authenticate import Authenticator
from dockyard.auth.authorize import AccessPolicy, authorize
from dockyard.auth.principal import ANONYMOUS, Action, Principal, Resource
from dockyard.auth.tokens import TokenService

__all__ = ["ANONYMOUS", "AccessPolicy", "Action", "Authenticator", "Principal", "Resource", "TokenService", "authorize"]
