"""The baseline's routes (bench/baseline/kamailio.cfg) line for line as a
Python KEMI script: a control for `make bench`.

Set beside divert and the native baseline, it separates what the embedded
Python costs per call (this twin against the native routes) from what
divert's own work costs (divert against this twin).  Kamailio loads it with
``-A PYTHON_TWIN="/path/twin.py"``; the carrier comes from $BENCH_CARRIER.
"""

import os

import KSR  # type: ignore[import-not-found]

CARRIER = os.environ.get("BENCH_CARRIER", "sip:127.0.1.11:5080")


class Twin:
    def child_init(self, rank: int) -> int:
        return 0

    def ksr_request_route(self, msg: object) -> int:
        if KSR.maxfwd.process_maxfwd(10) < 0:
            KSR.sl.sl_send_reply(483, "Too Many Hops")
            return 1
        if KSR.sanity.sanity_check(17895, 7) < 0:
            return 1
        if KSR.is_OPTIONS() and KSR.pv.get("$rU") is None:
            KSR.sl.sl_send_reply(200, "OK")
            return 1
        if KSR.siputils.has_totag() > 0:
            if KSR.rr.loose_route() > 0 or (KSR.is_ACK() and KSR.tm.t_check_trans() > 0):
                KSR.tm.t_relay()
            elif not KSR.is_ACK():
                KSR.sl.sl_send_reply(404, "Not Here")
            return 1
        if KSR.is_CANCEL():
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return 1
        KSR.tm.t_check_trans()
        if not KSR.is_INVITE():
            KSR.sl.sl_send_reply(405, "Method Not Allowed")
            return 1
        KSR.rr.record_route()
        called = KSR.pv.get("$rU")
        forward = KSR.htable.sht_get("always", called)
        if forward is not None:
            self._forward("unconditional", forward)
            return 1
        destination = KSR.htable.sht_get("dest", called)
        if destination is None:
            KSR.sl.sl_send_reply(404, "Not Found")
            return 1
        KSR.pv.sets("$du", destination)
        KSR.tm.t_on_failure("ksr_failure_busy")
        KSR.tm.t_relay()
        return 1

    def ksr_failure_busy(self, msg: object) -> int:
        if KSR.tm.t_is_canceled() > 0:
            return 1
        if KSR.tm.t_get_status_code() == 486:
            forward = KSR.htable.sht_get("busy", KSR.pv.get("$rU"))
            if forward is not None:
                self._forward("user-busy", forward)
        return 1

    def _forward(self, reason: str, number: str) -> None:
        KSR.diversion.add_diversion(reason)
        KSR.pv.sets("$rU", number)
        KSR.pv.sets("$du", CARRIER)
        KSR.tm.t_relay()


def mod_init() -> Twin:
    return Twin()
