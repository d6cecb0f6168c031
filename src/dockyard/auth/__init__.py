"""Who is asking and what they may do: credentials -> Principal, and the one `authorize` function.

Imports `db`, `config` and below. Every decision about access goes through `authorize`; handlers
and services never decide on their own.
"""

from dockyard.auth.authenticate import Authenticator
from dockyard.auth.authorize import ANONYMOUS, AccessPolicy, Action, Principal, Resource, authorize

__all__ = ["ANONYMOUS", "AccessPolicy", "Action", "Authenticator", "Principal", "Resource", "authorize"]
