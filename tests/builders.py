"""Short ways to build decision-core values in tests."""

from __future__ import annotations

from divert.kemi.core.model import (
    Condition,
    Destination,
    DestKind,
    Endpoint,
    EndpointKind,
    ForwardTable,
    Rule,
    Scope,
)


def rule(
    condition: Condition | str,
    to: str = "",
    callers: Scope | str = Scope.ANY,
    kind: DestKind | None = None,
    timeout: int | None = None,
    modes: tuple[str, ...] = (),
    expires_at: float | None = None,
    code: int = 0,
    origin: str = "",
) -> Rule:
    if kind is None:
        kind = DestKind.REJECT if code else DestKind.NUMBER
    return Rule(
        Condition(condition),
        Scope(callers),
        Destination(kind, to, to or f"reject {code}", reply_code=code),
        origin or f"{Condition(condition).value} -> {to or code}",
        ring_timeout=timeout,
        modes=frozenset(modes),
        expires_at=expires_at,
    )


def table(
    key: str,
    *rules: Rule,
    endpoint: Endpoint | None = None,
    ring_timeout: int | None = None,
    away: bool = False,
) -> ForwardTable:
    return ForwardTable(
        key,
        "tenant",
        key,
        endpoint or Endpoint(EndpointKind.TRUNK, f"trunk-of-{key}"),
        tuple(rules),
        ring_timeout=ring_timeout,
        away=away,
    )


def tables(*items: ForwardTable) -> dict[str, ForwardTable]:
    return {t.key: t for t in items}
