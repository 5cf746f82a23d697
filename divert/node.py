"""`divert run`: one node in the foreground, the sync worker and Kamailio.

Start-up checks say in one line what is wrong (Kamailio missing, the
listen port taken, the portal unreachable with no store to route from).
The store is synced once before Kamailio starts, so routing works from the
first call.  Both processes' PIDs go to ``<state-dir>/run/*.pid``.  If either
process dies the other is stopped and `divert run` exits non-zero; Ctrl-C or
SIGTERM stops both cleanly.

Trunks live in Kamailio's dispatcher: set 1 holds the carriers given with
``--carrier``, set 1000+id each customer trunk from the store.  The list is
rewritten and reloaded when the store's trunks change.

The first start makes the node key (`kemi.signing`) that signs the dialogs
the node sets up.  Kamailio's log reaches `divert run`'s standard error
through `divert.logfilter`, which limits the lines about malformed
messages per source.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from divert.errors import DivertError
from divert.logfilter import log_socket, start_pump
from divert.signals import drain, stop_on_signals
from kemi.signalling import CARRIER_SET, trunk_set
from kemi.signing import NodeKeyError, ensure_key
from kemi.store.format import META_POSITION, STORE_FILE
from kemi.store.reader import CACHE_ENTRIES
from sync.worker import PORTAL_ERRORS, SyncWorker, WorkerConfig

log = logging.getLogger("divert.run")

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "kamailio-cfg" / "kamailio.cfg"
ENTRY = ROOT / "kemi" / "entry.py"
DS_FLAGS_PROBE = 8  # dispatcher: OPTIONS-probe this destination
# Kamailio's memory managers: TLSF allocates in constant time, where the
# default (qm) searches its free lists and cost a seventh of a SIP worker's
# CPU under load (perf, make bench); both pools use it.
MEMORY_MANAGER = "tlsf"


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

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"


def kamailio_binary() -> str:
    found = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin")
    if found is None:
        raise DivertError("Kamailio is not installed: run 'make deps' (Debian packages kamailio*)")
    return found


def check_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    try:
        address = (host, int(port))
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(address)
        finally:
            probe.close()
    except ValueError:
        raise DivertError(f"--listen {listen!r} must be IPv4:PORT, e.g. 127.0.0.1:5060") from None
    except OSError as error:
        raise DivertError(
            f"cannot listen on {listen}: {error.strerror}; is another node running?"
        ) from None
    return address


def dispatcher_list(state_dir: Path, carriers: tuple[str, ...]) -> str:
    """The dispatcher list: carriers (set 1), then every customer trunk."""
    lines = [
        f"{CARRIER_SET} sip:{carrier} {DS_FLAGS_PROBE} {10 - i}"
        for i, carrier in enumerate(carriers)
    ]
    store = sqlite3.connect(f"file:{state_dir / STORE_FILE}?mode=ro", uri=True)
    try:
        rows = store.execute(
            "SELECT trunk_id, address FROM trunk_addresses ORDER BY trunk_id, address"
        )
        lines += [
            f"{trunk_set(trunk_id)} sip:{address} {DS_FLAGS_PROBE} 0" for trunk_id, address in rows
        ]
    finally:
        store.close()
    return "\n".join(lines) + "\n"


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._pumps: list[threading.Thread] = []

    def prepare(self) -> None:
        kamailio_binary()
        check_listen(self.config.listen)
        check_listen(self.features_address)
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            ensure_key(self.config.state_dir)
        except (OSError, NodeKeyError) as error:
            raise DivertError(f"cannot make the node key: {error}") from None
        worker = SyncWorker(WorkerConfig(self.config.portal_url, self.config.state_dir))
        try:
            worker.sync_once()
        except (*PORTAL_ERRORS, SQLAlchemyError) as error:
            if worker.writer.meta(META_POSITION) is None:
                raise DivertError(
                    f"the portal is unreachable ({type(error).__name__}) and this node has no "
                    "store yet: start the portal, or check --portal"
                ) from None
            log.warning("portal unreachable; routing from the last synced store")
        finally:
            worker.close()
        self._write_dispatcher_list()

    @property
    def features_address(self) -> str:
        """The feature server: on Kamailio's address, the next port up."""
        host, port = self.config.listen.rsplit(":", 1)
        return f"{host}:{int(port) + 1}"

    def start(self) -> None:
        cli = [sys.executable, "-m", "divert.cli", "--portal", self.config.portal_url]
        state = ["--state-dir", str(self.config.state_dir)]
        self._spawn("sync", [*cli, "sync", *state], {})
        host = self.config.listen.rsplit(":", 1)[0]
        self._spawn(
            "features",
            [*cli, "features", "--listen", self.features_address, "--kamailio", host, *state],
            {},
        )
        self._spawn(
            "kamailio", self._kamailio_command(), self._kamailio_environment(), log_filter=True
        )

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
        ]
        for name, value in defines.items():
            command += ["-A", f"{name}={value}"]
        return command

    def _kamailio_environment(self) -> dict[str, str]:
        return {
            "DIVERT_STATE_DIR": str(self.config.state_dir.resolve()),
            "DIVERT_VENV": str(Path(sys.prefix)),
            "DIVERT_DOMAIN": self.config.domain,
            "DIVERT_FEATURES": self.features_address,
            "DIVERT_CACHE_SIZE": str(self.config.cache_entries),
        }

    def _spawn(
        self, name: str, command: list[str], env: dict[str, str], log_filter: bool = False
    ) -> None:
        stderr = reader = None
        if log_filter:
            reader, stderr = log_socket()
        try:
            process = subprocess.Popen(command, env={**os.environ, **env}, stderr=stderr)
        finally:
            if stderr is not None:
                os.close(stderr)
        if reader is not None:
            self._pumps.append(start_pump(reader, sys.stderr.buffer))
        self.processes[name] = process
        (self.config.run_dir / f"{name}.pid").write_text(f"{process.pid}\n")
        log.info("%s started (pid %d)", name, process.pid)

    def watch(self, stopping: Callable[[], bool], wakeup_fd: int) -> int:
        """Until a signal or a death: keep the dispatcher list in step."""
        last_list = (self.config.state_dir / "dispatcher.list").read_text()
        while not stopping():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    log.error("%s exited with %s; stopping the node", name, process.returncode)
                    self.stop()
                    return 1
            current = dispatcher_list(self.config.state_dir, self.config.carriers)
            if current != last_list:
                self._write_dispatcher_list(current)
                self._reload_dispatcher()
                last_list = current
            if select.select([wakeup_fd], [], [], 1.0)[0]:
                drain(wakeup_fd)
        self.stop()
        return 0

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                process.terminate()
        for name, process in self.processes.items():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log.error("%s did not stop in 15 s; killing pid %d", name, process.pid)
                process.kill()
                process.wait()
            (self.config.run_dir / f"{name}.pid").unlink(missing_ok=True)
        for pump in self._pumps:
            pump.join(timeout=5)  # the last lines Kamailio wrote

    def _write_dispatcher_list(self, text: str | None = None) -> None:
        content = (
            text
            if text is not None
            else dispatcher_list(self.config.state_dir, self.config.carriers)
        )
        path = self.config.state_dir / "dispatcher.list"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(content)
        temporary.replace(path)

    def _reload_dispatcher(self) -> None:
        socket_path = f"unix:{self.config.run_dir / 'kamailio_ctl'}"
        result = subprocess.run(
            ["kamcmd", "-s", socket_path, "dispatcher.reload"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if result.returncode != 0:
            log.warning(
                "dispatcher reload failed: %s", result.stderr.strip() or result.stdout.strip()
            )
        else:
            log.info("customer trunks changed: dispatcher reloaded")


def run_node(config: NodeConfig) -> int:
    node = Node(config)
    node.prepare()
    with stop_on_signals() as (stopping, wakeup_fd):
        node.start()
        log.info("node listening on %s, state in %s", config.listen, config.state_dir)
        return node.watch(stopping, wakeup_fd)
