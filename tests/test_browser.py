"""The pages in a real browser: headless Chromium (Debian's package, driven by Playwright's
Python package) against gunicorn and a real `rq worker`, on a database and Redis key space of
their own so the pages show only what these tests create. Then the cookie sessions behind the
pages, through Flask's test client.

`make test` installs what the browser tests need (`make browser`: Debian's chromium when it is
missing; requirements-dev.txt: playwright). Without a browser they are skipped, except under CI,
where a missing browser fails the run. They leave screenshots in build/screenshots/.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from redis import Redis
from rq import Queue, Worker

from core.catalog import create_user
from core.config import normalize_database_url
from core.db import make_engine, make_session_factory
from tests.helpers import create_product, scratch_database
from tests.servers import ROOT, Gunicorn, clean_env, wait_until

try:
    from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
except ImportError:  # reported below as the reason to skip
    sync_playwright = None  # type: ignore[assignment]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Screenshots go to an ignored folder; `make screenshots` copies them into docs/screenshots/.
SCREENSHOTS = Path(os.environ.get("SCREENSHOTS_DIR") or ROOT / "build" / "screenshots")
PASSWORD = "correct horse battery"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# Slow enough payments that the page sees the ticket in `processing` between two polls.
PAYMENT_LATENCY_MS = 1000
SETTLE_TIMEOUT_MS = 30_000


def _why_no_browser() -> str | None:
    if sync_playwright is None:
        return "the playwright package is missing: pip install -r requirements-dev.txt"
    if not os.access(CHROMIUM, os.X_OK):
        return (
            f"no Chromium at {CHROMIUM}: `make browser` installs Debian's chromium "
            "(apt-get, as root)"
        )
    return None


NO_BROWSER = _why_no_browser()
if NO_BROWSER and os.environ.get("CI"):
    pytest.fail(f"CI must run the browser tests, but {NO_BROWSER}", pytrace=False)
needs_browser = pytest.mark.skipif(NO_BROWSER is not None, reason=str(NO_BROWSER))
if NO_BROWSER is None:
    expect.set_options(timeout=10_000)


# --- the stack: its own database, gunicorn, an rq worker -------------------------------------


@dataclass
class Stack:
    url: str
    env: dict[str, str]
    admin_username: str
    products: dict[str, int] = field(default_factory=dict)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=15)


def _own_database(tmp: Path) -> tuple[str, Callable[[], None]]:
    """A database for these tests alone, beside the session's (SQLite file or PostgreSQL)."""
    session_url = os.environ["DATABASE_URL"]
    name = f"{urlsplit(session_url).path.lstrip('/')}_browser"
    return scratch_database(session_url, tmp, "browser" if "sqlite" in session_url else name)


def _create_admin(database_url: str) -> str:
    username = f"ops_{secrets.token_hex(3)}"
    engine = make_engine(normalize_database_url(database_url))
    with make_session_factory(engine)() as session:
        create_user(session, username, PASSWORD, 4, role="admin")
        session.commit()
    engine.dispose()
    return username


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The Procfile's worker line, with slower simulated payments."""
    rq = Path(sys.executable).with_name("rq")
    command = [str(rq) if rq.exists() else "rq", "worker", "-w", "rq.worker.SimpleWorker"]
    command += ["--serializer", "rq.serializers.JSONSerializer"]
    command += ["--job-class", "jobs.queues.JsonJob", "--url", env["REDIS_URL"]]
    command.append(env["SETTLEMENT_QUEUE"])
    worker_env = env | {"PAYMENT_LATENCY_MS": str(PAYMENT_LATENCY_MS)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=worker_env, stdout=out, stderr=subprocess.STDOUT
        )
    redis = Redis.from_url(env["REDIS_URL"])
    queue = Queue(env["SETTLEMENT_QUEUE"], connection=redis)

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"rq worker exited:\n{log.read_text()[-3000:]}")
        return Worker.count(connection=redis, queue=queue) > 0

    wait_until(listening, 30, "the rq worker to listen", every=0.1)
    redis.close()
    return process


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("browser")
    database_url, drop_database = _own_database(tmp)
    env = clean_env(
        {
            "DATABASE_URL": database_url,
            "REDIS_KEY_PREFIX": f"b{secrets.token_hex(3)}",
            "SETTLEMENT_QUEUE": f"browser-{secrets.token_hex(3)}",
            # Real limits, so the page's rate-limited message can be seen: three purchases an
            # hour per buyer; sign-ins, registrations and product reads stay out of the way.
            "RATELIMIT_ENABLED": "true",
            "RATELIMIT_PURCHASE": "3/hour",
            "RATELIMIT_LOGIN": "500/minute",
            "RATELIMIT_REGISTER": "500/minute",
            "RATELIMIT_PRODUCT_READS": "5000/minute",
            "RATELIMIT_SEARCH": "5000/minute",
        }
    )
    worker: subprocess.Popen[bytes] | None = None
    server: Gunicorn | None = None
    try:
        subprocess.run(
            [sys.executable, "-m", "flask", "--app", "web", "db", "upgrade"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        admin = _create_admin(database_url)
        worker = _start_worker(env, tmp / "worker.log")
        server = Gunicorn(env).start()
        built = Stack(server.url, env, admin)
        _seed_products(built)
        yield built
    finally:
        if server:
            server.stop()
        if worker and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
        drop_database()


def _token(stack: Stack, username: str) -> str:
    with stack.http() as http:
        answer = http.post("/auth/login", json={"username": username, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]


def _seed_products(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {_token(stack, stack.admin_username)}"}
    now = datetime.now(UTC)
    catalogue = {
        "shoes": {"name": "Aurora trail running shoes", "price": "129.00", "stock": 40},
        "vinyl": {"name": "Midnight sessions vinyl box", "price": "89.00", "stock": 1},
        "headphones": {
            "name": "Studio wireless headphones",
            "price": "199.00",
            "stock": 25,
            "sale_ends_at": (now + timedelta(hours=2)).isoformat(),
        },
        "watch": {
            "name": "Collector's edition watch",
            "price": "349.00",
            "stock": 10,
            "sale_starts_at": (now + timedelta(hours=1)).isoformat(),
        },
    }
    limits = {"shoes": 2, "vinyl": 1, "headphones": 0, "watch": 1}
    with stack.http() as http:
        for key, body in catalogue.items():
            answer = http.post(
                "/products", json=body | {"max_per_user": limits[key]}, headers=headers
            )
            assert answer.status_code == 201, answer.text
            stack.products[key] = answer.json()["id"]


def _buyer(stack: Stack, prefix: str = "buyer") -> tuple[str, str]:
    """A registered buyer: (username, bearer token)."""
    username = f"{prefix}_{secrets.token_hex(3)}"
    with stack.http() as http:
        answer = http.post("/auth/register", json={"username": username, "password": PASSWORD})
        assert answer.status_code == 201, answer.text
    return username, _token(stack, username)


def _api_purchase(stack: Stack, token: str, product_id: int, quantity: int = 1) -> httpx.Response:
    with stack.http() as http:
        return http.post(
            f"/purchase/{product_id}",
            json={"quantity": quantity, "payment_method": "pm_card_visa"},
            headers={"Authorization": f"Bearer {token}"},
        )


# --- the browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Tab:
    page: Page
    context: BrowserContext
    problems: list[str]


@pytest.fixture()
def open_tab(browser: Browser, stack: Stack) -> Iterator[Callable[..., Tab]]:
    """New browser contexts (own cookies); script errors and CSP refusals fail the test."""
    tabs: list[Tab] = []

    def open_one(viewport: dict[str, int] = DESKTOP, phone: bool = False) -> Tab:
        context = browser.new_context(
            base_url=stack.url,
            viewport=viewport,
            device_scale_factor=2 if phone else 1,
            is_mobile=phone,
            has_touch=phone,
            locale="en-US",
            timezone_id="UTC",
        )
        context.set_default_timeout(15_000)
        page = context.new_page()
        tab = Tab(page, context, [])
        page.on("pageerror", lambda error: tab.problems.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                tab.problems.append(f"console: {message.text}")
                if message.type == "error" and "Failed to load resource" not in message.text
                else None
            ),
        )
        tabs.append(tab)
        return tab

    yield open_one
    problems = [p for tab in tabs for p in tab.problems]
    for tab in tabs:
        tab.context.close()
    assert problems == [], problems


def sign_in_by_api(tab: Tab, username: str) -> None:
    """Signs a context in as the page's form does (same endpoint, cookies in the context)."""
    answer = tab.context.request.post(
        "/auth/session", data={"username": username, "password": PASSWORD}
    )
    assert answer.status == 200, answer.text()


def product_card(page: Page, product_id: int):  # type: ignore[no-untyped-def]
    return page.locator(f"#product-{product_id}")


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def no_horizontal_scroll(page: Page) -> bool:
    return page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )


# --- the tests ----------------------------------------------------------------------------------


@needs_browser
def test_register_sign_in_buy_and_watch_the_order_confirm(stack: Stack, open_tab) -> None:
    tab = open_tab()
    page = tab.page
    page.goto("/")
    expect(page.get_by_role("heading", name="Today's drops")).to_be_visible()
    unlabelled = page.evaluate(
        "[...document.querySelectorAll('input, select')].filter(e => !e.labels.length).length"
    )
    assert unlabelled == 0
    shoes = product_card(page, stack.products["shoes"])
    expect(shoes.get_by_role("heading")).to_have_text("Aurora trail running shoes")
    expect(shoes.locator(".sold-out-badge")).to_be_hidden()
    expect(product_card(page, stack.products["watch"]).get_by_role("button")).to_be_disabled()
    expect(product_card(page, stack.products["watch"])).to_contain_text("Sale starts in 0")

    # Signed out, the buy button says what to do first.
    shoes.get_by_role("button", name="Buy now").click()
    expect(shoes.get_by_role("alert")).to_contain_text("Sign in or create an account first")

    # Register (which signs in), sign out, then sign in again with the keyboard alone.
    username = f"ada_{secrets.token_hex(3)}"
    page.get_by_label("Choose a username").fill(username)
    page.get_by_label("Choose a password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#signed-in-user")).to_have_text(username)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    page.wait_for_load_state("domcontentloaded")  # the new page's script has its handlers on
    page.get_by_label("Username", exact=True).focus()
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type("not the password")
    page.keyboard.press("Enter")
    expect(page.locator("#sign-in-form").get_by_role("alert")).to_have_text(
        "Wrong username or password."
    )
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.locator("#signed-in-user")).to_have_text(username)

    # Buy two: the ticket moves reserved -> processing -> confirmed as the worker settles it.
    shoes = product_card(page, stack.products["shoes"])
    before = int(shoes.locator('[data-field="available"]').inner_text())
    shoes.get_by_label("Quantity").fill("2")
    shoes.get_by_role("button", name="Buy now").click()
    ticket = shoes.locator('[data-role="ticket"]')
    expect(ticket).to_be_visible()
    expect(ticket).to_have_attribute("data-status", "confirmed", timeout=SETTLE_TIMEOUT_MS)
    history = (ticket.get_attribute("data-history") or "").split()
    assert history == ["reserved", "processing", "confirmed"], history
    expect(ticket).to_contain_text("Confirmed: 2 \u00d7 Aurora trail running shoes for $258.00.")
    expect(shoes.locator('[data-field="available"]')).to_have_text(str(before - 2))
    shot(page, "storefront.png")

    # A third pair is over the limit of two per buyer.
    shoes.get_by_label("Quantity").fill("1")
    shoes.get_by_role("button", name="Buy now").click()
    expect(shoes.get_by_role("alert")).to_have_text(
        "Limit reached: you already have the 2 per buyer this sale allows."
    )

    # The order is on the buyer's orders page.
    ticket_id = ticket.locator('[data-field="ticket-id"]').inner_text()
    ticket.get_by_role("link", name="See my orders").click()
    expect(page.get_by_role("heading", name="My orders")).to_be_visible()
    row = page.locator(f'tr[data-ticket="{ticket_id}"]')
    expect(row.locator('[data-field="status"]')).to_have_text("confirmed")
    expect(row).to_contain_text("Aurora trail running shoes")
    expect(row).to_contain_text("$258.00")
    shot(page, "orders.png")


@needs_browser
def test_buying_when_sold_out_shows_the_message(stack: Stack, open_tab) -> None:
    tab = open_tab()
    username, _ = _buyer(stack)
    sign_in_by_api(tab, username)
    page = tab.page
    page.goto("/")
    vinyl = product_card(page, stack.products["vinyl"])
    expect(vinyl.locator('[data-field="available"]')).to_have_text("1")

    _, rival = _buyer(stack, "rival")
    assert _api_purchase(stack, rival, stack.products["vinyl"]).status_code == 202

    # The access cookie has expired meanwhile (the browser dropped it): the page renews it from
    # the refresh cookie and sends the purchase again.
    tab.context.clear_cookies(name="access_token_cookie")
    tab.context.clear_cookies(name="_csrf_token")
    vinyl.get_by_role("button", name="Buy now").click()
    expect(vinyl.get_by_role("alert")).to_contain_text("Sold out.")
    expect(vinyl.locator('[data-field="available"]')).to_have_text("0")
    expect(vinyl.get_by_text("Sold out", exact=True)).to_be_visible()
    assert {c["name"] for c in tab.context.cookies()} >= {"access_token_cookie", "_csrf_token"}


@needs_browser
def test_too_many_purchases_show_the_rate_limit_message(stack: Stack, open_tab) -> None:
    tab = open_tab()
    username, _ = _buyer(stack)
    sign_in_by_api(tab, username)
    page = tab.page
    page.goto("/")
    headphones = product_card(page, stack.products["headphones"])
    expect(headphones).to_contain_text("On sale · ends in 01:5")
    ticket_id = headphones.locator('[data-field="ticket-id"]')
    previous = ""
    for _ in range(3):  # RATELIMIT_PURCHASE is 3/hour here
        headphones.get_by_role("button", name="Buy now").click()
        expect(ticket_id).not_to_have_text(previous)
        expect(ticket_id).not_to_have_text("")
        previous = ticket_id.inner_text()
    headphones.get_by_role("button", name="Buy now").click()
    alert = headphones.get_by_role("alert")
    expect(alert).to_contain_text("Too many purchase attempts: you are rate-limited.")
    expect(alert).to_contain_text(re.compile(r"Try again in \d+ seconds"))


@needs_browser
def test_an_admin_sees_the_inventory_figures_move(stack: Stack, open_tab) -> None:
    tab = open_tab()
    page = tab.page
    page.goto("/admin")  # signed out: sent to sign in, then back
    expect(page).to_have_url(re.compile(r"/\?next=%2Fadmin$|/\?next=/admin$"))
    page.get_by_label("Username", exact=True).fill(stack.admin_username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_url(re.compile(r"/admin$"))
    expect(page.get_by_role("heading", name="Operations")).to_be_visible()
    expect(page.locator('[data-field="workers"]')).to_have_text("1")

    row = page.locator(f'tr[data-product-id="{stack.products["shoes"]}"]')
    cell = lambda name: row.locator(f'[data-field="{name}"]')  # noqa: E731
    available = int(cell("available").inner_text())
    sold = int(cell("sold").inner_text())
    expect(cell("agree")).to_have_text("yes")

    # A small rush; the chart draws its steps from the stock events (holds, then sales).
    bought = 0
    for quantity in (1, 2, 1, 2, 1, 1, 2):
        _, token = _buyer(stack, "fan")
        assert _api_purchase(stack, token, stack.products["shoes"], quantity).status_code == 202
        bought += quantity
    expect(cell("available")).to_have_text(str(available - bought))
    expect(cell("sold")).to_have_text(str(sold + bought), timeout=SETTLE_TIMEOUT_MS)
    expect(cell("held")).to_have_text("0")
    expect(cell("sold_in_db")).to_have_text(str(sold + bought))
    expect(cell("agree")).to_have_text("yes")
    chart = page.locator(f'[data-chart-for="{stack.products["shoes"]}"] svg')
    expect(chart).to_have_attribute("aria-label", re.compile(f"{sold + bought} sold, 0 held now"))

    page.get_by_role("button", name="Run reconciliation now").click()
    expect(page.locator('[data-field="reconcile-message"]')).to_contain_text(
        "Reconciliation finished: 4 consistent.", timeout=SETTLE_TIMEOUT_MS
    )
    expect(cell("reconcile")).to_have_text("consistent")
    expect(page.locator('[data-field="failed"]')).to_have_text("0")
    shot(page, "admin.png")

    # rq-dashboard opens for an admin signed in by cookie.
    page.get_by_role("link", name="Open the RQ dashboard").click()
    expect(page).to_have_title("RQ dashboard")
    expect(page.get_by_text(stack.env["SETTLEMENT_QUEUE"]).first).to_be_visible()


@needs_browser
def test_a_buyer_cannot_open_the_operations_page(stack: Stack, open_tab) -> None:
    tab = open_tab()
    username, _ = _buyer(stack)
    sign_in_by_api(tab, username)
    page = tab.page
    page.goto("/")
    expect(page.locator("#signed-in-user")).to_have_text(username)
    expect(page.get_by_role("link", name="Operations")).to_have_count(0)
    response = page.goto("/admin")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="Admins only")).to_be_visible()
    expect(page.get_by_text("Inventory")).to_have_count(0)
    overview = page.goto("/admin/overview")
    assert overview is not None and overview.status == 403
    dashboard = page.goto("/admin/rq/")
    assert dashboard is not None and dashboard.status == 403


@needs_browser
def test_the_pages_fit_a_phone(stack: Stack, open_tab) -> None:
    tab = open_tab(PHONE, phone=True)
    sign_in_by_api(tab, stack.admin_username)
    page = tab.page
    page.goto("/")
    expect(product_card(page, stack.products["shoes"])).to_be_visible()
    assert no_horizontal_scroll(page)
    shot(page, "storefront-phone.png")
    page.goto("/admin")
    expect(page.locator(f'[data-chart-for="{stack.products["shoes"]}"] svg')).to_be_visible()
    assert no_horizontal_scroll(page)
    shot(page, "admin-phone.png")


# --- the seat map --------------------------------------------------------------------------------


def _seed_show(stack: Stack, title: str, **fields: str) -> int:
    """A published show: two seated sections and a standing one, on sale now."""
    headers = {"Authorization": f"Bearer {_token(stack, stack.admin_username)}"}
    starts = (datetime.now(UTC) + timedelta(days=20)).isoformat()
    hall = {
        "sections": [
            {
                "name": "A",
                "price": "80.00",
                "rows": [{"name": "1", "seats": 10}, {"name": "2", "seats": 10}],
            },
            {"name": "B", "price": "45.00", "rows": [{"name": "1", "seats": [1, 2, 3, 5, 6, 7]}]},
            {"name": "Floor", "price": "30.00", "capacity": 100},
        ]
    }
    with stack.http() as http:
        body = {"title": title, "venue": "Riverside Hall", "starts_at": starts, "currency": "USD"}
        event = http.post("/events", json=body | fields, headers=headers).json()
        assert (
            http.put(f"/events/{event['id']}/seatmap", json=hall, headers=headers).status_code
            == 200
        )
        assert http.post(f"/events/{event['id']}/publish", headers=headers).status_code == 200
    return event["id"]


def seat(page: Page, seat_id: str):  # type: ignore[no-untyped-def]
    return page.locator(f'rect[data-seat="{seat_id}"]')


@needs_browser
def test_choose_seats_on_the_map_buy_them_and_watch_them_sell(stack: Stack, open_tab) -> None:
    event_id = _seed_show(stack, "Autumn symphony")
    username, _ = _buyer(stack, "seats")
    tab = open_tab()
    sign_in_by_api(tab, username)
    page = tab.page
    page.goto("/")
    page.locator(f"#show-{event_id}").get_by_role("link", name="Choose seats").click()
    expect(page.get_by_role("heading", name="Autumn symphony")).to_be_visible()
    expect(seat(page, "A-1-5")).to_have_class(re.compile(r"\bseat-f\b"))
    seat(page, "A-1-5").click()
    seat(page, "A-1-6").click()
    expect(page.locator('[data-field="selection"]')).to_have_text("Chosen: A-1-5, A-1-6.")
    expect(seat(page, "A-1-5")).to_have_class(re.compile(r"\bselected\b"))
    page.get_by_role("button", name="Buy these seats").click()
    ticket = page.locator('[data-role="ticket"]')
    expect(ticket).to_have_attribute("data-status", "confirmed", timeout=SETTLE_TIMEOUT_MS)
    expect(ticket).to_contain_text("Confirmed: A-1-5, A-1-6 for $160.00.")
    expect(seat(page, "A-1-5")).to_have_class(re.compile(r"\bseat-s\b"))
    expect(seat(page, "A-1-6")).to_have_class(re.compile(r"\bmine\b"))
    shot(page, "seating.png")

    other = open_tab()
    sign_in_by_api(other, _buyer(stack, "late")[0])
    other.page.goto(f"/events/{event_id}/seating")
    expect(seat(other.page, "A-1-6")).to_have_class(re.compile(r"\bseat-s\b"))
    seat(other.page, "A-1-6").click()  # a sold seat cannot be chosen
    expect(other.page.get_by_role("button", name="Buy these seats")).to_be_disabled()


@needs_browser
def test_the_best_seats_side_by_side_are_found_for_the_buyer(stack: Stack, open_tab) -> None:
    event_id = _seed_show(stack, "Jazz night")
    tab = open_tab()
    sign_in_by_api(tab, _buyer(stack, "best")[0])
    page = tab.page
    page.goto(f"/events/{event_id}/seating")
    expect(seat(page, "B-1-1")).to_be_visible()
    page.get_by_label("Section", exact=True).select_option("B")
    page.get_by_label("Seats", exact=True).fill("3")
    page.get_by_role("button", name="Find the best seats").click()
    ticket = page.locator('[data-role="ticket"]')
    expect(ticket).to_have_attribute("data-status", "confirmed", timeout=SETTLE_TIMEOUT_MS)
    # B-1-4 is an aisle: 1-3 or 5-7; seats 3 and 5 rank alike, and 3 comes first.
    expect(ticket).to_contain_text("B-1-1, B-1-2, B-1-3")
    for seat_id in ("B-1-1", "B-1-2", "B-1-3"):
        expect(seat(page, seat_id)).to_have_class(re.compile(r"\bmine\b"))
    page.get_by_label("Seats", exact=True).fill("4")
    page.get_by_role("button", name="Find the best seats").click()
    expect(page.locator('[data-role="message"]')).to_have_text(
        "Not that many seats side by side are free in this section."
    )
    page.get_by_label("Section", exact=True).select_option("Floor")
    page.get_by_role("button", name="Find the best seats").click()
    expect(ticket).to_contain_text(
        "Confirmed: 4 standing places for $120.00.", timeout=SETTLE_TIMEOUT_MS
    )
    expect(page.locator('[data-role="standing"] li[data-section="Floor"]')).to_have_text(
        "Floor (standing): 96 places left"
    )


@needs_browser
def test_the_seat_map_fits_a_phone_and_zooms_into_a_section(stack: Stack, open_tab) -> None:
    event_id = _seed_show(stack, "Chamber music")
    tab = open_tab(PHONE, phone=True)
    sign_in_by_api(tab, _buyer(stack, "phone")[0])
    page = tab.page
    page.goto(f"/events/{event_id}/seating")
    expect(seat(page, "A-2-10")).to_be_visible()
    page.get_by_role("button", name="Section B").click()
    expect(page.locator('[data-role="seats"]')).to_have_attribute("data-zoom", "B")
    assert no_horizontal_scroll(page)
    shot(page, "seating-phone.png")


# --- a sale's waiting room ----------------------------------------------------------------------


def _room_product(stack: Stack, name: str, rate: int) -> int:
    headers = {"Authorization": f"Bearer {_token(stack, stack.admin_username)}"}
    body = {"name": name, "price": "59.00", "stock": 30, "max_per_user": 2}
    with stack.http() as http:
        answer = http.post(
            "/products",
            json=body | {"waiting_room": True, "admit_per_second": rate},
            headers=headers,
        )
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]


@needs_browser
def test_a_buyer_waits_in_the_queue_then_buys_with_no_reload(stack: Stack, open_tab) -> None:
    product_id = _room_product(stack, "Limited sneakers", 1)
    with stack.http() as http:  # four buyers ahead: about four seconds to wait
        for _ in range(4):
            token = _buyer(stack, "ahead")[1]
            ahead = http.post(
                f"/queue/{product_id}/join", headers={"Authorization": f"Bearer {token}"}
            )
            assert ahead.status_code == 200, ahead.text
    tab = open_tab()
    sign_in_by_api(tab, _buyer(stack, "queued")[0])
    page = tab.page
    page.goto("/")
    product_card(page, product_id).get_by_role("link", name="Join the queue").click()
    expect(page.locator('[data-field="place"]')).to_contain_text("ahead of you")
    expect(page.locator('[data-field="wait"]')).to_contain_text("Estimated wait: about")
    shot(page, "waiting-room.png")
    # Asked again only when its turn should come: meanwhile the page moves the place on.
    expect(page.locator('[data-field="place"]')).to_contain_text("1 buyer ahead of you")
    expect(page.get_by_role("heading", name="It's your turn")).to_be_visible(timeout=20_000)
    expect(page.locator('[data-field="progress"]')).to_have_attribute("value", "100")
    page.get_by_role("button", name="Buy now").click()
    ticket = page.locator('[data-role="ticket"]')
    expect(ticket).to_have_attribute("data-status", "confirmed", timeout=SETTLE_TIMEOUT_MS)
    page.get_by_role("button", name="Buy now").click()  # the pass bought already
    expect(page.locator('[data-role="message"]')).to_have_text(
        "Your pass has been used or has expired: join the queue again."
    )

    ops = open_tab()
    sign_in_by_api(ops, stack.admin_username)
    ops.page.goto("/admin")
    row = ops.page.locator(f'tr[data-product-id="{product_id}"] [data-field="room"]')
    expect(row).to_have_text("0 waiting · 5 admitted · 1/s")
    chart = ops.page.locator(f'[data-chart-for="{product_id}"] [data-role="room-chart"] svg')
    expect(chart).to_have_attribute("aria-label", re.compile("places 1 to 5 admitted"))


# --- entry tickets and the gate ----------------------------------------------------------------


def _gate_staff(stack: Stack) -> str:
    username = f"gate_{secrets.token_hex(3)}"
    engine = make_engine(normalize_database_url(stack.env["DATABASE_URL"]))
    with make_session_factory(engine)() as session:
        create_user(session, username, PASSWORD, 4, role="gate")
        session.commit()
    engine.dispose()
    return username


@needs_browser
def test_a_ticket_shows_its_live_code_and_the_gate_admits_it_once(stack: Stack, open_tab) -> None:
    event_id = _seed_show(stack, "Doors at seven")
    username, token = _buyer(stack, "fan")
    auth = {"Authorization": f"Bearer {token}"}
    with stack.http() as http:
        standing = {"section": "Floor", "quantity": 1, "payment_method": "pm_card_visa"}
        bought = http.post(f"/events/{event_id}/purchase", json=standing, headers=auth)
    assert bought.status_code == 202, bought.text

    def issued() -> dict | None:
        with stack.http() as http:
            tickets = http.get("/tickets", headers=auth).json()["tickets"]
        return tickets[0] if tickets else None

    ticket = wait_until(issued, SETTLE_TIMEOUT_MS / 1000, "the order's ticket")
    tab = open_tab(PHONE, phone=True)
    sign_in_by_api(tab, username)
    page = tab.page
    page.goto("/account/tickets")
    card = page.locator(f'[data-ticket-id="{ticket["id"]}"]')
    expect(card.locator('[data-role="qr"]')).to_be_visible()
    expect(card.locator('[data-field="countdown"]')).to_contain_text("New code in")
    assert page.evaluate("document.querySelector('[data-role=\"qr\"]').naturalWidth") > 0
    assert no_horizontal_scroll(page)
    shot(page, "tickets.png")

    with stack.http() as http:  # the code the page shows now
        code = http.get(f"/tickets/{ticket['id']}", headers=auth).json()["code"]
    gate = open_tab()
    sign_in_by_api(gate, _gate_staff(stack))
    staff = gate.page
    staff.goto("/gate")
    answer = staff.locator('[data-field="answer"]')
    staff.get_by_label("Ticket code").fill(code)
    staff.get_by_role("button", name="Check").click()  # no event yet: nothing is sent
    expect(answer).to_contain_text("enter the event this gate admits to")
    staff.get_by_label("Event number").fill(str(event_id))
    staff.get_by_role("button", name="Check").click()
    expect(answer).to_have_attribute("data-result", "admitted")
    expect(answer).to_have_text("Admitted")
    shot(staff, "gate.png")
    staff.get_by_label("Ticket code").fill(code)
    staff.get_by_role("button", name="Check").click()
    expect(answer).to_have_attribute("data-result", "already_used")
    expect(answer).to_contain_text("Already used · at")
    shot(staff, "gate-refused.png")

    buyer_tab = open_tab()
    sign_in_by_api(buyer_tab, username)
    buyer_tab.page.goto("/gate")  # not for buyers
    expect(buyer_tab.page.get_by_role("heading", name="Gate staff only")).to_be_visible()


# --- event search -------------------------------------------------------------------------------


@needs_browser
def test_search_suggests_titles_and_marks_what_matched(stack: Stack, open_tab) -> None:
    pop = _seed_show(stack, "Beyoncé Renaissance Night", description="The queen of pop, live.")
    korean = _seed_show(stack, "아이유 콘서트 HER", description="아이유의 단독 콘서트 투어.")
    jazz = _seed_show(
        stack, "Blue Lagoon Jazz Club", description="Smooth jazz by the river.", category="jazz"
    )
    tab = open_tab()
    page = tab.page
    page.goto("/")
    page.get_by_role("combobox", name="Search events").press_sequentially("beyo", delay=30)
    suggestion = page.get_by_role("option", name="Beyoncé Renaissance Night")
    expect(suggestion).to_be_visible()
    suggestion.click()
    expect(page).to_have_url(re.compile(r"/search\?q=Beyonc"))
    expect(page.locator(f"#hit-{pop} h3 mark").first).to_have_text("Beyoncé")

    box = page.get_by_role("combobox", name="Search events")
    box.fill("beyonse")  # misspelled
    box.press("Enter")
    expect(page.locator("#search-status")).to_have_text(re.compile("spelled alike"))
    expect(page.locator(f"#hit-{pop} h3 mark")).to_have_text("Beyoncé")

    box.fill("이유")  # two characters inside a Korean word
    box.press("Enter")
    expect(page.locator(f"#hit-{korean} h3 mark")).to_have_text("이유")
    expect(page.locator(f"#hit-{korean} .snippet mark").first).to_have_text("이유")
    expect(page.locator(".hit")).to_have_count(1)

    box.fill("")
    page.get_by_label("Category").select_option("jazz")
    page.get_by_label("Max price").fill("50")
    page.get_by_role("button", name="Apply filters").click()
    expect(page).to_have_url(re.compile(r"category=jazz&max_price=50"))
    expect(page.locator(".hit")).to_have_count(1)
    expect(page.locator(f"#hit-{jazz} .price")).to_have_text("$30.00 \u2013 $80.00")
    expect(page.locator(f"#hit-{jazz} .left")).to_have_text("126 left")
    page.go_back()  # the previous search, from the address
    expect(page.locator(f"#hit-{korean}")).to_be_visible()
    expect(box).to_have_value("이유")

    box.fill("")
    box.press_sequentially("lagoo", delay=30)  # a word inside the title
    option = page.get_by_role("option", name="Blue Lagoon Jazz Club")
    # The previous word's suggestion stays until the new answer replaces it: wait for that.
    expect(option).to_be_visible()
    expect(page.get_by_role("listbox").get_by_role("option")).to_have_count(1)
    box.press("ArrowDown")
    expect(option).to_have_attribute("aria-selected", "true")
    box.press("Enter")
    expect(page.locator(f"#hit-{jazz} h3 mark").first).to_have_text("Blue")
    box.fill("")
    box.press_sequentially("night", delay=30)
    expect(page.get_by_role("option", name="Beyoncé Renaissance Night")).to_be_visible()
    shot(page, "search.png")


@needs_browser
def test_a_late_suggestion_answer_keeps_the_one_the_arrows_are_on(stack: Stack, open_tab) -> None:
    _seed_show(stack, "Harbour Lights Orchestra", description="Strings by the sea.")
    page = open_tab().page
    page.goto("/")
    box = page.get_by_role("combobox", name="Search events")
    box.press_sequentially("harbou", delay=30)
    option = page.get_by_role("option", name="Harbour Lights Orchestra")
    expect(option).to_be_visible()
    box.press("ArrowDown")
    expect(option).to_have_attribute("aria-selected", "true")
    held: list = []

    def hold(route) -> None:  # type: ignore[no-untyped-def]
        held.append(route)

    page.route(re.compile(r"/events/suggest\?q=harbour$"), hold)
    box.press("r")  # its answer is held until after the highlight
    deadline = time.monotonic() + 10
    while not held:
        assert time.monotonic() < deadline, "the suggestion request never came"
        page.wait_for_timeout(20)  # lets the page's request reach the route
    with page.expect_response(re.compile(r"/events/suggest\?q=harbour$")):
        held[0].continue_()
    expect(page.get_by_role("listbox").get_by_role("option")).to_have_count(1)
    expect(option).to_have_attribute("aria-selected", "true")
    box.press("Enter")
    expect(page).to_have_url(re.compile(r"/search\?q=Harbour"))


@needs_browser
def test_the_search_page_fits_a_phone(stack: Stack, open_tab) -> None:
    _seed_show(stack, "Harbour Lights Festival", description="Lanterns over the water.")
    tab = open_tab(PHONE, phone=True)
    page = tab.page
    page.goto("/search?q=harbour")
    expect(page.locator(".hit h3 mark").first).to_have_text("Harbour")
    assert no_horizontal_scroll(page)
    shot(page, "search-phone.png")


# --- the cookie sessions behind the pages (Flask's test client, no browser) -------------------


def _cookie_session(client, username: str):  # type: ignore[no-untyped-def]
    answer = client.post("/auth/session", json={"username": username, "password": "correct horse"})
    assert answer.status_code == 200, answer.get_json()
    return answer


def _csrf(client) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"X-CSRFToken": client.get_cookie("_csrf_token").value}


def test_a_page_session_is_in_http_only_cookies_with_a_csrf_cookie(app, buyer):
    client = app.test_client()
    answer = _cookie_session(client, buyer.username)
    assert set(answer.get_json()) == {"id", "username", "role", "email", "expires_in"}
    cookies = {c.split("=", 1)[0]: c for c in answer.headers.getlist("Set-Cookie")}
    assert set(cookies) == {
        "access_token_cookie",
        "_csrf_token",
        "refresh_token_cookie",
        "csrf_refresh_token",
    }
    for name in ("access_token_cookie", "refresh_token_cookie"):
        assert "HttpOnly" in cookies[name] and "SameSite=Lax" in cookies[name]
    for name in ("_csrf_token", "csrf_refresh_token"):
        assert "HttpOnly" not in cookies[name]
    assert "Max-Age=900" in cookies["access_token_cookie"]
    me = client.get("/auth/me")
    assert me.status_code == 200 and me.get_json()["username"] == buyer.username


def test_unsafe_requests_by_cookie_need_the_csrf_header(app, admin, buyer):
    product = create_product(app.test_client(), admin, stock=5)
    client = app.test_client()
    _cookie_session(client, buyer.username)
    body = {"quantity": 1, "payment_method": "pm_card_visa"}
    refused = client.post(f"/purchase/{product['id']}", json=body)
    assert refused.status_code == 401
    assert refused.get_json() == {"error": "unauthorized", "message": "Missing CSRF token"}
    wrong = client.post(f"/purchase/{product['id']}", json=body, headers={"X-CSRFToken": "x"})
    assert wrong.status_code == 401
    taken = client.post(f"/purchase/{product['id']}", json=body, headers=_csrf(client))
    assert taken.status_code == 202, taken.get_json()
    # A Bearer client needs no CSRF header, cookies or not.
    bearer = app.test_client().post(f"/purchase/{product['id']}", json=body, headers=buyer.headers)
    assert bearer.status_code == 202


def test_refresh_by_cookie_renews_the_access_cookie(app, buyer):
    client = app.test_client()
    _cookie_session(client, buyer.username)
    refresh_csrf = {"X-CSRFToken": client.get_cookie("csrf_refresh_token").value}
    assert client.post("/auth/refresh").status_code == 401  # no CSRF header
    answer = client.post("/auth/refresh", headers=refresh_csrf)
    assert answer.status_code == 200
    assert set(answer.get_json()) == {"access_token", "token_type", "expires_in"}
    assert any(c.startswith("access_token_cookie=") for c in answer.headers.getlist("Set-Cookie"))


def test_sign_out_revokes_the_cookies_tokens(app, buyer):
    client = app.test_client()
    _cookie_session(client, buyer.username)
    access = client.get_cookie("access_token_cookie").value
    assert client.delete("/auth/session").status_code == 401  # no CSRF header
    answer = client.delete("/auth/session", headers=_csrf(client))
    assert answer.status_code == 200 and answer.get_json() == {"signed_out": True}
    assert client.get_cookie("access_token_cookie") is None
    assert client.get_cookie("refresh_token_cookie") is None
    stolen = app.test_client()
    stolen.set_cookie("access_token_cookie", access)
    assert stolen.get("/auth/me").get_json()["error"] == "token_revoked"
    assert stolen.get("/").status_code == 200  # the page just shows nobody signed in
    assert b"Signed in as" not in stolen.get("/").data
    # With no session cookie left, signing out again just clears the cookies.
    assert app.test_client().delete("/auth/session").status_code == 200


def test_pages_know_who_is_signed_in(app, admin, buyer):
    anonymous = app.test_client()
    for path, target in [("/admin", "/?next=/admin"), ("/account/orders", "/?next=")]:
        answer = anonymous.get(path)
        assert answer.status_code == 302 and target in unquote(answer.headers["Location"])
    page = anonymous.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
    assert b"<script>" not in page.data and b" style=" not in page.data

    shopper = app.test_client()
    _cookie_session(shopper, buyer.username)
    refused = shopper.get("/admin")
    assert refused.status_code == 403 and b"Admins only" in refused.data
    assert shopper.get("/admin/overview").status_code == 403
    assert shopper.get("/account/orders").status_code == 200

    operator = app.test_client()
    _cookie_session(operator, admin.username)
    assert operator.get("/admin").status_code == 200
    overview = operator.get("/admin/overview").get_json()
    assert {"products", "queue", "last_reconcile_at", "generated_at"} <= set(overview)
    assert overview["queue"]["failed"] >= 0


def test_a_page_renews_an_expired_access_cookie_from_the_refresh_cookie(app, buyer):
    client = app.test_client()
    _cookie_session(client, buyer.username)
    client.delete_cookie("access_token_cookie")
    answer = client.get("/account/orders")
    assert answer.status_code == 200
    assert any(c.startswith("access_token_cookie=") for c in answer.headers.getlist("Set-Cookie"))


def test_sign_in_never_redirects_to_another_site(app):
    for target in (
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
    ):
        page = app.test_client().get("/", query_string={"next": target})
        assert b"evil.example" not in page.data
    page = app.test_client().get("/", query_string={"next": "/account/orders?page=2"})
    assert b'data-next="/account/orders?page=2"' in page.data


def test_rq_dashboard_buttons_work_for_an_admin_signed_in_by_cookie(app, admin, settings):
    client = app.test_client()
    _cookie_session(client, admin.username)
    assert client.get("/admin/rq/").status_code == 200
    url = f"/admin/rq/queue/{settings.queue_name}/compact"
    assert client.post(url).status_code == 401  # rq-dashboard's script sends the header
    assert client.post(url, headers=_csrf(client)).status_code == 200


def test_the_sales_series_walks_back_from_the_current_figures():
    from core.inventory import StockFigures
    from web.overview import sales_series

    events = [  # newest first, as Inventory.recent_events returns them
        {"action": "confirm", "quantity": "2", "at": "5000"},
        {"action": "process", "quantity": "2", "at": "4000"},
        {"action": "release", "quantity": "1", "at": "3500"},
        {"action": "reserve", "quantity": "1", "at": "3000"},
        {"action": "reserve", "quantity": "2", "at": "2000"},
        {"action": "restore", "quantity": "10", "at": "1000"},
        {"action": "reserve", "quantity": "9", "at": "500"},  # before the reset: not read
    ]
    points = sales_series(StockFigures(10, 8, 0, 2, 7), events)
    assert [p[1:] for p in points] == [
        [0, 0],  # restore
        [0, 2],
        [0, 3],
        [0, 2],
        [0, 2],  # process
        [2, 0],  # confirm
        [2, 0],  # now
    ]
    assert [p[0] for p in points[:-1]] == [1000, 2000, 3000, 3500, 4000, 5000]
