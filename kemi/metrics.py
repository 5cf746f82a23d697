"""The counters divert keeps in Kamailio's statistics (the `statistics`
module: shared memory, one atomic add each), by name.

The KEMI adapter adds to them; `divert run`'s exporter (`divert.metrics`)
reads them with Kamailio's own (``kamcmd stats.get_statistics all``) and
serves them to Prometheus.  `kamailio.cfg` declares them: a test checks
that its list is this one.
"""

from __future__ import annotations

from divert.kemi.core.model import FORWARD_CONDITIONS, Condition

PREFIX = "divert:"
"""Kamailio files the statistics module's counters in its group ``script``
and keeps the name whole: ``script:divert:decisions_relay``."""
DECISIONS = ("relay", "reply")
FORWARD_STATS = {
    c: f"{PREFIX}forwards_{c.value.replace('-', '_')}"
    for c in (*FORWARD_CONDITIONS, Condition.REDIRECT)
}
EMERGENCY = f"{PREFIX}emergency_forwards"
NATIVE_PLANS = f"{PREFIX}native_plans"
"""Calls kamailio.cfg routed by a native plan (`divert.kemi.plans`)."""
DECISION_BUCKETS_US = (50, 100, 200, 500, 1000, 2000, 5000)
"""Upper bounds (microseconds) of the decision-time histogram's buckets."""
DECISION_SUM_US = f"{PREFIX}decision_sum_us"


def bucket_name(bound_us: int | None) -> str:
    """The counter of decisions that took at most `bound_us` (None: longer),
    not cumulative: the exporter adds them up as Prometheus wants."""
    return (
        f"{PREFIX}decision_le_{bound_us}us" if bound_us is not None else f"{PREFIX}decision_le_inf"
    )


def decisions_name(kind: str) -> str:
    return f"{PREFIX}decisions_{kind}"


def names() -> tuple[str, ...]:
    """Every counter's name, as the statistics module declares it."""
    return (
        *(decisions_name(d) for d in DECISIONS),
        *FORWARD_STATS.values(),
        EMERGENCY,
        NATIVE_PLANS,
        *(bucket_name(b) for b in (*DECISION_BUCKETS_US, None)),
        DECISION_SUM_US,
    )


_BUCKETS = tuple((bound, bucket_name(bound)) for bound in DECISION_BUCKETS_US)
_LONGER = bucket_name(None)


def bucket_of(elapsed_us: int) -> str:
    """The histogram counter a decision of `elapsed_us` adds to."""
    for bound, name in _BUCKETS:
        if elapsed_us <= bound:
            return name
    return _LONGER
