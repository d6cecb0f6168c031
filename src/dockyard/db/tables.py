"""Tables. Timestamps are integer milliseconds since the epoch (portable, cheap to compare).

namespaces           one per user or organization (first component of a repository name)
repositories         name (full path), visibility, state, description
blobs                content-addressed, stored once globally: digest, size
placements           which storage locations hold a blob (and at which key, when not derived)
repository_blobs     a blob readable in a repository (uploaded or mounted there); its
                     created_at starts the grace period that protects it from GC until a
                     manifest references it
manifests            per repository, unique digest, exact bytes; deleted_at hides it
manifest_blobs       edges manifest -> config and layer blobs
manifest_children    edges index -> child manifests (same repository)
tags                 history rows (repository, name, manifest, start_at, end_at); the live tag
                     is the row with end_at IS NULL (unique per repository and name)
uploads              in-progress upload sessions; the bytes live in storage under uploads/<id>
storage_deletions    storage objects whose rows garbage collection removed, deleted from storage
                     only after that commit and a re-check that no placement names them again
gc_stats             garbage collection's running totals (passes, rows and bytes collected)
storage_orphans      objects and unfinished uploads found in storage that the database does not
                     know, with when a sweep first saw them: deleted once seen again after the grace
namespace_usage_items  what a namespace's quota counts: each blob or manifest digest once
namespace_usage      the namespace's bytes in use, spread over a few shard rows (no hot row)
prune_policies       per-namespace or per-repository tag retention rules
audit_log            who did what, when, from where (docs/audit.md)
audit_archives       UTC days of the audit log moved to storage: one gzip JSON Lines object each
sessions             browser sessions of the REST API: the SHA-256 of the cookie's id, the account
                     and its credential epoch at login, login, last use and last password entry
oauth_applications   OAuth2 applications of organizations: client id, hashed secret, redirect URIs,
                     the scopes they may ask for
oauth_authorizations a user's consent to an application (the scopes granted); revoking it ends the
                     application's tokens for that user
oauth_codes          authorization codes (hashed): single use, short-lived, bound to application,
                     user, redirect URI and PKCE challenge
oauth_tokens         access and refresh tokens (hashed) issued to applications, for a user or (client
                     credentials) for the application itself
stars                repositories a user starred
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

DIGEST = String(160)

namespaces = Table(
    "namespaces",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("kind", String(8), nullable=False, server_default="user"),
    Column("time_machine_seconds", Integer, nullable=True),
    Column("state", String(16), nullable=False, server_default="normal"),
    Column("quota_bytes", BigInteger, nullable=True),
    Column("quota_warn_percent", Integer, nullable=True),
    Column("quota_reject_percent", Integer, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    # An organization's contact address.
    Column("email", String(320), nullable=True),
)

repositories = Table(
    "repositories",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("namespace_id", Integer, ForeignKey("namespaces.id"), nullable=False, index=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("visibility", String(16), nullable=False, server_default="private"),
    Column("state", String(16), nullable=False, server_default="normal"),
    Column("created_at", BigInteger, nullable=False),
    Column("description", Text, nullable=True),
)

blobs = Table(
    "blobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("digest", DIGEST, nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # Set by every new reference (link, mount); GC deletes only rows untouched for the grace period.
    Column("touched_at", BigInteger, nullable=False, server_default="0"),
)

placements = Table(
    "placements",
    metadata,
    Column("blob_id", Integer, ForeignKey("blobs.id", ondelete="CASCADE"), primary_key=True),
    Column("location", String(64), primary_key=True),
    Column("key", String(1024), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    # The storage sweeper asks whether a placement names a key it found.
    Index(None, "location", "key"),
)

repository_blobs = Table(
    "repository_blobs",
    metadata,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("blob_id", Integer, ForeignKey("blobs.id", ondelete="CASCADE"), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "blob_id"),
)

manifests = Table(
    "manifests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("digest", DIGEST, nullable=False),
    Column("media_type", String(255), nullable=False),
    Column("artifact_type", String(255), nullable=True),
    Column("subject_digest", DIGEST, nullable=True),
    Column("size", Integer, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("deleted_at", BigInteger, nullable=True),
    # Set by every new reference (tag, parent index, re-push); GC deletes only rows untouched
    # for the grace period.
    Column("touched_at", BigInteger, nullable=False, server_default="0"),
    UniqueConstraint("repository_id", "digest"),
    Index(None, "digest"),
    Index(None, "repository_id", "subject_digest"),
)

manifest_blobs = Table(
    "manifest_blobs",
    metadata,
    Column("manifest_id", Integer, ForeignKey("manifests.id", ondelete="CASCADE"), primary_key=True),
    Column("blob_id", Integer, ForeignKey("blobs.id", ondelete="CASCADE"), primary_key=True),
    Index(None, "blob_id"),
)

manifest_children = Table(
    "manifest_children",
    metadata,
    Column("parent_id", Integer, ForeignKey("manifests.id", ondelete="CASCADE"), primary_key=True),
    Column("child_id", Integer, ForeignKey("manifests.id", ondelete="CASCADE"), primary_key=True),
    Index(None, "child_id"),
)

tags = Table(
    "tags",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("manifest_id", Integer, ForeignKey("manifests.id", ondelete="CASCADE"), nullable=False),
    Column("start_at", BigInteger, nullable=False),
    Column("end_at", BigInteger, nullable=True),
    Column("expires_at", BigInteger, nullable=True),
    Column("immutable", Boolean, nullable=False, server_default=false()),
    Index(
        "uq_tags_live",
        "repository_id",
        "name",
        unique=True,
        sqlite_where=text("end_at IS NULL"),
        postgresql_where=text("end_at IS NULL"),
    ),
    Index(None, "repository_id", "name", "start_at"),
    Index(None, "manifest_id"),
    Index(None, "end_at"),
    Index(None, "expires_at"),
)

uploads = Table(
    "uploads",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("offset", BigInteger, nullable=False),
    Column("location", String(64), nullable=False),
    Column("handle", String(1024), nullable=False, server_default=""),
    Column("parts", Text, nullable=False, server_default="[]"),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)


accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("name", String(300), nullable=False, unique=True),
    Column("namespace_id", Integer, ForeignKey("namespaces.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("email", String(320), nullable=True),
    Column("password_hash", String(255), nullable=True),
    Column("token_hash", String(64), nullable=True, unique=True),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    Column("superuser", Boolean, nullable=False, server_default=false()),
    Column("credential_epoch", Integer, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
)

teams = Table(
    "teams",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("namespace_id", Integer, ForeignKey("namespaces.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("description", Text, nullable=True),
    UniqueConstraint("namespace_id", "name"),
)

team_members = Table(
    "team_members",
    metadata,
    Column("team_id", Integer, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Index(None, "account_id"),
)

repository_permissions = Table(
    "repository_permissions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=True),
    Column("team_id", Integer, ForeignKey("teams.id", ondelete="CASCADE"), nullable=True),
    Column("role", String(8), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "repository_id", "account_id"),
    Index(None, "repository_id", "team_id"),
    Index(None, "account_id"),
    Index(None, "team_id"),
)

default_permissions = Table(
    "default_permissions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("namespace_id", Integer, ForeignKey("namespaces.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("creator_account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=True),
    Column("team_id", Integer, ForeignKey("teams.id", ondelete="CASCADE"), nullable=True),
    Column("role", String(8), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

app_tokens = Table(
    "app_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("title", String(255), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("last_used_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
    # Space-separated scope names (domain.access.Scope); they cap what the token may do.
    Column("scopes", String(255), nullable=False),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("private_pem", Text, nullable=False),
    Column("public_pem", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("retired_at", BigInteger, nullable=True),
)

server_secrets = Table(
    "server_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

login_failures = Table(
    "login_failures",
    metadata,
    Column("key", String(400), primary_key=True),
    Column("window_start", BigInteger, nullable=False),
    Column("count", Integer, nullable=False),
)


jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("dedupe_key", String(400), nullable=True, unique=True),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("run_after", BigInteger, nullable=False),
    Column("lease_owner", String(128), nullable=True),
    Column("lease_until", BigInteger, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index(None, "state", "run_after"),
    Index(None, "kind", "state"),
)


immutability_rules = Table(
    "immutability_rules",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("pattern", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("repository_id", "pattern"),
)


storage_deletions = Table(
    "storage_deletions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("digest", DIGEST, nullable=False, index=True),
    Column("location", String(64), nullable=False),
    Column("key", String(1024), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

gc_stats = Table(
    "gc_stats",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

storage_orphans = Table(
    "storage_orphans",
    metadata,
    Column("location", String(64), primary_key=True),
    # "object": `key` is an object key; "upload": `key` names an unfinished native upload.
    Column("kind", String(8), primary_key=True),
    Column("key", String(1024), primary_key=True),
    Column("first_seen", BigInteger, nullable=False),
    Column("last_seen", BigInteger, nullable=False),
)

namespace_usage_items = Table(
    "namespace_usage_items",
    metadata,
    Column("namespace_id", Integer, ForeignKey("namespaces.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", DIGEST, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("touched_at", BigInteger, nullable=False),
)

namespace_usage = Table(
    "namespace_usage",
    metadata,
    Column("namespace_id", Integer, ForeignKey("namespaces.id", ondelete="CASCADE"), primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("bytes", BigInteger, nullable=False),
)

prune_policies = Table(
    "prune_policies",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("namespace_id", Integer, ForeignKey("namespaces.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=True, index=True),
    Column("keep_count", Integer, nullable=True),
    Column("older_than_seconds", BigInteger, nullable=True),
    Column("tag_pattern", String(255), nullable=True),
    Column("created_at", BigInteger, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("performer", String(300), nullable=True),
    Column("performer_kind", String(16), nullable=True),
    Column("performer_id", BigInteger, nullable=True),
    Column("via_app", String(255), nullable=True),
    Column("namespace", String(255), nullable=True),
    Column("repository", String(255), nullable=True),
    Column("ip", String(64), nullable=True),
    Column("user_agent", String(512), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("metadata", Text, nullable=False, server_default="{}"),
    Index(None, "namespace", "created_at"),
    Index(None, "repository", "created_at"),
    # Pulls, most of the log, are left out of the kind index (a query for other kinds says
    # `kind <> 'pull'`, db/audit.py, so that it applies) and anonymous entries out of the
    # performer index: each index a pull skips is work its INSERT does not do.
    Index(None, "kind", "created_at", sqlite_where=text("kind <> 'pull'"), postgresql_where=text("kind <> 'pull'")),
    Index(
        None,
        "performer",
        "created_at",
        sqlite_where=text("performer IS NOT NULL"),
        postgresql_where=text("performer IS NOT NULL"),
    ),
    # Pages in (created_at, id) order straight from the index; kind read from it (counts, kind filters).
    Index(None, "created_at", "id", "kind"),
)

audit_archives = Table(
    "audit_archives",
    metadata,
    Column("day", BigInteger, primary_key=True, autoincrement=False),
    Column("location", String(64), nullable=False),
    Column("key", String(1024), nullable=False),
    Column("entries", BigInteger, nullable=False),
    Column("max_id", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("counts", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

stars = Table(
    "stars",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "repository_id"),
)


sessions = Table(
    "sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True),
    # The account's credential epoch at login: a password change or a disable ends the session.
    Column("epoch", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_used_at", BigInteger, nullable=False, index=True),
    # When the password was last entered (login or re-authentication): "fresh login" checks.
    Column("authenticated_at", BigInteger, nullable=False),
    Column("ip", String(64), nullable=True),
    Column("user_agent", String(512), nullable=True),
)

oauth_applications = Table(
    "oauth_applications",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("namespace_id", Integer, ForeignKey("namespaces.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("client_id", String(64), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False),
    # JSON list of the exact redirect URIs the application may use.
    Column("redirect_uris", Text, nullable=False),
    Column("description", Text, nullable=True),
    # Space-separated scope names the application may ask for.
    Column("scopes", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("secret_reset_at", BigInteger, nullable=True),
    UniqueConstraint("namespace_id", "name"),
)

oauth_authorizations = Table(
    "oauth_authorizations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("application_id", Integer, ForeignKey("oauth_applications.id", ondelete="CASCADE"), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("scopes", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("application_id", "account_id"),
)

oauth_codes = Table(
    "oauth_codes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("code_hash", String(64), nullable=False, unique=True),
    Column("application_id", Integer, ForeignKey("oauth_applications.id", ondelete="CASCADE"), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("scopes", String(255), nullable=False),
    # PKCE: BASE64URL(SHA-256(code_verifier)); only S256 is accepted.
    Column("code_challenge", String(128), nullable=False),
    # The tokens this code is exchanged for carry it (oauth_tokens.grant_id).
    Column("grant_id", String(32), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False, index=True),
    Column("used_at", BigInteger, nullable=True),
)

oauth_tokens = Table(
    "oauth_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    # "access" or "refresh".
    Column("kind", String(8), nullable=False),
    Column(
        "application_id", Integer, ForeignKey("oauth_applications.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    # The user the application acts for; NULL: the application itself (client credentials).
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=True, index=True),
    # Every token descended from one authorization code (refreshes included) shares it: a replayed
    # code or a revoked refresh token ends them all.
    Column("grant_id", String(32), nullable=True, index=True),
    Column("scopes", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False, index=True),
    Column("revoked_at", BigInteger, nullable=True),
    Column("last_used_at", BigInteger, nullable=True),
)
