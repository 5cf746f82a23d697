"""The feature server: a small SIP responder for `*` codes, beside Kamailio.

Kamailio authenticates the subscriber, adds ``X-Divert-Subscriber:
user@domain;mac=...`` and relays the INVITE here (statefully, so
retransmissions and the ACK are its business).  The server only accepts
requests from Kamailio's own address that carry the node's voucher for the
subscriber, the code and the Call-ID (`divert.kemi.signing`; Kamailio removes the
header from everything that comes in), carries the code out against the
portal and answers with one final reply whose reason phrase says what
happened:

- ``480 Forwarding Activated (always) to +39...`` / ``... Cancelled``: done;
- ``403 Forwarding Refused: <why>``: a premium-rate number, a loop, an
  invalid number; nothing changed;
- ``404 Unknown Feature Code``;
- when the portal cannot be reached, the code is checked against this
  node's store by the portal's rules (`divert.features.local`): refused
  codes are answered as above; accepted ones get their usual reply with
  ``(queued for the portal)`` and wait in this node's queue
  (``<state-dir>/feature-queue.sqlite``), delivered in the order dialled as
  soon as the portal answers again.  Codes dialled meanwhile queue behind
  them, so none is lost and the order is kept.  A code the portal refuses
  on delivery is logged with the reason.  ``480 Forwarding Queued`` is the
  answer when the node cannot check the code either (no store yet).

After a change, or a queued code, it wakes this node's sync worker
(`divert.sync.wake`): the worker recompiles from the portal, or writes a queued
code's effect into the store, so the next call routes by it at once.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from divert.db import open_portal
from divert.features.apply import ACTIVATED, Answer, Refused, carry_out
from divert.features.local import LocalNode, NotOnNode
from divert.features.queue import FeatureQueue, Queued
from divert.kemi.signing import load_key, voucher_holds
from divert.signals import drain, stop_on_signals
from divert.sync import wake

log = logging.getLogger("divert.features")

SUBSCRIBER_HEADER = "x-divert-subscriber"
MAX_REMEMBERED = 1000
RETRY_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    portal_url: str
    listen: tuple[str, int]
    kamailio_host: str
    state_dir: Path


@dataclass
class SipRequest:
    method: str
    ruri_user: str
    headers: list[tuple[str, str]]

    def first(self, *names: str) -> str | None:
        """The first header with one of `names` (long and compact forms)."""
        lowered = {name.lower() for name in names}
        return next((v for n, v in self.headers if n.lower() in lowered), None)

    def every(self, name: str) -> list[str]:
        lowered = name.lower()
        return [v for n, v in self.headers if n.lower() == lowered]


def parse_request(data: bytes) -> SipRequest | None:
    text = data.decode("utf-8", errors="replace")
    head = text.split("\r\n\r\n", 1)[0]
    lines = head.split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("SIP/2.0"):
        return None
    uri = parts[1]
    user = uri.split(":", 1)[-1].split("@", 1)[0] if "@" in uri else ""
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # a folded line continues its header
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if colon:
            headers.append((name.strip(), value.strip()))
    return SipRequest(parts[0], user, headers)


def reply(request: SipRequest, answer: Answer) -> bytes:
    """A final reply to `request`, echoing what RFC 3261 says a UAS echoes."""
    reason = "".join(c for c in answer.reason if 32 <= ord(c) < 127)[:160]
    lines = [f"SIP/2.0 {answer.code} {reason}"]
    lines += [f"Via: {v}" for n, v in request.headers if n.lower() in ("via", "v")]
    for name in ("From", "Call-ID", "CSeq"):
        value = request.first(name)
        if value is not None:
            lines.append(f"{name}: {value}")
    to = request.first("To") or ""
    lines.append(f"To: {to}" + ("" if ";tag=" in to else ";tag=divert-features"))
    lines += ["Server: divert-features", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


class FeatureServer:
    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        self._engine: Engine | None = None
        self.key = load_key(config.state_dir)
        self._answered: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self.queue = FeatureQueue(config.state_dir)
        self._next_retry = 0.0
        self._refusals_logged = 0.0  # monotonic time before which refusals go unlogged
        self._faults_logged = 0.0

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = open_portal(self.config.portal_url)
        return self._engine

    def handle(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        """The reply to send for one datagram, or None."""
        if source[0] != self.config.kamailio_host:
            return None  # only Kamailio, which authenticated the phone, may ask
        request = parse_request(data)
        if request is None or request.method == "ACK":
            return None
        if request.method != "INVITE":
            return reply(request, Answer(405 if request.method != "OPTIONS" else 200, "OK"))
        subscriber = self._vouched(request)
        if subscriber is None:
            return reply(request, Answer(403, "Forwarding Refused: not authenticated"))
        key = (request.first("Call-ID", "i") or "", request.first("CSeq") or "")
        if key in self._answered:
            return self._answered[key]  # a retransmission: same answer, no second change
        answer = self._carry_out(subscriber, request.ruri_user)
        response = reply(request, answer)
        self._answered[key] = response
        while len(self._answered) > MAX_REMEMBERED:
            self._answered.popitem(last=False)
        return response

    def _vouched(self, request: SipRequest) -> str | None:
        """The subscriber Kamailio vouches for (user@domain), or None.  Kamailio
        removes every X-Divert-Subscriber that comes in and adds exactly one."""
        vouchers = request.every(SUBSCRIBER_HEADER)
        if len(vouchers) == 1:
            subscriber, _, mac = vouchers[0].partition(";mac=")
            call_id = request.first("Call-ID", "i") or ""
            if subscriber and voucher_holds(self.key, subscriber, request.ruri_user, call_id, mac):
                return subscriber
        now = time.monotonic()
        if now >= self._refusals_logged:  # one line a minute, however many come
            log.warning("a feature code without the node's voucher was refused")
            self._refusals_logged = now + 60
        return None

    def _carry_out(self, subscriber: str, dialled: str) -> Answer:
        now = time.time()
        if self.pending() == 0 or self.deliver_queue():
            try:
                answer = self._apply(subscriber, dialled, now)
            except SQLAlchemyError as error:
                self._portal_failed(error)
            else:
                log.info("%s dialled %s: %d %s", subscriber, dialled, answer.code, answer.reason)
                if answer.code == ACTIVATED:
                    self._wake_sync()
                return answer
        return self._queue(subscriber, dialled, now)

    def _queue(self, subscriber: str, dialled: str, now: float) -> Answer:
        """The portal is down: check the code on this node, queue it, and
        have the sync worker put its effect into the store."""
        try:
            # opened for each code: the sync worker may have swapped in a rebuilt store
            local = LocalNode.open(self.config.state_dir)
            try:
                effect = local.effect(subscriber, dialled, now)
            finally:
                local.close()
        except NotOnNode as error:
            log.warning("cannot check %s of %s on this node: %s", dialled, subscriber, error)
            answer = Answer(
                ACTIVATED, "Forwarding Queued: the portal is unavailable, it applies when back"
            )
            chosen = None
        else:
            if effect.answer.code != ACTIVATED:
                reason = effect.answer.reason
                log.info("%s dialled %s: %d %s", subscriber, dialled, effect.answer.code, reason)
                return effect.answer
            answer = Answer(ACTIVATED, f"{effect.answer.reason} (queued for the portal)")
            chosen = effect.chosen
        self.queue.add(subscriber, dialled, now, chosen)
        log.info("%s dialled %s: queued until the portal is back", subscriber, dialled)
        self._wake_sync()
        return answer

    def _apply(
        self, subscriber: str, dialled: str, now: float, chosen: str | None = None
    ) -> Answer:
        try:
            with self.engine.begin() as connection:
                return carry_out(connection, subscriber, dialled, now, chosen)
        except Refused as refused:
            return refused.answer()

    def pending(self) -> int:
        return self.queue.count()

    def deliver_queue(self) -> bool:
        """Deliver queued codes, oldest first; True when the queue is empty."""
        delivered = removed = 0
        for row in self.queue.pending():
            try:
                answer = self._deliver(row)
            except SQLAlchemyError as error:
                self._portal_failed(error)
                break
            if answer.code == ACTIVATED:
                delivered += 1
            else:
                log.warning(
                    "queued code %s of %s refused: %s", row.dialled, row.subscriber, answer.reason
                )
            self.queue.remove(row.id)
            removed += 1
        if delivered:
            log.info("delivered %d queued feature code(s)", delivered)
        if removed:
            self._wake_sync()  # the portal's data now replaces the codes' local effect
        return self.pending() == 0

    def _deliver(self, row: Queued) -> Answer:
        return self._apply(row.subscriber, row.dialled, row.received_at, row.chosen)

    def _portal_failed(self, error: SQLAlchemyError) -> None:
        log.warning("portal unavailable for feature codes: %s", type(error).__name__)
        self._next_retry = time.monotonic() + RETRY_SECONDS
        if self._engine is not None:
            self._engine.dispose()

    def answer(self, sock: socket.socket) -> None:
        """Read one datagram from `sock` and answer it.  Its fault is logged
        (once a minute) and is never the server's end."""
        data, source = sock.recvfrom(65535)
        try:
            response = self.handle(data, source)
        except Exception as error:
            self._fault(error)
            return
        if response is not None:
            sock.sendto(response, source)

    def _fault(self, error: Exception) -> None:
        now = time.monotonic()
        if now >= self._faults_logged:
            log.error("a request failed: %s: %s", type(error).__name__, error)
            self._faults_logged = now + 60

    def _wake_sync(self) -> None:
        wake.wake(self.config.state_dir)

    def serve(self, stopping: Callable[[], bool], wakeup_fd: int | None = None) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(self.config.listen)
        log.info("feature server on %s:%d", *self.config.listen)
        try:
            while not stopping():
                watched = [sock.fileno()] + ([wakeup_fd] if wakeup_fd is not None else [])
                ready, _, _ = select.select(watched, [], [], 1.0)
                if sock.fileno() in ready:
                    self.answer(sock)
                if wakeup_fd is not None and wakeup_fd in ready:
                    drain(wakeup_fd)
                if time.monotonic() >= self._next_retry and self.pending():
                    self._next_retry = time.monotonic() + RETRY_SECONDS
                    self.deliver_queue()
        finally:
            sock.close()
            self.queue.close()
            if self._engine is not None:
                self._engine.dispose()


def serve_until_signalled(config: FeatureConfig) -> int:
    """`divert features`: serve until SIGTERM/SIGINT; returns the exit code."""
    with stop_on_signals() as (stopping, wakeup_fd):
        FeatureServer(config).serve(stopping, wakeup_fd)
    return 0
