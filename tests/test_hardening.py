"""Hardening of the web side: durable revocations, Redis outages, rate limits behind proxies and
on registration, login timing, rq-dashboard's state-changing routes and safe configuration."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import bcrypt
import pytest
from flask import Flask
from redis import Redis
from sqlalchemy import event

from core.config import DEV_JWT_SECRET, ConfigError, Settings, normalize_database_url
from core.db import transaction
from core.keys import new_ticket_id
from core.models import RevokedToken
from tests.helpers import app_with, create_product, make_user, run_workers
from tests.servers import RedisProcess, free_port, wait_until

PASSWORD = "correct horse battery"


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    body = response.get_json(silent=True)
    assert response.status_code == status, (response.status_code, response.data[:300])
    assert response.mimetype == "application/json", response.mimetype
    assert isinstance(body, dict) and set(body) == {"error", "message"}, body
    if code is not None:
        assert body["error"] == code, body
    return body


def bcrypt_cost(password_hash: bytes | str) -> int:
    raw = password_hash.decode() if isinstance(password_hash, bytes) else password_hash
    return int(raw.split("$")[2])


# --- configuration: the development secret only where development is said -------------------------


def test_unset_app_env_refuses_the_development_secret(monkeypatch):
    monkeypatch.delenv("APP_ENV", raising=False)
    monkeypatch.delenv("JWT_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError):
        Settings.from_env()


def test_unset_app_env_refuses_sqlite(monkeypatch):
    monkeypatch.delenv("APP_ENV", raising=False)
    monkeypatch.setenv("JWT_SECRET_KEY", "k" * 48)
    monkeypatch.setenv("DATABASE_URL", "sqlite:///shop.db")
    with pytest.raises(ConfigError):
        Settings.from_env()


def test_development_said_explicitly_starts_with_the_development_secret(monkeypatch):
    monkeypatch.setenv("APP_ENV", "development")
    monkeypatch.delenv("JWT_SECRET_KEY", raising=False)
    monkeypatch.setenv("DATABASE_URL", "sqlite:///shop.db")
    settings = Settings.from_env()
    assert settings.jwt_secret_key == DEV_JWT_SECRET and not settings.is_production


@pytest.mark.parametrize("env", ["test", "production", "Production"])
def test_any_other_environment_refuses_the_development_secret(monkeypatch, env):
    monkeypatch.setenv("APP_ENV", env)
    monkeypatch.setenv("JWT_SECRET_KEY", DEV_JWT_SECRET)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/shop")
    with pytest.raises(ConfigError):
        Settings.from_env()


def test_an_unknown_app_env_is_refused(monkeypatch):
    monkeypatch.setenv("APP_ENV", "prod")
    monkeypatch.setenv("JWT_SECRET_KEY", "k" * 48)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/shop")
    with pytest.raises(ConfigError):
        Settings.from_env()


# --- login timing: an unknown username costs what a known one does ------------------------------


def test_an_unknown_username_is_checked_against_a_hash_of_the_configured_cost(
    settings, monkeypatch
):
    checked: list[bytes] = []
    original = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return original(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", spy)
    with app_with(bcrypt_rounds=6) as app:
        client = app.test_client()
        username = f"timing_{secrets.token_hex(4)}"
        body = {"username": username, "password": PASSWORD}
        assert client.post("/auth/register", json=body).status_code == 201
        assert client.post("/auth/login", json=body).status_code == 200
        unknown = {"username": f"ghost_{secrets.token_hex(4)}", "password": PASSWORD}
        assert_error(client.post("/auth/login", json=unknown), 401, "invalid_credentials")
    known_hash, dummy_hash = checked
    assert bcrypt_cost(known_hash) == bcrypt_cost(dummy_hash) == 6


# --- rate limits: registration, login per username and address, clients behind a proxy --------


def address() -> str:
    """A client address of its own, so the per-address limits of one test touch no other."""
    return "10." + ".".join(str(secrets.randbelow(250) + 1) for _ in range(3))


def from_address(ip: str) -> dict[str, str]:
    return {"REMOTE_ADDR": ip}


def new_credentials() -> dict[str, str]:
    return {"username": f"reg_{secrets.token_hex(5)}", "password": PASSWORD}


def test_registration_is_limited_per_client_address(settings):
    with app_with(
        ratelimit_enabled=True,
        ratelimit_register="3/minute",
        ratelimit_register_global="1000/minute",
    ) as app:
        client = app.test_client()
        crowded, other = from_address(address()), from_address(address())
        for _ in range(3):
            created = client.post("/auth/register", json=new_credentials(), environ_base=crowded)
            assert created.status_code == 201, created.get_json()
        over = client.post("/auth/register", json=new_credentials(), environ_base=crowded)
        assert_error(over, 429, "rate_limited")
        assert int(over.headers["Retry-After"]) >= 1
        served = client.post("/auth/register", json=new_credentials(), environ_base=other)
        assert served.status_code == 201, served.get_json()


def test_registration_is_limited_overall(settings):
    with app_with(
        ratelimit_enabled=True,
        ratelimit_register="1000/minute",
        ratelimit_register_global="4/minute",
    ) as app:
        client = app.test_client()
        for _ in range(4):
            created = client.post(
                "/auth/register", json=new_credentials(), environ_base=from_address(address())
            )
            assert created.status_code == 201, created.get_json()
        over = client.post(
            "/auth/register", json=new_credentials(), environ_base=from_address(address())
        )
        assert_error(over, 429, "rate_limited")
        assert int(over.headers["Retry-After"]) >= 1


def ghost_login(client: Any, environ: dict[str, str], headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    body = {"username": f"ghost_{secrets.token_hex(4)}", "password": PASSWORD}
    return client.post("/auth/login", json=body, environ_base=environ, headers=headers or {})


def test_without_trusted_proxies_a_forwarded_address_does_not_escape_the_bucket(settings):
    with app_with(ratelimit_enabled=True, ratelimit_login="2/minute", trusted_proxies=0) as app:
        client = app.test_client()
        peer = from_address(address())
        for _ in range(2):
            spoofed = {"X-Forwarded-For": address()}
            assert ghost_login(client, peer, spoofed).status_code == 401
        over = ghost_login(client, peer, {"X-Forwarded-For": address()})
        assert_error(over, 429, "rate_limited")


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket(settings):
    with app_with(ratelimit_enabled=True, ratelimit_login="2/minute", trusted_proxies=1) as app:
        client = app.test_client()
        proxy = from_address(address())
        first, second = {"X-Forwarded-For": address()}, {"X-Forwarded-For": address()}
        for _ in range(2):
            assert ghost_login(client, proxy, first).status_code == 401
        assert_error(ghost_login(client, proxy, first), 429, "rate_limited")
        assert ghost_login(client, proxy, second).status_code == 401
        # a client's own X-Forwarded-For in front of the proxy's entry changes nothing
        spoofed = {"X-Forwarded-For": f"{address()}, {first['X-Forwarded-For']}"}
        assert_error(ghost_login(client, proxy, spoofed), 429, "rate_limited")


# --- rq-dashboard: state changes only by POST with the CSRF header ------------------------------


@pytest.fixture()
def failed_job(settings):  # type: ignore[no-untyped-def]
    """A queue of its own holding one failed job; (queue, job id)."""
    from rq import Queue, SimpleWorker
    from rq.serializers import JSONSerializer

    from jobs.queues import JsonJob, rq_connection

    connection = rq_connection(settings.redis_url)
    queue = Queue(
        f"dash-{secrets.token_hex(4)}",
        connection=connection,
        serializer=JSONSerializer,
        job_class=JsonJob,
    )
    job = queue.enqueue("builtins.int", "not a number")
    worker = SimpleWorker(
        [queue], connection=connection, job_class=JsonJob, serializer=JSONSerializer
    )
    worker.work(burst=True, with_scheduler=False)
    assert job.id in queue.failed_job_registry.get_job_ids()
    yield queue, job.id
    for registry in (queue.failed_job_registry, queue.finished_job_registry):
        for job_id in registry.get_job_ids():
            registry.remove(job_id, delete_job=True)
    queue.delete(delete_jobs=True)


def cookie_session(client: Any, username: str) -> str:
    """Signs `client` in with cookies, as the pages do; the CSRF value to send back."""
    signed_in = client.post(
        "/auth/session", json={"username": username, "password": "correct horse"}
    )
    assert signed_in.status_code == 200, signed_in.get_json()
    return client.get_cookie("_csrf_token").value


def still_failed(queue: Any, job_id: str) -> bool:
    from rq.job import Job

    return job_id in queue.failed_job_registry.get_job_ids() and Job.exists(
        job_id, connection=queue.connection
    )


def test_rq_dashboard_refuses_state_changes_by_get(app, admin, failed_job):
    queue, job_id = failed_job
    client = app.test_client()
    cookie_session(client, admin.username)
    assert client.get("/admin/rq/").status_code == 200  # the cookie session reaches the dashboard
    for path in (
        f"/admin/rq/requeue/{queue.name}",
        f"/admin/rq/job/{job_id}/requeue",
        f"/admin/rq/job/{job_id}/delete",
        f"/admin/rq/queue/{queue.name}/failed/empty",
        f"/admin/rq/queue/{queue.name}/compact",
    ):
        refused = client.get(path)
        assert 400 <= refused.status_code < 500, (path, refused.status_code, refused.data[:200])
        assert set(refused.get_json()) == {"error", "message"}, path
        assert still_failed(queue, job_id), path


def test_rq_dashboard_state_changes_need_the_csrf_header(app, admin, failed_job):
    queue, job_id = failed_job
    client = app.test_client()
    csrf = cookie_session(client, admin.username)
    for path in (f"/admin/rq/requeue/{queue.name}", f"/admin/rq/job/{job_id}/delete"):
        assert_error(client.post(path), 401)
        assert_error(client.post(path, headers={"X-CSRFToken": "not-the-cookie"}), 401)
        assert still_failed(queue, job_id), path
    requeued = client.post(f"/admin/rq/requeue/{queue.name}", headers={"X-CSRFToken": csrf})
    assert requeued.status_code == 200, requeued.data[:200]
    assert requeued.get_json() == {"status": "OK", "count": 1}
    assert job_id not in queue.failed_job_registry.get_job_ids()
    assert job_id in queue.get_job_ids()


# --- revocations: durable in SQL, a copy in each process, no round trip per request ------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login_tokens(client: Any, username: str) -> dict[str, str]:
    body = {"username": username, "password": "correct horse"}
    response = client.post("/auth/login", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def jti_of(app: Flask, token: str) -> str:
    from flask_jwt_extended import decode_token

    with app.app_context():
        return decode_token(token)["jti"]


def restarted_empty(server: RedisProcess) -> RedisProcess:
    """The same port again, with no data: Redis restarted without persistence."""
    server.stop()
    again = RedisProcess(server.data_dir)
    again.port = server.port
    return again.start()


@pytest.fixture()
def own_redis(tmp_path) -> Iterator[list[RedisProcess]]:  # type: ignore[no-untyped-def]
    """A redis-server of this test's own (restartable): the last one started is stopped."""
    servers = [RedisProcess(tmp_path / "redis").start()]
    yield servers
    servers[-1].stop()


def test_revocations_survive_a_redis_restart_without_persistence(app, settings, own_redis):
    user = make_user(app)
    with app_with(redis_url=own_redis[0].url, inventory_redis_url=own_redis[0].url) as own:
        client = own.test_client()
        revoked, kept = login_tokens(client, user.username), login_tokens(client, user.username)
        # One logout ends the sign-in: its access and its refresh token.
        assert client.post("/auth/logout", headers=bearer(revoked["access_token"])).status_code == (
            200
        )
        assert_error(client.get("/auth/me", headers=bearer(revoked["access_token"])), 401)

        own_redis.append(restarted_empty(own_redis[0]))

        def still_revoked() -> None:
            me = client.get("/auth/me", headers=bearer(revoked["access_token"]))
            assert_error(me, 401, "token_revoked")
            refreshed = client.post("/auth/refresh", headers=bearer(revoked["refresh_token"]))
            assert_error(refreshed, 401, "token_revoked")
            assert client.get("/auth/me", headers=bearer(kept["access_token"])).status_code == 200
            refreshed = client.post("/auth/refresh", headers=bearer(kept["refresh_token"]))
            assert refreshed.status_code == 200

        still_revoked()  # while the watch reconnects: from SQL
        watch = own.extensions["flashsale"].revocations
        wait_until(lambda: watch.ready, 10, "the watch to subscribe to the new Redis")
        still_revoked()  # reloaded from SQL into this process's copy


def sql_statements_on(engine: Any, needle: str) -> list[str]:
    """Every SQL statement the engine runs from now on that mentions `needle`."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if needle in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    return seen


def commands_processed(redis: Redis) -> int:
    return int(redis.info("stats")["total_commands_processed"])


def test_a_token_check_asks_neither_redis_nor_sql_once_the_watch_follows(app, settings, own_redis):
    user = make_user(app)
    with app_with(redis_url=own_redis[0].url, inventory_redis_url=own_redis[0].url) as own:
        client = own.test_client()
        assert client.get("/auth/me", headers=user.headers).status_code == 200
        watch = own.extensions["flashsale"].revocations
        wait_until(lambda: watch.ready, 10, "the watch to subscribe")
        asked = sql_statements_on(own.extensions["flashsale"].engine, "revoked_tokens")
        redis = Redis.from_url(own_redis[0].url)
        before = commands_processed(redis)
        for _ in range(5):
            assert client.get("/auth/me", headers=user.headers).status_code == 200
        assert commands_processed(redis) - before <= 1  # the INFO that counts
        assert asked == []
        redis.close()


def test_a_revocation_whose_announcement_was_lost_reaches_every_process(rt, settings):
    from core.revocations import RevocationWatch

    watch = RevocationWatch(settings.redis_url, rt.sessions, settings.key_prefix, 0.2)
    jti = f"unannounced-{secrets.token_hex(8)}"
    assert not watch.is_revoked(jti)
    wait_until(lambda: watch.ready, 10, "the watch to subscribe")
    with transaction(rt.sessions) as session:  # recorded in SQL, never published
        session.add(RevokedToken(jti=jti, expires_at=datetime.now(UTC) + timedelta(hours=1)))
    try:
        wait_until(lambda: watch.is_revoked(jti), 5, "the next reload to bring the revocation")
    finally:
        watch.stop()


def test_the_sweep_deletes_expired_revocations(rt, settings):
    from jobs.maintenance import sweep

    live, stale = f"live-{secrets.token_hex(8)}", f"stale-{secrets.token_hex(8)}"
    now = datetime.now(UTC)
    with rt.sessions() as session:
        session.add(RevokedToken(jti=live, expires_at=now + timedelta(hours=1)))
        session.add(RevokedToken(jti=stale, expires_at=now - timedelta(seconds=1)))
        session.commit()

    sweep()

    with rt.sessions() as session:
        assert session.get(RevokedToken, live) is not None
        assert session.get(RevokedToken, stale) is None


# --- Redis unreachable: answers from SQL, or 503; never a 500 ----------------------------------


@pytest.fixture()
def redis_down(settings) -> Iterator[Flask]:  # type: ignore[no-untyped-def]
    """An app whose Redis is a port where nothing listens, on the session's database."""
    down_url = f"redis://127.0.0.1:{free_port()}/0"
    with app_with(redis_url=down_url, inventory_redis_url=down_url) as down:
        yield down


def test_health_names_the_redis_that_does_not_answer(settings, client):
    assert client.get("/health").get_json()["status"] == "ok"
    down_url = f"redis://127.0.0.1:{free_port()}/0"
    with app_with(inventory_redis_url=down_url) as inventory_down:
        answer = inventory_down.test_client().get("/health")
    assert answer.status_code == 503
    body = answer.get_json()
    assert body["failed"] == ["inventory"]
    assert (body["checks"]["redis"], body["checks"]["inventory"]) == ("ok", "unreachable")


def assert_unavailable(response: Any, code: str) -> None:
    assert_error(response, 503, code)
    assert int(response.headers["Retry-After"]) >= 1


def test_with_redis_unreachable_a_purchase_is_503(redis_down, client, admin, buyer):
    product = create_product(client, admin, stock=5)
    body = {"quantity": 1, "payment_method": "pm_card_visa"}
    down = redis_down.test_client()
    answer = down.post(f"/purchase/{product['id']}", json=body, headers=buyer.headers)
    assert_error(answer, 503, "inventory_unavailable")


def test_with_redis_unreachable_an_order_is_read_from_sql(
    redis_down, client, admin, buyer, settings
):
    product = create_product(client, admin, stock=5)
    body = {"quantity": 1, "payment_method": "pm_card_visa"}
    bought = client.post(f"/purchase/{product['id']}", json=body, headers=buyer.headers)
    ticket = bought.get_json()["ticket_id"]

    def confirmed() -> dict[str, Any] | None:
        run_workers(settings)
        answer = client.get(f"/orders/{ticket}", headers=buyer.headers).get_json()
        return answer if answer["status"] == "confirmed" else None

    live = wait_until(confirmed, 20, "the order to be confirmed")
    down = redis_down.test_client()
    read = down.get(f"/orders/{ticket}", headers=buyer.headers)
    assert read.status_code == 200, read.get_json()
    recorded = read.get_json()
    assert set(recorded) == set(live)
    assert (recorded["ticket_id"], recorded["status"], recorded["amount"]) == (
        ticket,
        "confirmed",
        live["amount"],
    )
    # a ticket SQL has not recorded may be a hold in Redis: unavailable, not "no such order"
    unknown = down.get(f"/orders/{new_ticket_id(product['id'])}", headers=buyer.headers)
    assert_unavailable(unknown, "unavailable")


def test_with_redis_unreachable_revoked_tokens_are_refused_from_sql(
    redis_down, client, app, rt, settings
):
    from core.revocations import RevocationWatch

    user = make_user(app)
    revoked, kept = login_tokens(client, user.username), login_tokens(client, user.username)
    assert client.post("/auth/logout", headers=bearer(revoked["access_token"])).status_code == 200
    down = redis_down.test_client()
    assert_error(
        down.get("/auth/me", headers=bearer(revoked["access_token"])), 401, "token_revoked"
    )
    assert down.get("/auth/me", headers=bearer(kept["access_token"])).status_code == 200
    # a logout while Redis is unreachable: 503, and the token is refused all the same
    assert_unavailable(
        down.post("/auth/logout", headers=bearer(kept["access_token"])), "unavailable"
    )
    assert_error(down.get("/auth/me", headers=bearer(kept["access_token"])), 401, "token_revoked")
    # the announcement failed: every process's next reload brings it
    watch = RevocationWatch(settings.redis_url, rt.sessions, settings.key_prefix, 0.2)
    try:
        wait_until(lambda: watch.ready, 10, "the watch to subscribe")
        wait_until(lambda: watch.is_revoked(jti_of(app, kept["access_token"])), 5, "the reload")
    finally:
        watch.stop()


def test_with_redis_unreachable_routes_answer_503_json(redis_down, client, admin, buyer):
    product = create_product(client, admin, stock=5)
    down = redis_down.test_client()
    ticket = new_ticket_id(product["id"])
    for method, path, who in (
        ("get", f"/admin/products/{product['id']}/inventory", admin),
        ("post", f"/orders/{ticket}/cancel", buyer),
        ("get", "/admin/rq/0/data/queues.json", admin),
    ):
        answer = getattr(down, method)(path, headers=who.headers)
        assert_unavailable(answer, "unavailable")


def test_with_sql_unreachable_a_logout_is_503_and_the_token_still_works(app, settings, client):
    user = make_user(app)
    tokens = login_tokens(client, user.username)
    # a checked token: the process's copy of the revocations answers, without SQL
    assert client.get("/auth/me", headers=bearer(tokens["access_token"])).status_code == 200
    dead_sql = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    with app_with(database_url=normalize_database_url(dead_sql)) as no_sql:
        down = no_sql.test_client()
        refused = down.post("/auth/logout", headers=bearer(tokens["access_token"]))
        assert_unavailable(refused, "unavailable")
    # nothing was recorded, and the answer said so: the token is not revoked
    assert client.get("/auth/me", headers=bearer(tokens["access_token"])).status_code == 200
