"""The KEMI adapter: the only code that imports KSR.

It translates between Kamailio and the decision core and nothing more:
SIP facts in (who called whom, how a branch failed), `decide()` in the
middle, SIP actions out (Request-URI, destination, ring timer, Diversion or
History-Info, the next failure route, or a final reply).

Kamailio's native configuration (kamailio.cfg) does the SIP plumbing:
where a request comes from, its size, Max-Forwards and sanity, CANCEL, ACK,
retransmissions and in-dialog requests.  It calls Python (`python_exec`)
only for what divert decides: a new request (``ksr_request_route``), a
forwarded call's failure route and feature codes.

Serial forking: every relay arms ``ksr_failure_forward``; there the branch's
failure becomes an `Outcome`, the call and its state carried on the
transaction (one AVP, ``divert_call``) come back, and the core says what is
next.  The branch route that adds the diversion headers is native.  A
target that cannot even be tried (no registered contact, a trunk the
dispatcher already marks down, no carrier up) is reported to the core at
once, so those forwards cost no timer.

Every request is hostile until a check says otherwise (see the README's
Security section): kamailio.cfg answers oversized and malformed requests 513
and 400, removes headers only carriers may send, and relays in-dialog
requests only for dialogs this node signed (`divert.kemi.signing`); here a
preloaded Route to anywhere but this node is refused from all but trunks,
and unknown users are challenged exactly like known ones.

Faults never leak: each route catches everything, logs one line and
answers 500 (or 503 when the store cannot be read).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import KSR  # type: ignore[import-not-found]

from divert.kemi import metrics
from divert.kemi.core.decide import DEFAULT_RING_SECONDS, Limits, decide, redirect
from divert.kemi.core.keys import subscriber_key, voicemail_key, voicemail_uri
from divert.kemi.core.model import (
    Call,
    CallState,
    Decision,
    Endpoint,
    EndpointKind,
    Outcome,
    Relay,
    Reply,
)
from divert.kemi.core.state_codec import StateFormatError, decode_leg, encode_leg
from divert.kemi.modes import tenant_mode
from divert.kemi.plan_sync import PlanSync
from divert.kemi.plans import PlanConfig
from divert.kemi.signalling import (
    ALG_PRIORITY,
    ALG_ROUND_ROBIN,
    CARRIER_SET,
    diversion_headers,
    diversions_announced,
    outcome_of,
    redirect_targets,
    trunk_set,
)
from divert.kemi.signing import NODE_KEY_ENV, NodeKeyError, load_key
from divert.kemi.store.format import SubscriberRecord
from divert.kemi.store.reader import CACHE_ENTRIES, StoreReader, StoreUnavailable

CALL_AVP = "$avp(divert_call)"
PLANS_TABLE = "plans"  # kamailio.cfg's htable of native plans
PLANS_GENERATION = "$shv(divert_plans)"
SHM_CHECK_EVERY = 256
SHM_RESERVE = 0.25  # of Kamailio's shared memory, left to transactions and registrations
SHM_RESERVE_MIN = 64 * 1024 * 1024
HEADERS_AVP = "$avp(divert_headers)"  # kamailio.cfg's branch route adds them
IDENTITY_AVP = "$avp(divert_identity)"  # a subscriber caller's P-Asserted-Identity
PRIVATE = frozenset(("id", "user"))  # Privacy values that hide the caller
ANONYMOUS_DISPLAY = '"Anonymous"'
ANONYMOUS_URI = "sip:anonymous@anonymous.invalid"  # RFC 3323
ANNOUNCED_DIVERSIONS = ("Diversion", "History-Info")
"""A subscriber's own call announces no diversions: a forged one could make a
carrier bill somebody else."""
ALLOW = "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, UPDATE, INFO, PRACK\r\n"
ROUTE_URI = re.compile(r"<([^>]*)>")
PLAIN_HOP = re.compile(
    r"sips?:(?:[\w.~%+-]{1,64}@)?[A-Za-z0-9.-]{1,253}(?::(\d{1,5}))?(?:;[\w.~%+=-]{0,64}){0,10}"
)
"""A Route URI plain enough that Kamailio parses it without complaint (is_myself
logs an ERROR for every URI it cannot parse)."""
MAX_ROUTES = 8  # Route headers an initial request may carry
VOICEMAIL_CODE = "*97"
# kamailio.cfg's routes of these names: failure_route, branch_route, onreply_route
FAILURE_ROUTE = "ksr_failure_forward"
BRANCH_ROUTE = "ksr_branch_forward"
PHONE_REPLY_ROUTE = "ksr_reply_phone"
# where ksr_feature_code names the transaction kamailio.cfg resumes
FEATURE_INDEX, FEATURE_LABEL = "$var(feature_index)", "$var(feature_label)"
CARRIER, CUSTOMER_TRUNK = "2", "1"  # kamailio.cfg's $var(trusted)
AUTH_HA1 = 1  # pv_auth_check flag: the password given is HA1
AUTH_CHECK_USER = 1  # the digest user must be the From (To for REGISTER) user
AUTH_NO_CREDENTIALS = -5
AUTH_STALE_NONCE = -4
# digest-checked for users the store does not know, so that they are
# challenged and refused exactly like known users given a wrong password
UNKNOWN_USER_HA1 = secrets.token_hex(16)
EXTENSION = re.compile(r"[0-9]{2,3}")
# how long a suspended feature code may wait for its answer: more than the
# portal's limit for a code (divert.features.task) plus queueing it locally
FEATURE_TIMER_MS = 10000
RELAY_STAT, REPLY_STAT = (metrics.decisions_name(kind) for kind in metrics.DECISIONS)


@dataclass(frozen=True, slots=True)
class AdapterConfig:
    state_dir: str
    domain: str
    max_diversions: int = 5
    cache_size: int = CACHE_ENTRIES  # divert run passes --cache as DIVERT_CACHE_SIZE
    carrier_style: str = "diversion"
    # a node of a cluster (divert run --peer): registrations carry a Path
    cluster: bool = False

    @classmethod
    def from_environment(cls) -> AdapterConfig:
        return cls(
            state_dir=os.environ.get("DIVERT_STATE_DIR", "var"),
            domain=os.environ.get("DIVERT_DOMAIN", "divert.invalid"),
            max_diversions=int(os.environ.get("DIVERT_MAX_DIVERSIONS", "5")),
            cache_size=int(os.environ.get("DIVERT_CACHE_SIZE", str(CACHE_ENTRIES))),
            carrier_style=os.environ.get("DIVERT_CARRIER_STYLE", "diversion"),
            cluster=os.environ.get("DIVERT_CLUSTER", "") == "1",
        )


def _plain(hop: str) -> bool:
    """Is `hop` a URI Kamailio parses quietly?  Any other is no hop of ours."""
    found = PLAIN_HOP.fullmatch(hop)
    return found is not None and int(found.group(1) or 5060) <= 65535


class Answer(Protocol):
    @property
    def code(self) -> int: ...

    @property
    def reason(self) -> str: ...


class PendingCode(Protocol):
    """A feature code carried out and not yet committed."""

    def commit(self) -> Answer: ...

    def rollback(self) -> None: ...


class FeatureCodes(Protocol):
    """What carries feature codes out (`divert.features.task`), made in an
    async worker the first time one comes: SIP workers never load it."""

    def begin(self, aor: str, dialled: str) -> PendingCode: ...


@dataclass(frozen=True, slots=True)
class _Reply:
    code: int
    reason: str


class _Failed:
    """A code whose work failed: answered 500, nothing to undo."""

    def commit(self) -> Answer:
        return _Reply(500, "Server Internal Error")

    def rollback(self) -> None:
        return None


_FAILED = _Failed()


class _HtableSink:
    """Native plans into kamailio.cfg's htable ``plans`` and ``$shv``.

    Plans never take the shared memory transactions need: every
    `SHM_CHECK_EVERY` entries the free memory is checked against
    `SHM_RESERVE` of the total (at least `SHM_RESERVE_MIN`)."""

    def __init__(self) -> None:
        self._puts = 0

    def put(self, key: str, line: str) -> bool:
        self._puts += 1
        if self._puts % SHM_CHECK_EVERY == 1 and not self._room():
            return False
        return int(KSR.htable.sht_sets(PLANS_TABLE, key, line)) >= 0

    @staticmethod
    def _room() -> bool:
        free = int(KSR.pv.get("$stat(free_size)") or 0)
        total = int(KSR.pv.get("$stat(total_size)") or 0)
        return free >= max(SHM_RESERVE_MIN, int(total * SHM_RESERVE))

    def drop(self, key: str) -> None:
        KSR.htable.sht_rm(PLANS_TABLE, key)

    def reset(self) -> None:
        KSR.htable.sht_reset(PLANS_TABLE)

    def mark(self, generation: str) -> None:
        KSR.pv.sets(PLANS_GENERATION, generation)


class KamailioLog(logging.Handler):
    """Python log records (the feature codes' own) as Kamailio log lines."""

    def emit(self, record: logging.LogRecord) -> None:
        line = f"divert: {record.getMessage()}\n"
        if record.levelno >= logging.ERROR:
            KSR.err(line)
        elif record.levelno >= logging.WARNING:
            KSR.warn(line)
        else:
            KSR.info(line)


class Router:
    """The object app_python3 calls: one method per route."""

    def __init__(
        self, config: AdapterConfig, feature_codes: Callable[[], FeatureCodes] | None = None
    ) -> None:
        self.config = config
        self.limits = Limits(max_diversions=config.max_diversions)
        self._reader: StoreReader | None = None
        self._store_down = False
        self._503_said: dict[str, float] = {}  # reason -> monotonic time to say it again
        self._make_codes = feature_codes
        self._codes: FeatureCodes | None = None
        self._pending: PendingCode | None = None
        self._gave_up = ""  # the line to log if the pending code is not resumed
        self._plans: PlanSync | None = None  # the plan timer's (one process)
        self._plans_failing = False
        self._plans_full = False

    @classmethod
    def from_environment(cls, feature_codes: Callable[[], FeatureCodes] | None = None) -> Router:
        """The router Kamailio loads: its environment must hold the node key
        that kamailio.cfg signs dialogs with (`divert run` puts it there)."""
        config = AdapterConfig.from_environment()
        if os.environ.get(NODE_KEY_ENV) != load_key(config.state_dir).hex():
            raise NodeKeyError(
                f"{NODE_KEY_ENV} in Kamailio's environment is not the node key of "
                f"{config.state_dir}: start Kamailio with `divert run`"
            )
        return cls(config, feature_codes)

    @property
    def reader(self) -> StoreReader:
        # Opened lazily in each worker: files never cross Kamailio's fork.
        if self._reader is None:
            self._reader = StoreReader(self.config.state_dir, self.config.cache_size)
        return self._reader

    def child_init(self, rank: int) -> int:
        """In each process after the fork.  SIP workers (rank > 0) open the
        store now: a worker holds its file from the start, so a store that
        is deleted later, and rebuilt, never stops it routing."""
        self._reader = None
        if rank > 0:
            with contextlib.suppress(StoreUnavailable):  # no store yet: a lookup retries
                self.reader.open()
        return 0

    def _store_failed(self, error: StoreUnavailable) -> None:
        """A 503, and one log line per worker until the store reads again."""
        if not self._store_down:
            self._store_down = True
            KSR.err(f"divert: store unavailable, answering 503 until it is back: {error}\n")
        self._final(503, "Service Unavailable")

    # -- routes ------------------------------------------------------------------------

    def ksr_request_route(self, msg: object, trusted: str = "0") -> int:
        """A new request (no To-tag, not ACK or CANCEL, no retransmission),
        past kamailio.cfg's checks.  `trusted`: its verdict on the sender
        (2 a carrier, 1 a customer trunk, 0 neither) from the dispatcher
        list."""
        try:
            self._request(trusted)
            if self._store_down and self.reader.healthy:  # a read from SQLite succeeded
                self._store_down = False
                KSR.notice("divert: store readable again\n")
        except UnicodeDecodeError:
            # bytes that are not UTF-8 where Python reads the request: junk
            KSR.notice("divert: malformed request: bytes that are not UTF-8\n")
            self._final(400, "Bad Request")
        except StoreUnavailable as error:
            self._store_failed(error)
        except Exception as error:  # one line, a 500, never a traceback per message
            KSR.err(f"divert: request route failed: {type(error).__name__}: {error}\n")
            self._final(500, "Server Internal Error")
        return 1

    def ksr_failure_forward(self, msg: object) -> int:
        try:
            self._failure()
        except UnicodeDecodeError:  # the caller's junk (its Request-URI), read only now
            KSR.notice("divert: malformed request: bytes that are not UTF-8\n")
            self._final(400, "Bad Request")
        except StoreUnavailable as error:
            self._store_failed(error)
        except Exception as error:
            KSR.err(f"divert: failure route failed: {type(error).__name__}: {error}\n")
            self._final(500, "Server Internal Error")
        return 1

    def ksr_plan_unreachable(self, msg: object) -> int:
        """A native plan's step found no trunk or carrier up (kamailio.cfg's
        route[PLAN_STEP]): the core decides again, as `_carry_out` would."""
        try:
            kind, call, state = decode_leg(str(KSR.pv.get(CALL_AVP)), time.time())
            decision = self._decide(call, state, Outcome.TRUNK_DOWN)
            self._carry_out(decision, call, (Outcome.TRUNK_DOWN, kind))
        except StoreUnavailable as error:
            self._store_failed(error)
        except Exception as error:
            KSR.err(f"divert: plan step failed: {type(error).__name__}: {error}\n")
            self._final(500, "Server Internal Error")
        return 1

    def ksr_plans_timer(self, msg: object) -> int:
        """kamailio.cfg's plan timer: the table of native plans brought up
        to the store (`divert.kemi.plan_sync`)."""
        try:
            if self._plans is None:
                config = PlanConfig(
                    self.config.domain, self.config.max_diversions, self.config.carrier_style
                )
                state = Path(self.config.state_dir)
                self._plans = PlanSync(state, state / "run", config, _HtableSink())
            readable = self._plans.tick()
            if (self._plans.full is not None) != self._plans_full:
                self._plans_full = self._plans.full is not None
                if self._plans_full:
                    KSR.warn(
                        "divert: native plans off: they do not fit in Kamailio's shared "
                        "memory (raise --shm); calls take the Python routes\n"
                    )
            if readable == self._plans_failing:  # a change: one line each way
                self._plans_failing = not readable
                if readable:
                    KSR.notice("divert: native plans on again\n")
                else:
                    KSR.warn("divert: native plans off: the store cannot be read\n")
        except Exception as error:
            if not self._plans_failing:
                self._plans_failing = True
                KSR.err(f"divert: native plans off: {type(error).__name__}: {error}\n")
        return 1

    def ksr_feature_code(self, msg: object) -> int:
        """In an async worker: begin the code `_feature_code` handed over
        (``INDEX LABEL AOR DIALLED``) and name its transaction for
        kamailio.cfg to resume (``ksr_feature_reply``); -1: nothing to
        resume."""
        try:
            index, label, aor, dialled = str(getattr(KSR, "async").get_data()).split(" ", 3)
            KSR.pv.seti(FEATURE_INDEX, int(index))
            KSR.pv.seti(FEATURE_LABEL, int(label))
        except Exception as error:
            KSR.err(f"divert: feature code task unreadable: {type(error).__name__}\n")
            return -1
        self._gave_up = f"divert: {aor} gave up on {dialled} before its answer: nothing changed\n"
        try:
            self._pending = self.feature_codes().begin(aor, dialled)
        except Exception as error:
            KSR.err(f"divert: feature code failed: {type(error).__name__}: {error}\n")
            self._pending = _FAILED
        return 1

    def ksr_feature_done(self, msg: object) -> int:
        """After the resume: Kamailio resumes no transaction that was
        cancelled or timed out meanwhile, and that code's work is rolled
        back."""
        pending, self._pending = self._pending, None
        if pending is not None:  # not resumed: the phone gave up, or the timer fired
            KSR.info(self._gave_up)
            with contextlib.suppress(Exception):
                pending.rollback()
        return 1

    def ksr_feature_reply(self, msg: object) -> int:
        """The code's transaction, resumed: commit and answer.  A CANCEL
        waits for this route, so it never sees a change it did not get."""
        pending, self._pending = self._pending, None
        try:
            if pending is None:
                KSR.tm.t_reply(500, "Server Internal Error")
                return 1
            answer = pending.commit()
            reason = "".join(c for c in answer.reason if 32 <= ord(c) < 127)[:160]
            KSR.tm.t_reply(answer.code, reason)
        except Exception as error:
            KSR.err(f"divert: feature code reply failed: {type(error).__name__}: {error}\n")
            KSR.tm.t_reply(500, "Server Internal Error")
        return 1

    def feature_codes(self) -> FeatureCodes:
        if self._codes is None:
            assert self._make_codes is not None
            handler = KamailioLog()
            logging.getLogger("divert").addHandler(handler)
            logging.getLogger("divert").setLevel(logging.INFO)
            self._codes = self._make_codes()
        return self._codes

    # -- request route -------------------------------------------------------------------

    def _request(self, trusted_by_list: str) -> None:
        # a trunk the dispatcher list does not name yet (it follows the
        # store within a second) is still a trunk
        trusted = trusted_by_list in (CARRIER, CUSTOMER_TRUNK) or self._from_customer_trunk()
        if not self._preloaded_route_consumed(trusted):
            KSR.sl.sl_send_reply(403, "Preloaded Route Not Allowed")
            return
        method = KSR.pv.get("$rm")
        if method == "INVITE":
            self._invite(trusted)
        elif method == "REGISTER":
            self._register()
        elif method == "OPTIONS":
            KSR.sl.sl_send_reply(200, "OK")
        else:
            KSR.hdr.append_to_reply(ALLOW)
            KSR.sl.sl_send_reply(405, "Method Not Allowed")

    def _preloaded_route_consumed(self, trusted: bool) -> bool:
        """Remove Route headers from an initial request: those naming this
        node (a phone's outbound proxy setting) always; a Route to anywhere
        else only from a trunk (this node chooses every next hop).  False:
        a stranger or a subscriber named another hop, and is refused."""
        count = int(KSR.pv.get("$hdrc(Route)") or 0)
        if count == 0:
            return True
        if not trusted:
            if count > MAX_ROUTES:
                return False
            for index in range(count):
                hops = ROUTE_URI.findall(str(KSR.hdr.get_idx("Route", index) or ""))
                if not hops or not all(_plain(hop) and KSR.is_myself(hop) for hop in hops):
                    return False
        KSR.hdr.remove("Route")
        return True

    def _register(self) -> None:
        # The AoR is the To of a REGISTER: it must be the authenticated user.
        subscriber = self._authenticated("$tU", "$td")
        if subscriber is not None:
            KSR.nathelper.fix_nated_register()  # calls go where the phone really is
            if self.config.cluster:
                self._path_through_here()
            KSR.registrar.save("location", 0)

    @staticmethod
    def _path_through_here() -> None:
        """A node of a cluster: the other nodes call the phone through this
        one, which knows where it really is (RFC 3327 Path, with the
        source address as `received`; kamailio.cfg: route PEER_CALL).  A
        phone's own Path is dropped: it would send other nodes' calls
        wherever it names.  Written as text and applied to the message:
        save() reads the message's own headers, and the path module's
        add_path_received needs a socket to send from, which a REGISTER
        answered here has not."""
        here = f"{KSR.pv.get('$Ri')}:{KSR.pv.get('$Rp')}"
        phone = f"sip:{KSR.pv.get('$si')}:{KSR.pv.get('$sp')}"
        KSR.hdr.remove("Path")
        KSR.hdr.append(f"Path: <sip:{here};lr;received={phone}>\r\n")
        KSR.textopsx.msg_apply_changes()

    def _authenticated(self, user_pv: str, domain_pv: str) -> SubscriberRecord | None:
        """Digest-authenticate the request's subscriber against the store's
        HA1; challenge (401/407) or refuse (403) and return None if not.

        A user the store does not know is checked against a random HA1, so
        it is challenged, then refused, exactly like a known user with a
        wrong password: no reply tells a stranger which usernames exist.
        """
        realm = str(KSR.pv.get(domain_pv) or "")
        subscriber = self.reader.subscriber(f"{KSR.pv.get(user_pv)}@{realm}")
        ha1 = subscriber.ha1 if subscriber is not None else UNKNOWN_USER_HA1
        verdict = KSR.auth.pv_auth_check(realm, ha1, AUTH_HA1, AUTH_CHECK_USER)
        if verdict in (AUTH_NO_CREDENTIALS, AUTH_STALE_NONCE):
            KSR.auth.auth_challenge(realm, 0)
            return None
        if verdict < 0 or subscriber is None:
            KSR.sl.sl_send_reply(403, "Forbidden")
            return None
        KSR.auth.consume_credentials()
        return subscriber

    def _from_customer_trunk(self) -> bool:
        return self.reader.trunk_at(f"{KSR.pv.get('$si')}:{KSR.pv.get('$sp')}") is not None

    def _invite(self, from_trunk: bool) -> None:
        KSR.pv.get("$tU")  # the called user must be text too (UnicodeDecodeError: 400)
        subscriber = None
        if not from_trunk:
            subscriber = self._authenticated("$fU", "$fd")
            if subscriber is None:
                return
        user = str(KSR.pv.get("$rU") or "")
        if subscriber is not None:
            for name in ANNOUNCED_DIVERSIONS:
                KSR.hdr.remove(name)
            KSR.nathelper.add_contact_alias()  # a phone behind NAT: reach it where it is
        if subscriber is not None and user == VOICEMAIL_CODE:
            self._own_voicemail(subscriber)
            return
        if subscriber is not None and user.startswith("*"):
            self._feature_code(subscriber, user)
            return
        if subscriber is not None and EXTENSION.fullmatch(user):
            reached = self.reader.extension(subscriber.domain, user)
            called = subscriber_key(reached.username, reached.domain) if reached else ""
        else:
            called = user if user.startswith("+") else "+" + user
            if not called[1:].isdigit():
                called = ""
        if not called:
            KSR.sl.sl_send_reply(404, "Not Found")
            return
        KSR.tm.t_newtran()
        prior = 0
        if subscriber is None and (headers := int(KSR.pv.get("$hdrc(Diversion)") or 0)):
            # at least one per header: values too long for Kamailio's buffer read as none
            every = str(KSR.pv.get("$(hdr(Diversion)[*])") or "")
            prior = max(headers, diversions_announced(every))
        caller = subscriber.username if subscriber else str(KSR.pv.get("$fU") or "anonymous")
        now = time.time()
        table = self.reader.table(called)
        internal = (
            subscriber is not None and table is not None and table.tenant == subscriber.tenant
        )
        if subscriber is not None:
            self._present(subscriber, internal)
            if table is None:  # a subscriber calling out: no forwarding involved
                self._outbound(called, Call(caller, False, now), subscriber)
                return
        mode = self._mode(table.tenant, now) if table is not None else None
        call = Call(caller, internal, now, mode)
        state = CallState.begin(called, prior)
        self._carry_out(self._decide(call, state, None), call)

    def _own_voicemail(self, subscriber: SubscriberRecord) -> None:
        """*97 (seed 002): the subscriber's own mailbox."""
        tenant = self.reader.tenant(subscriber.tenant)
        if tenant is None or not tenant.voicemail_uri:
            KSR.sl.sl_send_reply(404, "No Voicemail Here")
            return
        KSR.tm.t_newtran()
        mailbox = voicemail_key(subscriber.aor)
        uri = voicemail_uri(tenant.voicemail_uri, subscriber.aor)
        relay = Relay(
            mailbox, Endpoint(EndpointKind.VOICEMAIL, uri), None, (), CallState.begin(mailbox)
        )
        self._point_at(relay)
        self._relay(relay, Call(subscriber.username, False, time.time()))

    def _feature_code(self, subscriber: SubscriberRecord, dialled: str) -> None:
        """Hand a `*` code to Kamailio's async workers (`ksr_feature_code`):
        the portal write may block, a SIP worker must not.  The transaction
        waits, suspended, for at most FEATURE_TIMER_MS; retransmissions and
        a CANCEL meanwhile are tm's business."""
        if self._make_codes is None:
            KSR.sl.sl_send_reply(404, "No Feature Codes Here")
            return
        if KSR.tm.t_newtran() <= 0:
            return  # another worker has the transaction (a retransmission raced us)
        KSR.tm.t_set_fr(FEATURE_TIMER_MS, FEATURE_TIMER_MS)
        if KSR.tmx.t_suspend() < 0:
            KSR.tm.t_reply(500, "Server Internal Error")
            return
        index, label = KSR.pv.get("$T(id_index)"), KSR.pv.get("$T(id_label)")
        task = f"{index} {label} {subscriber.aor} {dialled}"
        if getattr(KSR, "async").task_data("ksr_feature_code", task) < 0:
            KSR.err("divert: async workers busy: feature code answered 503\n")
            KSR.tm.t_reply(503, "Service Unavailable")

    def _mode(self, tenant: str, now: float) -> str | None:
        record = self.reader.tenant(tenant)
        return None if record is None else tenant_mode(record, now)

    def _present(self, subscriber: SubscriberRecord, internal: bool) -> None:
        """Who the callee sees.  Internal calls: the caller's extension and
        name (seed 003).  Others: its caller ID number.  ``Privacy: id`` (or
        ``user``): anonymous.  Legs to the carriers also get its caller ID as
        P-Asserted-Identity (kept in an AVP for forwarded legs), with the
        phone's Privacy header passed on so the carrier withholds it."""
        privacy = str(KSR.pv.get("$hdr(Privacy)") or "").lower()
        hidden = bool(PRIVATE.intersection(part.strip() for part in privacy.split(";")))
        number = subscriber.caller_id
        if number is not None:
            identity = f"P-Asserted-Identity: <sip:{number}@{self.config.domain};user=phone>\r\n"
            KSR.pv.sets(IDENTITY_AVP, identity)
        if hidden:
            KSR.uac.uac_replace_from(ANONYMOUS_DISPLAY, ANONYMOUS_URI)
        elif internal and subscriber.extension:
            display = subscriber.display_name or subscriber.username
            KSR.uac.uac_replace_from(
                f'"{display}"', f"sip:{subscriber.extension}@{subscriber.domain}"
            )
        elif number is not None:
            display = f'"{subscriber.display_name}"' if subscriber.display_name else ""
            KSR.uac.uac_replace_from(display, f"sip:{number}@{self.config.domain}")

    def _outbound(self, number: str, call: Call, subscriber: SubscriberRecord) -> None:
        """A subscriber's call to a number outside divert: under the
        destination policy and with its caller ID, out via the carriers."""
        policy = self.reader.policy()
        why = "the node has no destination policy yet" if policy is None else policy.refusal(number)
        if why is None and subscriber.caller_id is None:
            why = "the caller has no number to show"
        if why is not None:
            KSR.notice(f"divert: {subscriber.aor} may not call {number}: {why}\n")
            self._final(403, f"Call Refused: calling {number} is not allowed: {why}")
            return
        KSR.hdr.append(str(KSR.pv.get(IDENTITY_AVP)))
        relay = Relay(
            number, Endpoint(EndpointKind.EXTERNAL, number), None, (), CallState.begin(number)
        )
        if self._point_at(relay) is not None:
            self._said_503((Outcome.TRUNK_DOWN, EndpointKind.EXTERNAL))
            KSR.tm.t_reply(503, "Service Unavailable")
            return
        self._relay(relay, call)

    # -- failure route -------------------------------------------------------------------

    def _failure(self) -> None:
        if KSR.tm.t_is_canceled() > 0:
            return  # the caller hung up: tm answers 487, nothing else rings
        code = KSR.tm.t_get_status_code()
        carried = KSR.pv.get(CALL_AVP)
        if not carried:
            self._no_redirect_upstream(code)
            return
        try:
            # the call keeps the mode it started in
            kind, call, state = decode_leg(str(carried), time.time())
        except StateFormatError as error:
            KSR.err(f"divert: {error}\n")
            self._no_redirect_upstream(code)
            return
        if 300 <= code < 400:
            if kind in (EndpointKind.SUBSCRIBER, EndpointKind.TRUNK):
                self._redirected(call, state, code)
            else:  # a carrier's or voicemail's: not a forward set by one of ours
                KSR.notice(f"divert: {state.current} answered {code}: not followed\n")
                self._final(480, "Temporarily Unavailable")
            return
        no_reply = KSR.tm.t_branch_replied() < 0
        outcome = outcome_of(code, KSR.tm.t_branch_timeout() > 0, no_reply, kind)
        if outcome is Outcome.TRUNK_DOWN and kind is EndpointKind.EXTERNAL:
            # A failure route starts from the caller's Request-URI again.
            KSR.seturi(f"sip:{state.current}@{self.config.domain}")
            if KSR.dispatcher.ds_next_domain() > 0:
                # the next carrier, same call and headers
                self._relay_again(bool(KSR.pv.get(HEADERS_AVP)))
                return
        if outcome is Outcome.TRUNK_DOWN and kind is EndpointKind.TRUNK:
            KSR.dispatcher.ds_mark_dst_state("ip")
        if outcome is None:
            return  # a final answer of its own (404, 403, ...): the caller gets it
        self._carry_out(self._decide(call, state, outcome), call, (outcome, kind))

    def _no_redirect_upstream(self, code: int) -> None:
        """A 3xx is never relayed to the caller, even on a path that cannot
        follow it."""
        if 300 <= code < 400:
            self._final(480, "Temporarily Unavailable")

    def _redirected(self, call: Call, state: CallState, code: int) -> None:
        """The phone or PBX answered 3xx (seed 004's forward set on the phone):
        divert follows it itself, under the destination policy, the call's
        history and the diversion bound, and never relays a 3xx upstream."""
        targets = redirect_targets(str(KSR.pv.get("$T_rpl($mb)") or ""))
        policy = self.reader.policy()

        def refusal(number: str) -> str | None:
            return (
                "the node has no destination policy yet"
                if policy is None
                else (policy.refusal(number))
            )

        started = time.perf_counter_ns()
        decision = redirect(call, state, targets, self.reader.table, refusal, self.limits)
        self._timed(started)
        if isinstance(decision, Reply):
            named = ", ".join(targets) or "no number in international form"
            KSR.notice(
                f"divert: {state.current} answered {code} naming {named}: "
                f"{decision.code} {decision.reason}\n"
            )
        self._carry_out(decision, call)

    # -- carrying out decisions ------------------------------------------------------------

    def _carry_out(
        self,
        decision: Decision,
        call: Call,
        last: tuple[Outcome, EndpointKind] | None = None,
    ) -> None:
        """Relay, or reply; targets that cannot be tried go straight back to
        the core (bounded: every step grows the call's history).  `last`:
        how the previous target failed, to say why a call ends in 503."""
        while True:
            if isinstance(decision, Reply):
                if decision.code == 503 and last is not None:
                    self._said_503(last)
                KSR.statistics.update_stat(REPLY_STAT, 1)
                self._final(decision.code, decision.reason)
                return
            unreachable = self._point_at(decision)
            if unreachable is None:
                self._relay(decision, call)
                return
            last = (unreachable, decision.endpoint.kind)
            decision = self._decide(call, decision.state, unreachable)

    def _decide(self, call: Call, state: CallState, outcome: Outcome | None) -> Decision:
        """The core's decision, timed into Kamailio's statistics."""
        started = time.perf_counter_ns()
        decision = decide(call, state, outcome, self.reader.table, self.limits)
        self._timed(started)
        return decision

    def _timed(self, started_ns: int) -> None:
        """The decision-time histogram (`divert.kemi.metrics`): two counter adds."""
        elapsed_us = (time.perf_counter_ns() - started_ns) // 1000
        KSR.statistics.update_stat(metrics.bucket_of(elapsed_us), 1)
        KSR.statistics.update_stat(metrics.DECISION_SUM_US, elapsed_us)

    def _counted_relay(self, relay: Relay) -> None:
        """A relay that goes out, and the forward it takes."""
        stats = KSR.statistics
        stats.update_stat(RELAY_STAT, 1)
        if relay.diversions:
            stats.update_stat(metrics.FORWARD_STATS[relay.diversions[-1].condition], 1)
            if relay.via is not None and relay.via.origin.endswith(" emergency"):
                stats.update_stat(metrics.EMERGENCY, 1)

    def _said_503(self, last: tuple[Outcome, EndpointKind]) -> None:
        """One log line per reason a minute (per worker) for calls ending 503."""
        outcome, kind = last
        if kind is EndpointKind.EXTERNAL:
            reason = "no carrier is up (or every carrier failed)"
        elif kind is EndpointKind.TRUNK:
            reason = "a customer trunk is down and no forward took the call"
        else:
            reason = f"the last target failed ({outcome.value}) and no forward took the call"
        now = time.monotonic()
        if now >= self._503_said.get(reason, 0.0):
            self._503_said[reason] = now + 60
            KSR.warn(f"divert: calls answered 503: {reason}\n")

    def _point_at(self, relay: Relay) -> Outcome | None:
        """Set the Request-URI and destination for `relay`, or say why it
        cannot be tried."""
        endpoint = relay.endpoint
        if endpoint.kind is EndpointKind.SUBSCRIBER:
            KSR.seturi(f"sip:{endpoint.ref}")
            if KSR.registrar.lookup("location") < 0:
                return Outcome.NOT_REGISTERED
            return None
        if endpoint.kind is EndpointKind.VOICEMAIL:
            KSR.seturi(endpoint.ref)
            return None
        KSR.seturi(f"sip:{relay.target}@{self.config.domain}")
        if endpoint.kind is EndpointKind.TRUNK:
            if KSR.dispatcher.ds_select_domain(trunk_set(endpoint.ref), ALG_ROUND_ROBIN) < 0:
                return Outcome.TRUNK_DOWN
            return None
        if KSR.dispatcher.ds_select_domain(CARRIER_SET, ALG_PRIORITY) < 0:
            return Outcome.TRUNK_DOWN
        return None

    def _relay(self, relay: Relay, call: Call) -> None:
        self._counted_relay(relay)
        # A call's diversions only grow along its chain, so a relay without
        # any comes before every relay with some: only those need the branch
        # route, and no stale headers can reach a later branch.
        if relay.diversions:
            style = self._style(relay)
            original = KSR.pv.get("$ou") or ""
            headers = "".join(
                f"{name}: {value}\r\n"
                for name, value in diversion_headers(relay, self.config.domain, style, original)
            )
            if relay.endpoint.kind is EndpointKind.EXTERNAL:
                headers += str(KSR.pv.get(IDENTITY_AVP) or "")  # a subscriber's call, forwarded
            KSR.tm.t_reply(181, "Call Is Being Forwarded")
            KSR.pv.sets(HEADERS_AVP, headers)
        KSR.pv.sets(CALL_AVP, encode_leg(relay.endpoint.kind, call, relay.state))
        if relay.endpoint.kind is EndpointKind.SUBSCRIBER:
            KSR.tm.t_on_reply(PHONE_REPLY_ROUTE)
        ring = (relay.ring_timeout or DEFAULT_RING_SECONDS) * 1000
        KSR.tm.t_set_fr(ring, 2000)
        self._relay_again(bool(relay.diversions))

    def _relay_again(self, announce: bool) -> None:
        """Relay with the failure route armed, and the branch route that adds
        the diversion headers if `announce`."""
        KSR.tm.t_on_failure(FAILURE_ROUTE)
        if announce:
            KSR.tm.t_on_branch(BRANCH_ROUTE)
        if KSR.tm.t_relay() < 0:
            KSR.tm.t_reply(500, "Server Internal Error")

    def _style(self, relay: Relay) -> str:
        if relay.endpoint.kind is EndpointKind.TRUNK:
            trunk = self.reader.trunk(int(relay.endpoint.ref))
            if trunk is not None:
                return trunk.diversion_style
        return self.config.carrier_style

    def _final(self, code: int, reason: str) -> None:
        """A final reply: through the transaction once there is one."""
        KSR.sl.send_reply(code, reason)
