"""GET /metrics: the counters move with a rush and its settlement (the web process and an RQ
worker, here in one process); gunicorn's workers are summed through PROMETHEUS_MULTIPROC_DIR,
whichever of them answers the scrape; METRICS_TOKEN guards the route."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import app_with, create_product, make_users, run_workers
from tests.servers import ROOT, Gunicorn, clean_env, free_port, procfile_command, wait_until
from tests.test_api_errors import assert_error, buy

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(client: Any, headers: dict[str, str] | None = None) -> Samples:
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain")
    return samples(response.get_data(as_text=True))


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_the_counters_move_with_a_rush_and_its_settlement(app, client, admin, settings):
    product = create_product(client, admin, stock=5, max_per_user=0)
    buyers = make_users(app, 8)
    before = scrape(client)
    answers = [buy(client, buyer, product["id"]) for buyer in buyers]
    assert sorted(a.status_code for a in answers) == [202] * 5 + [409] * 3
    ticket = buy(client, buyers[0], product["id"], quantity=1)  # a second one: sold out
    assert ticket.status_code == 409
    during = scrape(client)
    assert moved(before, during, "flashsale_purchases_total", outcome="reserved") == 5
    assert moved(before, during, "flashsale_purchases_total", outcome="sold_out") == 4
    assert moved(before, during, "flashsale_reserve_seconds_count") >= 5
    held = [
        (a.get_json()["status_url"], b)
        for a, b in zip(answers, buyers, strict=True)
        if a.status_code == 202
    ]

    def settled() -> bool:
        run_workers(settings)
        return all(client.get(url, headers=b.headers).get_json()["status"] == "confirmed"
                   for url, b in held)  # fmt: skip

    wait_until(settled, 20, "the five holds to be confirmed")
    after = scrape(client)
    # (other tests' holds may be settled by the same workers: at least these five)
    assert moved(before, after, "flashsale_settlement_lag_seconds_count", status="confirmed") >= 5
    paid = moved(
        before, after, "flashsale_payments_total", gateway="simulated", outcome="confirmed"
    )
    assert paid >= 5
    assert moved(before, after, "flashsale_settle_batch_size_sum") >= 5
    assert moved(before, after, "flashsale_locks_total", kind="lock", result="acquired") >= 5
    assert moved(before, after, "flashsale_locks_total", kind="lease", result="acquired") >= 5
    assert after[("flashsale_settlement_queue_up", ())] == 1
    assert ("flashsale_settlement_queue_jobs", (("state", "failed"),)) in after


def test_status_polls_are_counted_by_status(app, client, admin, settings):
    product = create_product(client, admin, stock=1)
    (buyer,) = make_users(app, 1)
    accepted = buy(client, buyer, product["id"])
    assert accepted.status_code == 202
    url = accepted.get_json()["status_url"]
    before = scrape(client)
    assert client.get(url, headers=buyer.headers).get_json()["status"] == "reserved"
    polled = scrape(client)
    assert moved(before, polled, "flashsale_status_polls_total", status="reserved") == 1

    def confirmed() -> bool:
        run_workers(settings)
        return client.get(url, headers=buyer.headers).get_json()["status"] == "confirmed"

    wait_until(confirmed, 20, "the order to be confirmed")
    after = scrape(client)
    assert moved(polled, after, "flashsale_status_polls_total", status="confirmed") == 1


def test_waiting_rooms_show_their_crowds(app, client, admin):
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    product = create_product(client, admin, stock=10, waiting_room=True, admit_per_second=5,
                             sale_starts_at=later)  # fmt: skip
    label = (("product", str(product["id"])),)
    assert scrape(client)[("flashsale_room_waiting", label)] == 0
    for buyer in make_users(app, 3):
        assert client.post(f"/queue/{product['id']}/join", headers=buyer.headers).status_code == 200
    now = scrape(client)
    assert now[("flashsale_room_waiting", label)] == 3  # all waiting for the opening's draw
    assert now[("flashsale_room_admitted", label)] == 0


def test_the_dashboard_asks_for_metrics_the_service_exposes(client):
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    asked = {
        re.sub(r"_(bucket|total)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"flashsale_[a-z_]+", target["expr"])
    }
    response = client.get("/metrics")
    families = {f.name for f in text_string_to_metric_families(response.get_data(as_text=True))}
    assert len(asked) >= 10 and asked <= families, asked - families


def test_a_token_guards_the_metrics(app):
    token = secrets.token_hex(16)
    with app_with(metrics_token=token) as guarded:
        client = guarded.test_client()
        assert_error(client.get("/metrics"), 401, "unauthorized")
        assert_error(client.get("/metrics", headers={"Authorization": "Bearer x"}), 401)
        scrape(client, {"Authorization": f"Bearer {token}"})


@pytest.fixture()
def summed_web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """gunicorn with two workers sharing a PROMETHEUS_MULTIPROC_DIR."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    server = Gunicorn(clean_env({"PROMETHEUS_MULTIPROC_DIR": str(folder)}), workers=2).start()
    try:
        yield server.url, folder
    finally:
        server.stop()


def test_gunicorns_workers_are_summed_whichever_answers(app, admin, summed_web):
    url, folder = summed_web
    buyers = make_users(app, 60)
    bought = 0
    with httpx.Client(base_url=url, timeout=10) as http:
        product = http.post(
            "/products",
            json={"name": f"drop {secrets.token_hex(3)}", "price": "5.00", "stock": 100},
            headers=admin.headers,
        ).json()
        before = samples(http.get("/metrics").text)
        # New connections until both workers have counted purchases (which worker accepts a
        # connection is the kernel's choice: on a busy machine one may take many in a row).
        for buyer in buyers:
            with httpx.Client(base_url=url, timeout=10) as one:
                answer = one.post(
                    f"/purchase/{product['id']}",
                    json={"quantity": 1, "payment_method": "pm_card_visa"},
                    headers=buyer.headers,
                )
                assert answer.status_code == 202
            bought += 1
            if bought >= 12 and len(list(folder.glob("counter_*.db"))) == 2:
                break
        counts = set()
        for _ in range(6):
            with httpx.Client(base_url=url, timeout=10) as one:
                now = samples(one.get("/metrics").text)
            counts.add(moved(before, now, "flashsale_purchases_total", outcome="reserved"))
    assert len(list(folder.glob("counter_*.db"))) == 2  # both workers counted purchases
    assert counts == {bought}


def test_a_worker_serves_its_own_metrics_on_its_port(app, client, admin, tmp_path):
    """The Procfile's worker line with METRICS_PORT: a machine of workers alone is scraped too."""
    port = free_port()
    log = tmp_path / "worker.log"
    env = clean_env({"METRICS_PORT": str(port)})
    command = procfile_command("worker")
    with log.open("wb") as out:
        worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:

        def exposed() -> Samples | None:
            if worker.poll() is not None:
                raise AssertionError(log.read_text()[-3000:])
            try:
                return samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text)
            except httpx.HTTPError:
                return None

        before = wait_until(exposed, 30, "the worker's metrics port", every=0.1)
        product = create_product(client, admin, stock=3)
        buyers = make_users(app, 3)
        assert [buy(client, b, product["id"]).status_code for b in buyers] == [202] * 3

        def settled() -> Samples | None:
            now = exposed()
            lag = "flashsale_settlement_lag_seconds_count"
            return now if now and moved(before, now, lag, status="confirmed") >= 3 else None

        now = wait_until(settled, 30, "the worker to count three settled tickets", every=0.2)
        assert moved(before, now, "flashsale_purchases_total", outcome="reserved") == 0
        assert "worker" in log.read_text()
    finally:
        worker.terminate()
        worker.wait(30)
