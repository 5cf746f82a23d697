"""`divert run`: one node in the foreground: the sync worker and Kamailio.

Start-up checks say in one line what is wrong (Kamailio missing, the
listen port taken, another `divert run` on the state folder, the portal
unreachable with no store to route from).  The store is synced once before
Kamailio starts, so routing works from the first call; with the portal
down and a store present the node starts anyway, says so in one line, and
the sync worker catches up when the portal returns.

The children's PIDs go to ``<state-dir>/run/*.pid``.  `divert.supervisor`
restarts any child that dies, with backoff, and leaves no process behind
on any exit; Ctrl-C or SIGTERM stops them all cleanly.  Under systemd
(``Type=notify``) the node reports ready once Kamailio answers SIP.
Registrations are kept in ``<state-dir>/registrations.sqlite``
(`divert.registrations`), so they outlive a Kamailio restart.

Trunks live in Kamailio's dispatcher: set 1 holds the carriers given with
``--carrier``, set 1000+id each customer trunk from the store.  The list is
rewritten and reloaded when the store's trunks change.

The first start makes the node key (`divert.kemi.signing`) that signs the dialogs
the node sets up.  Kamailio's log reaches `divert run`'s standard error
through `divert.logfilter`, which limits the lines about malformed
messages per source.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TextIO

from sqlalchemy.exc import SQLAlchemyError

from divert import metrics, readiness, registrations
from divert.db import absolute_portal_url
from divert.errors import DivertError, PortalUnavailable
from divert.kemi.signalling import CARRIER_SET, PEER_SET, trunk_set
from divert.kemi.signing import NODE_KEY_ENV, NodeKeyError, ensure_key, load_key
from divert.kemi.store.format import META_POSITION, META_SYNCED_AT
from divert.kemi.store.reader import CACHE_ENTRIES
from divert.kemi.store.view import StoreView
from divert.kemi.store.writer import current_generation
from divert.logfilter import log_socket, start_pump
from divert.signals import drain, stop_on_signals
from divert.supervisor import Child, Supervisor, leftovers
from divert.sync.worker import PORTAL_DOWN_ENV, PORTAL_ERRORS, StoreFault, SyncWorker, WorkerConfig

log = logging.getLogger("divert.run")

# Package data, in a checkout as in an installed wheel.  Not resolved: in a
# checkout divert/kemi links to kemi/, and the entry finds the `divert`
# package two folders above the path it is given.
PACKAGE = Path(str(resources.files("divert")))
CONFIG = PACKAGE / "kamailio_cfg" / "kamailio.cfg"
REGEX_GROUPS = CONFIG.with_name("regex-groups")
ENTRY = PACKAGE / "kemi" / "entry.py"
DS_FLAGS_PROBE = 8  # dispatcher: OPTIONS-probe this destination
DS_FLAGS_DISABLED = 4  # never probed nor chosen: a peer node, only recognised
# Kamailio's memory managers: TLSF allocates in constant time, where the
# default (qm) searches its free lists and cost a seventh of a SIP worker's
# CPU under load (perf, make bench); both pools use it.
MEMORY_MANAGER = "tlsf"
# a cluster's size: DMQ sends each registration to every other node, and
# kamailio.cfg names each peer (DMQ_PEER_1 ...)
MAX_PEERS = 7


@dataclass(frozen=True, slots=True)
class NodeConfig:
    portal_url: str
    listen: str  # ADDR:PORT
    state_dir: Path
    carriers: tuple[str, ...] = ()
    domain: str = "divert.invalid"
    children: int = 4
    probe_interval: int = 2
    fail_timer_ms: int = 2000
    shm_mb: int = 512  # Kamailio's shared memory: transactions live here
    # store entries each SIP worker caches; every worker caches for itself
    cache_entries: int = CACHE_ENTRIES
    metrics: str = "127.0.0.1:9161"  # Prometheus scrape target ADDR:PORT, '' : none
    # the other nodes of its cluster (SIP IPv4:PORT each); none: it runs alone
    peers: tuple[str, ...] = ()

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"


def plan_slot_bits(numbers: int) -> int:
    """The plan table's size (2^bits slots, kamailio.cfg's htable ``plans``):
    about two slots a number, so that a lookup walks no chain, between 4,096
    slots (128 KB of shared memory) and 1,048,576 (32 MB).  Kamailio is
    started again with the size of the store it then has."""
    return max(12, min(20, (2 * numbers).bit_length()))


def kamailio_binary() -> str:
    found = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin")
    if found is None:
        raise DivertError("Kamailio is not installed: run 'make deps' (Debian packages kamailio*)")
    return found


def parse_listen(listen: str, option: str = "--listen") -> tuple[str, int]:
    """``IPv4:PORT`` as Kamailio's ``listen`` takes it (a literal address: no
    name to resolve), or a one-line DivertError naming `option`."""
    host, _, port = listen.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        number = int(port)
    except ValueError:
        raise DivertError(f"{option} {listen!r} must be IPv4:PORT, e.g. 127.0.0.1:5060") from None
    if not 0 < number < 65536:
        raise DivertError(f"{option} {listen!r}: the port must be 1-65535")
    return host, number


def check_listen(listen: str) -> tuple[str, int]:
    address = parse_listen(listen)
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(address)
        finally:
            probe.close()
    except OSError as error:
        raise DivertError(
            f"cannot listen on {listen}: {error.strerror}; is another node running?"
        ) from None
    return address


def parse_peers(listen: str, peers: list[str]) -> tuple[str, ...]:
    """The `--peer` addresses, checked: IPv4:PORT each, on an address other
    than this node's (Kamailio takes any port of its own address for
    itself: a peer there would be skipped as this node's own Path), none
    twice; a one-line DivertError otherwise."""
    own_host, _ = parse_listen(listen)
    seen: list[str] = []
    for peer in peers:
        host, _ = parse_listen(peer, "--peer")
        if host == own_host:
            raise DivertError(
                f"--peer {peer}: a peer needs an address other than this node's ({own_host})"
            )
        if peer in seen:
            raise DivertError(f"--peer {peer} is given twice")
        seen.append(peer)
    if len(seen) > MAX_PEERS:
        raise DivertError(f"at most {MAX_PEERS} --peer: a cluster of {MAX_PEERS + 1} nodes")
    return tuple(seen)


def dispatcher_list(state_dir: Path, carriers: tuple[str, ...], peers: tuple[str, ...] = ()) -> str:
    """The dispatcher list: carriers (set 1), the cluster's other nodes (set
    2: kamailio.cfg takes DMQ messages and Path-routed calls from them
    only), then every customer trunk."""
    lines = [
        f"{CARRIER_SET} sip:{carrier} {DS_FLAGS_PROBE} {10 - i}"
        for i, carrier in enumerate(carriers)
    ]
    lines += [f"{PEER_SET} sip:{peer} {DS_FLAGS_DISABLED} 0" for peer in peers]
    store = StoreView.open(state_dir)
    try:  # sqlite3.Error when the store is gone or broken: the caller keeps its list
        lines += [
            f"{trunk_set(trunk_id)} sip:{address} {DS_FLAGS_PROBE} 0"
            for trunk_id, address in store.trunk_addresses()
        ]
    finally:
        store.close()
    return "\n".join(lines) + "\n"


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.supervisor = Supervisor()
        self._pumps: list[threading.Thread] = []
        self._lock: TextIO | None = None
        self._portal_down = False
        self._ready = False
        self._announced = False  # READY=1 told to systemd
        self._list_failure_logged = False
        self._apply_failed = False

    def prepare(self, portal_reachable: bool = True) -> None:
        """Everything that can fail before a process starts, in one line each."""
        kamailio_binary()
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        leftovers(  # "features": the feature server older nodes ran
            [self.config.run_dir / f"{name}.pid" for name in ("kamailio", "features", "sync")],
            str(self.config.state_dir),
        )
        check_listen(self.config.listen)
        try:
            ensure_key(self.config.state_dir)
        except (OSError, NodeKeyError) as error:
            raise DivertError(f"cannot make the node key: {error}") from None
        registrations.ensure(self.config.state_dir)
        self._first_sync(portal_reachable)
        self._write_dispatcher_list()

    def _take_lock(self) -> None:
        """One `divert run` per state folder: a second would fight the first
        for its store and kill its processes as leftovers."""
        path = self.config.run_dir / "lock"
        lock = open(path, "a+")  # noqa: SIM115 -- held until the process ends
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise DivertError(
                f"state folder {self.config.state_dir} is in use by divert run (pid {holder})"
            ) from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _first_sync(self, portal_reachable: bool) -> None:
        try:
            worker = SyncWorker(WorkerConfig(self.config.portal_url, self.config.state_dir))
        except (sqlite3.Error, OSError) as error:  # a full disk: opening writes too
            if current_generation(self.config.state_dir) is None:
                raise DivertError(f"cannot open the store: {error}") from None
            log.warning(
                "the store cannot be written (%s): routing from it as it is; "
                "the sync worker retries",
                error,
            )
            return
        try:
            has_store = worker.writer.meta(META_POSITION) is not None
            synced_at = worker.writer.meta(META_SYNCED_AT) or "an unknown time"
            reason = "unreachable"
            if portal_reachable:
                try:
                    worker.sync_once()
                    return
                except (sqlite3.Error, StoreFault) as error:  # the store's: a full disk
                    reason = f"reachable, but the store cannot take its changes ({error})"
                except (*PORTAL_ERRORS, SQLAlchemyError) as error:
                    reason = f"unreachable ({type(error).__name__})"
        finally:
            worker.close()
        if not has_store:
            raise PortalUnavailable(
                f"the portal is {reason} and this node has no store yet: "
                "start the portal, or check --portal"
            )
        self._portal_down = reason.startswith("unreachable")
        log.warning(
            "portal %s: routing from the store synced at %s; the sync worker catches up "
            "when the portal returns",
            reason,
            synced_at,
        )

    def start(self) -> None:
        # the portal's URL (its password) goes in the environment, not on a
        # command line that `ps` shows to every user
        cli = [sys.executable, "-m", "divert.cli"]
        state = ["--state-dir", str(self.config.state_dir)]
        run = self.config.run_dir
        # the first start of each knows the portal is down: `prepare` said so
        env = {"DIVERT_PORTAL": self.config.portal_url}
        env |= {PORTAL_DOWN_ENV: "1"} if self._portal_down else {}
        sync = [*cli, "sync", *state]
        self.supervisor.add(Child("sync", lambda: sync, dict(env), run / "sync.pid"))
        self.supervisor.add(
            Child(
                "kamailio",
                self._kamailio_command,
                self._kamailio_environment(),
                run / "kamailio.pid",
                stderr=self._kamailio_stderr,
            )
        )
        self.supervisor.start_all()
        for child in self.supervisor.children:  # a restarted child says what it finds
            child.env.pop(PORTAL_DOWN_ENV, None)

    def _kamailio_stderr(self) -> tuple[int, Callable[[], None]]:
        """Kamailio's standard error, through the log filter; a pump per start."""
        reader, writer = log_socket()
        self._pumps = [pump for pump in self._pumps if pump.is_alive()]

        def after_spawn() -> None:
            os.close(writer)
            self._pumps.append(start_pump(reader, sys.stderr.buffer))

        return writer, after_spawn

    def _kamailio_command(self) -> list[str]:
        run = self.config.run_dir
        defines = {
            "LISTEN": f"udp:{self.config.listen}",
            "DIVERT_ENTRY": f'"{ENTRY}"',
            "CTL_SOCKET": f'"unix:{run / "kamailio_ctl"}"',
            "RPC_FIFO": f'"{run / "kamailio_rpc.fifo"}"',
            "DS_LIST": f'"{self.config.state_dir / "dispatcher.list"}"',
            "DS_PING": str(self.config.probe_interval),
            "FR_TIMER": str(self.config.fail_timer_ms),
            "REGISTRATIONS_DB": f'"sqlite://{registrations.path(self.config.state_dir)}"',
            "PLANS_HTABLE": f'"plans=>size={plan_slot_bits(self._numbers())};"',
            "REGEX_GROUPS": f'"{REGEX_GROUPS}"',
        }
        command = [
            kamailio_binary(),
            "-f",
            str(CONFIG),
            "-DD",
            "-E",
            "-m",
            str(self.config.shm_mb),
            "-M",
            "8",
            "-x",
            MEMORY_MANAGER,
            "-X",
            MEMORY_MANAGER,
            "-n",
            str(self.config.children),
            "-P",
            str(run / "kamailio.pid.main"),
            "-Y",
            str(run),  # Kamailio's runtime folder: not /run/kamailio, which needs root
        ]
        if self.config.peers:
            defines["CLUSTER"] = "1"
            defines["DMQ_SERVER"] = f'"sip:{self.config.listen}"'
            for index, peer in enumerate(self.config.peers, 1):
                defines[f"DMQ_PEER_{index}"] = f'"sip:{peer}"'
        for name, value in defines.items():
            command += ["-A", f"{name}={value}"]
        return command

    def _numbers(self) -> int:
        """Forward tables in the store (0 when it cannot be read)."""
        try:
            view = StoreView.open(self.config.state_dir)
            try:
                return view.counts()["forward_tables"]
            finally:
                view.close()
        except sqlite3.Error:
            return 0

    def _kamailio_environment(self) -> dict[str, str]:
        return {
            "DIVERT_STATE_DIR": str(self.config.state_dir.resolve()),
            "DIVERT_VENV": str(Path(sys.prefix)),
            "DIVERT_DOMAIN": self.config.domain,
            "DIVERT_CACHE_SIZE": str(self.config.cache_entries),
            # feature codes, in Kamailio's async workers (which run in "/")
            "DIVERT_PORTAL": absolute_portal_url(self.config.portal_url),
            # the native routes check dialog signatures with it (kemi/signing.py)
            NODE_KEY_ENV: load_key(self.config.state_dir).hex(),
            # REGISTERs get a Path through this node (kemi/adapter.py)
            "DIVERT_CLUSTER": "1" if self.config.peers else "",
        }

    def watch(self, stopping: Callable[[], bool], wakeup_fd: int) -> int:
        """Until a signal: restart what died, keep the dispatcher list in step,
        tell systemd when SIP is answered."""
        last_list = self._read_dispatcher_list()
        previous_chld = signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select
        try:
            while not stopping():
                wait = min(self.supervisor.check(), 1.0)
                kamailio = self.supervisor.child("kamailio")
                if not kamailio.running:
                    self._ready = False
                elif not self._ready:
                    # up to a second: a Kamailio restarted into a burst of
                    # retransmissions may answer slowly
                    self._ready = readiness.sip_answers(self.config.listen, timeout=1.0)
                    if self._ready:
                        self._announce_ready()
                current = self._current_dispatcher_list()
                if current is not None and current != last_list and kamailio.running:
                    last_list = self._apply_dispatcher_list(current, last_list)
                if select.select([wakeup_fd], [], [], max(wait, 0.05))[0]:
                    drain(wakeup_fd)
        finally:
            signal.signal(signal.SIGCHLD, previous_chld)
            readiness.notify("STOPPING=1")
            self.stop()
        return 0

    def _announce_ready(self) -> None:
        status = f"STATUS=routing on {self.config.listen}"
        if not self._announced:  # the first Kamailio may have died before answering
            self._announced = True
            log.info("node ready: SIP answered on %s", self.config.listen)
            readiness.notify(f"READY=1\n{status}")
        else:
            log.info("kamailio answers SIP again on %s", self.config.listen)
            readiness.notify(status)

    def stop(self) -> None:
        self.supervisor.stop_all()
        for pump in self._pumps:
            pump.join(timeout=5)  # the last lines Kamailio wrote

    def _read_dispatcher_list(self) -> str:
        try:
            return (self.config.state_dir / "dispatcher.list").read_text()
        except OSError:
            return ""

    def _current_dispatcher_list(self) -> str | None:
        """The list the store asks for; None (the list stays) when the store
        cannot be read, logged once until it can again."""
        try:
            current = dispatcher_list(
                self.config.state_dir, self.config.carriers, self.config.peers
            )
        except (sqlite3.Error, OSError) as error:
            if not self._list_failure_logged:
                log.warning("trunk list kept: cannot read the store (%s)", error)
                self._list_failure_logged = True
            return None
        self._list_failure_logged = False
        return current

    def _apply_dispatcher_list(self, current: str, last: str) -> str:
        """Write and reload `current`; the list now in force.  A failure is
        retried at the next look, and logged once until it succeeds."""
        quiet = self._apply_failed
        self._apply_failed = not (
            self._write_dispatcher_list(current, quiet) and self._reload_dispatcher(quiet)
        )
        return last if self._apply_failed else current

    def _write_dispatcher_list(self, text: str | None = None, quiet: bool = False) -> bool:
        """Write the list Kamailio's dispatcher loads; False if it could not
        (a full disk), except at start, where a node without one cannot run."""
        content = (
            text
            if text is not None
            else dispatcher_list(self.config.state_dir, self.config.carriers, self.config.peers)
        )
        path = self.config.state_dir / "dispatcher.list"
        temporary = path.with_suffix(".tmp")
        try:
            temporary.write_text(content)
            temporary.replace(path)
        except OSError as error:
            if not path.exists():
                raise DivertError(f"cannot write {path}: {error.strerror}") from None
            if not quiet:
                log.warning("trunk list not updated: cannot write %s (%s)", path, error.strerror)
            return False
        return True

    def _reload_dispatcher(self, quiet: bool = False) -> bool:
        socket_path = f"unix:{self.config.run_dir / 'kamailio_ctl'}"
        try:
            result = subprocess.run(
                ["kamcmd", "-s", socket_path, "dispatcher.reload"],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            if not quiet:
                log.warning("dispatcher reload failed: %s", error)
            return False
        if result.returncode != 0:
            if not quiet:
                log.warning(
                    "dispatcher reload failed: %s", result.stderr.strip() or result.stdout.strip()
                )
            return False
        log.info("customer trunks changed: dispatcher reloaded")
        return True


def run_node(config: NodeConfig, portal_reachable: bool = True) -> int:
    node = Node(config)
    node.prepare(portal_reachable)
    with stop_on_signals() as (stopping, wakeup_fd):
        try:
            node.start()
            log.info("node listening on %s, state in %s", config.listen, config.state_dir)
        except BaseException:
            node.stop()
            raise
        server = None
        if config.metrics:
            ctl = f"unix:{config.run_dir / 'kamailio_ctl'}"
            exporter = metrics.Exporter(config.state_dir, ctl, config.portal_url)
            server = metrics.serve(exporter, parse_listen(config.metrics, "--metrics"))
        try:
            return node.watch(stopping, wakeup_fd)
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
