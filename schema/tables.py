"""The portal schema as SQLAlchemy Core tables: the one description of the
portal's data that the `divert` command and the sync worker both use.

The migrations under `migrations/` create exactly these tables (a test
compares them); change both together.

Vocabulary (see `divert.kemi.core.model` for how the sync worker compiles it):

- tenant: a customer.  `region` (ISO 3166 alpha-2) reads national numbers,
  `domain` is the SIP domain and digest realm of its subscribers,
  `operator` is its "return to operator" destination.
- trunk: a customer PBX, recognised by `addresses`; `emergency` is where its
  numbers go when it is down; `diversion_style` is how it wants diversions
  announced (``diversion``, ``history-info`` or ``both``).
- subscriber: a SIP account (HA1 only, never the password), with an optional
  2-3 digit extension unique in its tenant; `caller_id` is the number, of
  those it owns, that its calls to the carriers assert (NULL: the first);
  `away` says it is not present (set by *78/*79 or the CLI).
- number: an E.164 DID owned by exactly one trunk or one subscriber.
- forward: owned by a number or a subscriber; see the CHECKs for the values.
- schedule: a tenant's time modes (day, night, holiday) by weekday and hour.
- api_token: who may use the portal API (`divert.portal.tokens`): the
  SHA-256 of each token, never the token; no tenant means the operator's.
  Not journaled: nodes never need it.
- change_journal: one row per changed row, written by triggers (see
  `divert.schema.journal`), read by the sync worker in `id` order.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    true,
)

from divert.kemi.core.model import FORWARD_CONDITIONS, DestKind, DiversionStyle, Scope

# The vocabulary is the decision core's (one definition, used by the schema's
# CHECKs, the CLI's choices, the sync worker's validation and the signalling)
CONDITIONS = tuple(condition.value for condition in FORWARD_CONDITIONS)
CALLER_SCOPES = tuple(scope.value for scope in Scope)
DEST_KINDS = tuple(kind.value for kind in DestKind)
DIVERSION_STYLES = tuple(style.value for style in DiversionStyle)

# Autoincrementing 64-bit keys: BIGSERIAL on PostgreSQL, INTEGER PRIMARY KEY
# (the rowid) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


metadata = MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "ix": "ix_%(table_name)s_%(column_0_name)s",
    }
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("region", String(2), nullable=False),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("domain", String(255), nullable=False, unique=True),
    Column("operator", String(32)),
    Column("voicemail_uri", String(255)),
    Column("code_profile", String(8), nullable=False, server_default="both"),
    Column("mode_override", String(16)),
    Column("mode_override_until", DateTime(timezone=True)),
    CheckConstraint(_in("code_profile", ("both", "vpbx", "carrier")), name="code_profile"),
)

trunks = Table(
    "trunks",
    metadata,
    Column("id", Id, primary_key=True),
    Column("tenant_id", Id, ForeignKey("tenants.id", ondelete="RESTRICT"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("addresses", Text, nullable=False),
    Column("emergency", String(20)),
    Column("diversion_style", String(16), nullable=False, server_default="diversion"),
    UniqueConstraint("tenant_id", "name", name="uq_trunks_tenant_name"),
    CheckConstraint(_in("diversion_style", DIVERSION_STYLES), name="style"),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Id, primary_key=True),
    Column("tenant_id", Id, ForeignKey("tenants.id", ondelete="RESTRICT"), nullable=False),
    Column("username", String(64), nullable=False),
    Column("ha1", String(32), nullable=False),
    Column("extension", String(3)),
    Column("display_name", String(64), nullable=False, server_default=""),
    Column("caller_id", String(20)),
    # seed 004's "not present": the subscriber is away (its not-present forwards apply)
    Column("away", Boolean, nullable=False, server_default=false()),
    UniqueConstraint("tenant_id", "username", name="uq_subscribers_tenant_username"),
    UniqueConstraint("tenant_id", "extension", name="uq_subscribers_tenant_extension"),
)

numbers = Table(
    "numbers",
    metadata,
    Column("id", Id, primary_key=True),
    Column("e164", String(20), nullable=False, unique=True),
    Column(
        "tenant_id", Id, ForeignKey("tenants.id", ondelete="RESTRICT"), nullable=False, index=True
    ),
    Column("trunk_id", Id, ForeignKey("trunks.id", ondelete="RESTRICT"), index=True),
    Column("subscriber_id", Id, ForeignKey("subscribers.id", ondelete="RESTRICT"), index=True),
    CheckConstraint("(trunk_id IS NULL) <> (subscriber_id IS NULL)", name="one_owner"),
)

forwards = Table(
    "forwards",
    metadata,
    Column("id", Id, primary_key=True),
    Column("tenant_id", Id, ForeignKey("tenants.id", ondelete="RESTRICT"), nullable=False),
    Column("number_id", Id, ForeignKey("numbers.id", ondelete="CASCADE"), index=True),
    Column("subscriber_id", Id, ForeignKey("subscribers.id", ondelete="CASCADE"), index=True),
    Column("condition", String(16), nullable=False),
    Column("callers", String(8), nullable=False, server_default="any"),
    Column("dest_kind", String(16), nullable=False),
    Column("dest_value", String(32), nullable=False, server_default=""),
    Column("ring_timeout", Integer),
    Column("position", Integer, nullable=False, server_default="0"),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    Column("expires_at", DateTime(timezone=True)),
    Column("modes", String(64)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("(number_id IS NULL) <> (subscriber_id IS NULL)", name="one_owner"),
    CheckConstraint(_in("condition", CONDITIONS), name="condition"),
    CheckConstraint(_in("callers", CALLER_SCOPES), name="callers"),
    CheckConstraint(_in("dest_kind", DEST_KINDS), name="dest_kind"),
    CheckConstraint("ring_timeout IS NULL OR ring_timeout BETWEEN 1 AND 600", name="ring_timeout"),
)

schedules = Table(
    "schedules",
    metadata,
    Column("id", Id, primary_key=True),
    Column("tenant_id", Id, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("weekdays", String(27), nullable=False),
    Column("starts", String(5), nullable=False),
    Column("ends", String(5), nullable=False),
)

settings = Table(
    "settings",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("value", Text, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Id, primary_key=True),
    Column("tenant_id", Id, ForeignKey("tenants.id", ondelete="CASCADE"), index=True),
    Column("label", String(64), nullable=False, server_default=""),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
)

change_journal = Table(
    "change_journal",
    metadata,
    Column("id", Id, primary_key=True),
    Column("tx", BigInteger, index=True),
    Column("table_name", String(32), nullable=False),
    Column("op", String(1), nullable=False),
    Column("row_id", BigInteger, nullable=False),
    Column("old_row", Text),
    Column("changed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

JOURNALED = (tenants, trunks, subscribers, numbers, forwards, schedules, settings)
"""Tables whose every change the database records in `change_journal`."""
