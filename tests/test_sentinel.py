"""The queues' Redis behind Sentinel: REDIS_URL=redis+sentinel://... is parsed once at start
(a malformed one refused), every client of it follows the primary the Sentinels name, and
settlement goes on, in the same worker process, after the primary is SIGKILLed and its replica
promoted. The servers (a primary, its replica, one Sentinel) run on free ports of the test's own;
the inventory stays on the suite's Redis."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from redis import Redis
from redis.sentinel import SentinelConnectionPool

from core.config import ConfigError, SentinelService, Settings, sentinel_service
from core.redis_urls import SentinelBlockingConnectionPool
from core.runtime import REDIS_TIMEOUT_S, Runtime
from jobs.queues import rq_connection
from jobs.scheduler import SettlementScheduler
from tests.helpers import app_with, create_product, make_user, make_users
from tests.servers import RedisProcess, clean_env, procfile_command, wait_until
from tests.test_api_errors import buy
from tests.test_replicas import Pair
from tests.test_resilience import LoggedProcess

SERVICE = "queues"

# --- the URL ------------------------------------------------------------------------------------


def test_a_sentinel_url_names_its_sentinels_service_db_and_password():
    url = "redis+sentinel://:s%40cret@sentinel-1:26379,10.0.0.2:26380/queues/2"
    assert sentinel_service(url) == SentinelService(
        sentinels=(("sentinel-1", 26379), ("10.0.0.2", 26380)),
        service="queues",
        db=2,
        password="s@cret",
    )
    assert sentinel_service("redis+sentinel://app:pw@[::1]:26379/queues") == SentinelService(
        sentinels=(("::1", 26379),), service="queues", db=0, username="app", password="pw"
    )
    assert sentinel_service("redis://127.0.0.1:6379/0") is None
    assert sentinel_service("redis+cluster://node-1:7000") is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://:hunter2@s-1:26379", "names no service"),
        ("redis+sentinel://:hunter2@s-1:26379/", "names no service"),
        ("redis+sentinel://:hunter2@s-1:26379/queues/0/extra", "more than a service and a db"),
        ("redis+sentinel://:hunter2@s-1:26379/queues/zero", "its db must be a number"),
        ("redis+sentinel://:hunter2@s-1/queues", "needs a host and a port, not 's-1'"),
        ("redis+sentinel://:hunter2@s-1:26379,/queues", "needs a host and a port, not ''"),
        ("redis+sentinel://:hunter2@s-1:port/queues", "needs a host and a port, not 's-1:port'"),
        ("redis+sentinel://:hunter2@s-1:99999/queues", "needs a host and a port"),
        ("redis+sentinel://:hunter2@s-1:26379/queues?db=1", "takes no options"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_at_start(monkeypatch, url, says):
    monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(ConfigError, match=f"^REDIS_URL \\(a Sentinel URL\\) .*{says}") as refused:
        Settings.from_env()
    assert "hunter2" not in str(refused.value)
    monkeypatch.setenv("REDIS_URL", "redis://queues:6379/0")
    monkeypatch.setenv("INVENTORY_REDIS_URL", url)
    with pytest.raises(ConfigError, match=r"^INVENTORY_REDIS_URL"):
        Settings.from_env()


def test_every_client_of_a_sentinel_url_follows_its_primary(monkeypatch, settings):
    """Built without connecting: the runtime's pools keep their size and timeouts, RQ's client
    and rq-dashboard's are one, and the rate limits use a pool of the same Sentinels."""
    url = "redis+sentinel://:pw@127.0.0.1:1/queues/3"
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("INVENTORY_REDIS_URL", url)
    rt = Runtime(Settings.from_env(), inventory_timeout_s=0.5)
    for client, timeout_s in ((rt.redis, REDIS_TIMEOUT_S), (rt.inventory_redis, 0.5)):
        pool = client.connection_pool
        assert isinstance(pool, SentinelBlockingConnectionPool)
        assert (pool.service_name, pool.is_master, pool.max_connections) == (
            "queues",
            True,
            settings.redis_pool_size,
        )
        assert pool.timeout == timeout_s and pool.connection_kwargs["socket_timeout"] == timeout_s
        assert (pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (3, "pw")
        assert pool.connection_kwargs["decode_responses"] is True
    queues = rq_connection(url).connection_pool
    assert type(queues) is SentinelConnectionPool and queues.service_name == "queues"
    assert "decode_responses" not in queues.connection_kwargs  # RQ stores bytes
    with app_with(redis_url=url) as app:
        assert app.redis_conn is rq_connection(url)  # rq-dashboard's
        limits_pool = app.config["RATELIMIT_STORAGE_OPTIONS"]["connection_pool"]
        assert isinstance(limits_pool, SentinelConnectionPool)
        assert limits_pool.service_name == "queues"


# --- real servers: a primary, its replica, one Sentinel ---------------------------------------


class Watched(Pair):
    """A primary, its replica and one Sentinel watching them (quorum 1: it alone decides)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        config = folder / "sentinel.conf"
        config.write_text(
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 3000\n"
        )
        self.sentinel = RedisProcess(folder / "sentinel", "--sentinel", config=config).start()
        self.sentinel_client = Redis(port=self.sentinel.port, decode_responses=True)
        wait_until(self._replica_known, 30, "the Sentinel to know the replica", every=0.1)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{SERVICE}/0"

    def _replica_known(self) -> bool:
        replicas = self.sentinel_client.sentinel_slaves(SERVICE)
        return any(r["port"] == self.replica.port and r["is_slave"] for r in replicas)

    def primary_port(self) -> int:
        return int(self.sentinel_client.sentinel_get_master_addr_by_name(SERVICE)[1])

    def stop(self) -> None:
        self.sentinel.stop()
        super().stop()


@pytest.mark.slow
def test_settlement_goes_on_in_the_same_worker_after_a_sentinel_failover(settings, tmp_path):
    servers = Watched(tmp_path)
    env = clean_env(
        {
            "REDIS_URL": servers.url,
            "INVENTORY_REDIS_URL": settings.inventory_url,
            "SCHEDULER_POLL_SECONDS": "0.2",
        }
    )
    worker = LoggedProcess(procfile_command("worker"), env, tmp_path / "worker.log")
    scheduler = LoggedProcess(procfile_command("scheduler"), env, tmp_path / "scheduler.log")
    try:
        with app_with(redis_url=servers.url, inventory_redis_url=settings.inventory_url) as app:
            client = app.test_client()
            admin = make_user(app, "admin")
            product = create_product(client, admin, stock=10)
            buyers = make_users(app, 6)
            primary = Pair.client(servers.primary)

            def confirmed(buyer, ticket: str) -> bool:  # type: ignore[no-untyped-def]
                assert worker.running()
                order = client.get(f"/orders/{ticket}", headers=buyer.headers).get_json()
                assert order["status"] in {"reserved", "processing", "confirmed"}, order
                return order["status"] == "confirmed"

            def all_confirmed(tickets: dict) -> bool:
                return all([confirmed(buyer, ticket) for buyer, ticket in tickets.items()])

            def bought(buyer) -> str:  # type: ignore[no-untyped-def]
                answer = buy(client, buyer, product["id"])
                assert answer.status_code == 202, answer.get_json()
                return answer.get_json()["ticket_id"]

            before = {buyer: bought(buyer) for buyer in buyers[:3]}
            wait_until(lambda: all_confirmed(before), 60, "the first tickets confirmed", 0.1)
            assert (
                primary.scard("rq:workers") == 1
            )  # the worker is on the primary the Sentinel names
            scheduled = SettlementScheduler.scheduled_jobs_key
            wait_until(lambda: primary.zcard(scheduled), 30, "the scheduler's schedule", 0.1)
            assert primary.wait(1, 5000) == 1  # the replica has everything before the kill

            servers.kill_primary()
            killed_at = time.monotonic()
            during = {buyer: bought(buyer) for buyer in buyers[3:5]}  # inventory is elsewhere
            wait_until(
                lambda: servers.primary_port() == servers.replica.port,
                60,
                "the Sentinel to promote the replica",
                every=0.1,
            )
            promoted_s = time.monotonic() - killed_at
            wait_until(
                lambda: any(confirmed(buyer, ticket) for buyer, ticket in during.items()),
                90,
                "a confirmation after the kill",
                every=0.1,
            )
            confirmed_s = time.monotonic() - killed_at
            after = {buyers[5]: bought(buyers[5])}
            wait_until(lambda: all_confirmed(during | after), 90, "every ticket confirmed", 0.1)
            figures = client.get(
                f"/admin/products/{product['id']}/inventory", headers=admin.headers
            ).get_json()
            assert (figures["available"], figures["sold"], figures["sold_in_db"]) == (4, 6, 6)

        promoted = Pair.client(servers.replica)
        assert promoted.info("replication")["role"] == "master"
        assert worker.running()
        for ticket in [*during.values(), *after.values()]:
            assert ticket in worker.output  # its "ticket final" line: the same worker settled it
        wait_until(lambda: scheduler.says("outage ended"), 60, "the scheduler back", every=0.2)
        print(
            f"\nSentinel failover: replica promoted {promoted_s:.1f} s after the kill; "
            f"first confirmation {confirmed_s:.1f} s after it"
        )
    finally:
        worker.stop()
        scheduler.stop()
        servers.stop()


def blocked_in_a_pop(server: Redis) -> bool:
    """Whether a client waits in a blocking pop (RQ's worker idle on its queue)."""
    return any(
        "b" in c["flags"] and c["cmd"].startswith(("blmove", "blpop", "brpoplpush"))
        for c in server.client_list()
    )


def test_a_worker_idle_on_a_sentinel_primary_stops_cleanly_on_sigterm(settings, tmp_path):
    """The warm shutdown's signal cuts the worker's blocking pop short: that connection must not
    go back to the pool with the pop's reply still to come (the worker's record is then removed
    by a pipeline that would read it)."""
    servers = Watched(tmp_path)
    env = clean_env({"REDIS_URL": servers.url, "INVENTORY_REDIS_URL": settings.inventory_url})
    worker = LoggedProcess(procfile_command("worker"), env, tmp_path / "worker.log")
    primary = Pair.client(servers.primary)
    try:
        wait_until(lambda: blocked_in_a_pop(primary), 60, "the worker idle on its queue", 0.1)
        assert primary.scard("rq:workers") == 1
        worker.process.terminate()
        assert worker.process.wait(30) == 0, worker.output[-3000:]
        assert "Traceback" not in worker.output, worker.output[-3000:]
        assert primary.scard("rq:workers") == 0  # its death recorded
    finally:
        worker.stop()
        servers.stop()
