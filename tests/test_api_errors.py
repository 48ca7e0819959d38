"""The error contract: every refusal is JSON {"error": code, "message": text} with the right 4xx,
never a 500, and a refused purchase writes nothing. Also the sale window and the rate limits."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from core.keys import new_ticket_id
from core.stock import rebuild_stock
from tests.helpers import Account, app_with, create_product, make_user, run_workers
from tests.servers import wait_until

HUGE_ID = 99999999999
MISSING = object()


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is the error contract: the status, JSON, and exactly {"error", "message"}."""
    body = response.get_json(silent=True)
    assert response.status_code == status, (response.status_code, response.data[:300])
    assert response.mimetype == "application/json", response.mimetype
    assert isinstance(body, dict), response.data[:300]
    assert set(body) - {"remaining"} == {"error", "message"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["message"], str) and body["message"], body
    if code is not None:
        assert body["error"] == code, body
    return body


@pytest.fixture(scope="module")
def product(app, admin) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return create_product(app.test_client(), admin, stock=50, max_per_user=1)


def available(client: Any, product_id: int) -> int:
    response = client.get(f"/products/{product_id}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["available"]


def product_count(client: Any) -> int:
    return len(client.get("/products").get_json()["products"])


def buy(client: Any, account: Account, product_id: int, **body: Any) -> Any:
    return client.post(
        f"/purchase/{product_id}",
        json={"quantity": 1, "payment_method": "pm_card_visa"} | body,
        headers=account.headers,
    )


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- POST /auth/register and /auth/login ---------------------------------------------------------

GOOD_PASSWORD = "long enough password"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="empty-object"),
        pytest.param({"username": "someone_new"}, id="no-password"),
        pytest.param({"password": GOOD_PASSWORD}, id="no-username"),
        pytest.param({"username": "ab", "password": GOOD_PASSWORD}, id="username-too-short"),
        pytest.param({"username": "a" * 51, "password": GOOD_PASSWORD}, id="username-too-long"),
        pytest.param({"username": "bad name", "password": GOOD_PASSWORD}, id="username-space"),
        pytest.param({"username": "bad/name", "password": GOOD_PASSWORD}, id="username-slash"),
        pytest.param({"username": "<script>", "password": GOOD_PASSWORD}, id="username-markup"),
        pytest.param({"username": "nämé_x", "password": GOOD_PASSWORD}, id="username-non-ascii"),
        pytest.param({"username": "", "password": GOOD_PASSWORD}, id="username-empty"),
        pytest.param({"username": "good_name", "password": "short"}, id="password-too-short"),
        pytest.param({"username": "good_name", "password": "1234567"}, id="password-7-chars"),
        pytest.param({"username": "good_name", "password": "x" * 129}, id="password-too-long"),
        pytest.param({"username": 12345, "password": GOOD_PASSWORD}, id="username-int"),
        pytest.param({"username": None, "password": GOOD_PASSWORD}, id="username-null"),
        pytest.param({"username": ["abc"], "password": GOOD_PASSWORD}, id="username-list"),
        pytest.param({"username": "good_name", "password": 12345678}, id="password-int"),
        pytest.param({"username": "good_name", "password": True}, id="password-bool"),
        pytest.param(
            {"username": "good_name", "password": GOOD_PASSWORD, "role": "admin"},
            id="extra-field-role",
        ),
    ],
)
def test_register_refuses_bad_input(client, body):
    assert_error(client.post("/auth/register", json=body), 400, "invalid_request")


@pytest.mark.parametrize("body", [[], ["a", "b"], "text", 42, True], ids=repr)
def test_register_refuses_a_body_that_is_not_an_object(client, body):
    assert_error(client.post("/auth/register", json=body), 400, "invalid_request")


@pytest.mark.parametrize(
    "data", ['{"username": "abc", ', "{bad json}", "", "null", "\xff\xfe"], ids=repr
)
def test_register_refuses_malformed_json(client, data):
    response = client.post("/auth/register", data=data, content_type="application/json")
    assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None],
)
def test_register_refuses_a_body_that_is_not_json(client, content_type):
    data = '{"username": "someone_new", "password": "long enough password"}'
    response = client.post("/auth/register", data=data, content_type=content_type)
    assert_error(response, 415, "unsupported_media_type")


def test_register_refuses_a_taken_username(client):
    body = {"username": f"dup_{secrets.token_hex(4)}", "password": GOOD_PASSWORD}
    assert client.post("/auth/register", json=body).status_code == 201
    again = client.post("/auth/register", json=body | {"password": "another password"})
    assert_error(again, 409, "username_taken")
    # the first account is intact: its password still logs in, the second one does not
    assert client.post("/auth/login", json=body).status_code == 200
    wrong = client.post("/auth/login", json=body | {"password": "another password"})
    assert_error(wrong, 401, "invalid_credentials")


def test_login_refuses_a_wrong_password_and_an_unknown_user_alike(client, app):
    user = make_user(app, password="the right password")
    wrong = client.post("/auth/login", json={"username": user.username, "password": "wrong one"})
    unknown = client.post(
        "/auth/login", json={"username": f"ghost_{secrets.token_hex(4)}", "password": "whatever"}
    )
    assert_error(wrong, 401, "invalid_credentials")
    assert_error(unknown, 401, "invalid_credentials")
    assert wrong.get_json() == unknown.get_json()


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "someone"},
        {"password": "something"},
        {"username": "", "password": "x"},
        {"username": "someone", "password": ""},
        {"username": 1, "password": "something"},
        {"username": "someone", "password": None},
        {"username": "a" * 51, "password": "something"},
        {"username": "someone", "password": "something", "remember": True},
    ],
    ids=repr,
)
def test_login_refuses_bad_input(client, body):
    assert_error(client.post("/auth/login", json=body), 400, "invalid_request")


@pytest.mark.parametrize("password", ["p" * 73, "p" * 128, "ü" * 40], ids=["73", "128", "80-bytes"])
def test_register_with_a_long_password_is_never_a_500(client, password):
    """The schema allows 128 characters; bcrypt takes at most 72 bytes. Either the account is
    made or the password is refused as bad input."""
    body = {"username": f"longpw_{secrets.token_hex(4)}", "password": password}
    response = client.post("/auth/register", json=body)
    if response.status_code != 201:
        assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("password", ["p" * 73, "p" * 128, "ü" * 40], ids=["73", "128", "80-bytes"])
def test_login_with_a_long_password_is_401_not_500(client, app, password):
    user = make_user(app, password="the right password")
    wrong = client.post("/auth/login", json={"username": user.username, "password": password})
    assert_error(wrong, 401, "invalid_credentials")
    ghost = {"username": f"ghost_{secrets.token_hex(4)}", "password": password}
    assert_error(client.post("/auth/login", json=ghost), 401, "invalid_credentials")


def test_login_refuses_malformed_json_and_wrong_content_type(client):
    bad = client.post("/auth/login", data="{nope", content_type="application/json")
    assert_error(bad, 400, "invalid_json")
    form = client.post("/auth/login", data={"username": "someone", "password": "something"})
    assert_error(form, 415, "unsupported_media_type")


# --- POST /products and PATCH /products/<id> -----------------------------------------------------

NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"price": -1}, id="price-negative"),
        pytest.param({"price": "-0.01"}, id="price-negative-string"),
        pytest.param({"price": 0}, id="price-zero"),
        pytest.param({"price": "0.00"}, id="price-zero-string"),
        pytest.param({"price": "1000000000.01"}, id="price-over-max"),
        pytest.param({"price": 10**30}, id="price-huge-int"),
        pytest.param({"price": 1e300}, id="price-huge-float"),
        pytest.param({"price": "1e400"}, id="price-huge-exponent"),
        pytest.param({"price": "NaN"}, id="price-nan"),
        pytest.param({"price": "Infinity"}, id="price-infinity"),
        pytest.param({"price": "abc"}, id="price-not-a-number"),
        pytest.param({"price": ""}, id="price-empty"),
        pytest.param({"price": True}, id="price-bool"),
        pytest.param({"price": None}, id="price-null"),
        pytest.param({"price": ["1.00"]}, id="price-list"),
        pytest.param({"price": {"amount": "1.00"}}, id="price-object"),
        pytest.param({"price": "1.5", "currency": "JPY"}, id="price-fraction-of-yen"),
        pytest.param({"price": 1.5, "currency": "JPY"}, id="price-float-fraction-of-yen"),
        pytest.param({"price": "1.005"}, id="price-fraction-of-cent"),
        pytest.param({"price": "1.0001", "currency": "BHD"}, id="price-4-decimals-bhd"),
        pytest.param({"currency": "usd"}, id="currency-lowercase"),
        pytest.param({"currency": "EURO"}, id="currency-4-letters"),
        pytest.param({"currency": 840}, id="currency-int"),
        pytest.param({"stock": 0}, id="stock-zero"),
        pytest.param({"stock": -5}, id="stock-negative"),
        pytest.param({"stock": 10_000_001}, id="stock-over-max"),
        pytest.param({"stock": 10**20}, id="stock-huge"),
        pytest.param({"stock": True}, id="stock-bool"),
        pytest.param({"stock": "10"}, id="stock-string"),
        pytest.param({"stock": 2.5}, id="stock-float"),
        pytest.param({"stock": None}, id="stock-null"),
        pytest.param({"stock": MISSING}, id="stock-missing"),
        pytest.param({"price": MISSING}, id="price-missing"),
        pytest.param({"name": MISSING}, id="name-missing"),
        pytest.param({"name": ""}, id="name-empty"),
        pytest.param({"name": "   "}, id="name-blank"),
        pytest.param({"name": "n" * 201}, id="name-too-long"),
        pytest.param({"name": 7}, id="name-int"),
        pytest.param({"max_per_user": -1}, id="max-per-user-negative"),
        pytest.param({"max_per_user": 1001}, id="max-per-user-over-max"),
        pytest.param({"max_per_user": False}, id="max-per-user-bool"),
        pytest.param(
            {"sale_starts_at": iso(NOW + timedelta(hours=2)), "sale_ends_at": iso(NOW)},
            id="sale-ends-before-it-starts",
        ),
        pytest.param(
            {"sale_starts_at": iso(NOW), "sale_ends_at": iso(NOW)}, id="sale-ends-when-it-starts"
        ),
        pytest.param({"sale_starts_at": "next tuesday"}, id="sale-start-not-a-date"),
        pytest.param({"sale_ends_at": [2030, 1, 1]}, id="sale-end-list"),
        pytest.param(
            {"sale_starts_at": "0001-01-01T00:00:00+14:00"}, id="sale-start-before-year-1"
        ),
        pytest.param({"sale_ends_at": "9999-12-31T23:59:59-14:00"}, id="sale-end-after-year-9999"),
        pytest.param({"sku": "ABC-1"}, id="unknown-field"),
        pytest.param({"available": 5}, id="unknown-field-available"),
    ],
)
def test_create_product_refuses_bad_input_and_saves_nothing(client, admin, fields):
    body = {"name": "a drop", "price": "25.00", "stock": 10} | fields
    body = {k: v for k, v in body.items() if v is not MISSING}
    before = product_count(client)
    response = client.post("/products", json=body, headers=admin.headers)
    assert_error(response, 400, "invalid_request")
    assert product_count(client) == before


def test_create_product_accepts_the_edges_of_the_valid_range(client, admin):
    yen = create_product(client, admin, price="1500", currency="JPY", stock=10_000_000)
    assert (yen["price"], yen["currency"], yen["initial_stock"]) == ("1500", "JPY", 10_000_000)
    dinar = create_product(client, admin, price="0.001", currency="BHD", stock=1)
    assert dinar["price"] == "0.001"
    top = create_product(client, admin, price="1000000000", max_per_user=1000)
    assert top["price"] == "1000000000.00"
    as_number = create_product(client, admin, price=19.99)
    assert as_number["price"] == "19.99"


def test_create_product_is_for_admins_only(client, buyer):
    before = product_count(client)
    body = {"name": "a drop", "price": "25.00", "stock": 10}
    assert_error(client.post("/products", json=body), 401, "unauthorized")
    assert_error(client.post("/products", json=body, headers=buyer.headers), 403, "forbidden")
    # the role is checked before the body is read
    assert_error(client.post("/products", json={}, headers=buyer.headers), 403, "forbidden")
    assert product_count(client) == before


def test_create_product_refuses_malformed_json_and_wrong_content_type(client, admin):
    bad = client.post(
        "/products", data="{'name': 1}", content_type="application/json", headers=admin.headers
    )
    assert_error(bad, 400, "invalid_json")
    form = client.post("/products", data={"name": "x"}, headers=admin.headers)
    assert_error(form, 415, "unsupported_media_type")


def test_a_nul_character_in_a_name_is_never_a_500(client, admin, product):
    """Either stored as given or refused as bad input, on SQLite and PostgreSQL alike."""
    before = product_count(client)
    created = client.post(
        "/products",
        json={"name": "nul\x00name", "price": "1.00", "stock": 1},
        headers=admin.headers,
    )
    if created.status_code != 201:
        assert_error(created, 400, "invalid_request")
        assert product_count(client) == before
    renamed = client.patch(
        f"/products/{product['id']}", json={"name": "nul\x00name"}, headers=admin.headers
    )
    if renamed.status_code != 200:
        assert_error(renamed, 400, "invalid_request")


@pytest.mark.parametrize("product_id", [424242424, HUGE_ID, 2_147_483_648, 0])
def test_update_unknown_product_is_404(client, admin, product_id):
    response = client.patch(
        f"/products/{product_id}", json={"name": "renamed"}, headers=admin.headers
    )
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"add_stock": -1}, id="add-stock-negative"),
        pytest.param({"add_stock": "5"}, id="add-stock-string"),
        pytest.param({"add_stock": True}, id="add-stock-bool"),
        pytest.param({"add_stock": 10_000_001}, id="add-stock-over-max"),
        pytest.param({"max_per_user": 1001}, id="max-per-user-over-max"),
        pytest.param({"max_per_user": "2"}, id="max-per-user-string"),
        pytest.param({"name": ""}, id="name-empty"),
        pytest.param({"name": 5}, id="name-int"),
        pytest.param({"stock": 99}, id="unknown-field-stock"),
        pytest.param({"price": "1.00"}, id="unknown-field-price"),
        pytest.param({"sale_starts_at": "soon"}, id="start-not-a-date"),
        pytest.param({"sale_ends_at": "9999-12-31T23:59:59-14:00"}, id="end-after-year-9999"),
        pytest.param(
            {"sale_starts_at": iso(NOW + timedelta(days=2)), "sale_ends_at": iso(NOW)},
            id="ends-before-starts",
        ),
    ],
)
def test_update_product_refuses_bad_input_and_changes_nothing(client, admin, product, body):
    before = client.get(f"/products/{product['id']}").get_json()
    response = client.patch(f"/products/{product['id']}", json=body, headers=admin.headers)
    assert_error(response, 400, "invalid_request")
    assert client.get(f"/products/{product['id']}").get_json() == before


def test_update_refuses_an_end_before_the_stored_start_and_changes_nothing(client, admin):
    starts = NOW + timedelta(days=1)
    created = create_product(client, admin, sale_starts_at=iso(starts), name="windowed")
    before = client.get(f"/products/{created['id']}").get_json()
    response = client.patch(
        f"/products/{created['id']}",
        json={"sale_ends_at": iso(starts - timedelta(hours=1)), "name": "renamed", "add_stock": 5},
        headers=admin.headers,
    )
    assert_error(response, 400, "invalid_request")
    after = client.get(f"/products/{created['id']}").get_json()
    assert after == before
    assert after["name"] == "windowed" and after["available"] == 10


def test_update_product_is_for_admins_only_and_wants_json(client, admin, buyer, product):
    url = f"/products/{product['id']}"
    assert_error(client.patch(url, json={"add_stock": 1}), 401, "unauthorized")
    assert_error(client.patch(url, json={"add_stock": 1}, headers=buyer.headers), 403, "forbidden")
    bad = client.patch(url, data="{", content_type="application/json", headers=admin.headers)
    assert_error(bad, 400, "invalid_json")
    form = client.patch(url, data={"add_stock": "1"}, headers=admin.headers)
    assert_error(form, 415, "unsupported_media_type")
    listed = client.patch(url, json=[{"add_stock": 1}], headers=admin.headers)
    assert_error(listed, 400, "invalid_request")


@pytest.mark.parametrize("path", [f"/products/{HUGE_ID}", "/products/424242424", "/products/0"])
def test_unknown_product_is_404(client, path):
    assert_error(client.get(path), 404, "not_found")


@pytest.mark.parametrize("path", ["/products/-1", "/products/abc", "/products/1.5"])
def test_product_path_that_is_not_an_id_is_404(client, path):
    assert_error(client.get(path), 404, "not_found")


# --- POST /purchase/<id> -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"quantity": 0}, id="quantity-zero"),
        pytest.param({"quantity": -1}, id="quantity-negative"),
        pytest.param({"quantity": 101}, id="quantity-over-max"),
        pytest.param({"quantity": 10**12}, id="quantity-huge"),
        pytest.param({"quantity": "2"}, id="quantity-string"),
        pytest.param({"quantity": 1.5}, id="quantity-fraction"),
        pytest.param({"quantity": 1.0}, id="quantity-float"),
        pytest.param({"quantity": True}, id="quantity-bool"),
        pytest.param({"quantity": None}, id="quantity-null"),
        pytest.param({"quantity": MISSING}, id="quantity-missing"),
        pytest.param({"payment_method": MISSING}, id="payment-method-missing"),
        pytest.param({"payment_method": "card_visa"}, id="payment-method-no-pm-prefix"),
        pytest.param({"payment_method": "pm_"}, id="payment-method-only-prefix"),
        pytest.param({"payment_method": "PM_card_visa"}, id="payment-method-upper-prefix"),
        pytest.param({"payment_method": "pm_card visa"}, id="payment-method-space"),
        pytest.param({"payment_method": "pm_card-visa"}, id="payment-method-dash"),
        pytest.param({"payment_method": "pm_" + "x" * 253}, id="payment-method-too-long"),
        pytest.param({"payment_method": 4242}, id="payment-method-int"),
        pytest.param({"payment_method": None}, id="payment-method-null"),
        pytest.param({"user_id": 1}, id="unknown-field-user-id"),
        pytest.param({"price": "0.01"}, id="unknown-field-price"),
    ],
)
def test_purchase_refuses_bad_input_and_writes_nothing(client, buyer, product, body):
    before = available(client, product["id"])
    full = {"quantity": 1, "payment_method": "pm_card_visa"} | body
    full = {k: v for k, v in full.items() if v is not MISSING}
    response = client.post(f"/purchase/{product['id']}", json=full, headers=buyer.headers)
    assert_error(response, 400, "invalid_request")
    assert available(client, product["id"]) == before


@pytest.mark.parametrize("body", [[], "buy", 1, [{"quantity": 1}]], ids=repr)
def test_purchase_refuses_a_body_that_is_not_an_object(client, buyer, product, body):
    before = available(client, product["id"])
    response = client.post(f"/purchase/{product['id']}", json=body, headers=buyer.headers)
    assert_error(response, 400, "invalid_request")
    assert available(client, product["id"]) == before


def test_purchase_refuses_malformed_json_and_wrong_content_type(client, buyer, product):
    before = available(client, product["id"])
    url = f"/purchase/{product['id']}"
    bad = client.post(
        url, data='{"quantity": 1,', content_type="application/json", headers=buyer.headers
    )
    assert_error(bad, 400, "invalid_json")
    empty = client.post(url, data="", content_type="application/json", headers=buyer.headers)
    assert_error(empty, 400, "invalid_json")
    form = client.post(
        url, data={"quantity": "1", "payment_method": "pm_card_visa"}, headers=buyer.headers
    )
    assert_error(form, 415, "unsupported_media_type")
    text = client.post(
        url,
        data='{"quantity": 1, "payment_method": "pm_card_visa"}',
        content_type="text/plain",
        headers=buyer.headers,
    )
    assert_error(text, 415, "unsupported_media_type")
    assert available(client, product["id"]) == before


@pytest.mark.parametrize(
    "key",
    ["has spaces", "x" * 101, "k" * 200, "semi;colon", "slash/key", "quote'key", "\tkey"],
    ids=lambda k: f"{k[:12]!r}-len{len(k)}",
)
def test_purchase_refuses_a_bad_idempotency_key_and_writes_nothing(client, buyer, product, key):
    before = available(client, product["id"])
    response = client.post(
        f"/purchase/{product['id']}",
        json={"quantity": 1, "payment_method": "pm_card_visa"},
        headers=buyer.headers | {"Idempotency-Key": key},
    )
    assert_error(response, 400, "invalid_idempotency_key")
    assert available(client, product["id"]) == before


@pytest.mark.parametrize("product_id", [424242424, HUGE_ID, 2_147_483_648, 0])
def test_purchase_of_an_unknown_product_is_404(client, buyer, product_id):
    assert_error(buy(client, buyer, product_id), 404, "not_found")


@pytest.mark.parametrize("path", ["/purchase/-1", "/purchase/abc"])
def test_purchase_path_that_is_not_an_id_is_404(client, buyer, path):
    response = client.post(
        path, json={"quantity": 1, "payment_method": "pm_card_visa"}, headers=buyer.headers
    )
    assert_error(response, 404, "not_found")


def test_purchase_without_a_token_is_401_and_writes_nothing(client, product):
    before = available(client, product["id"])
    response = client.post(
        f"/purchase/{product['id']}", json={"quantity": 1, "payment_method": "pm_card_visa"}
    )
    assert_error(response, 401, "unauthorized")
    assert available(client, product["id"]) == before


def test_refused_purchases_leave_the_buyers_allowance_whole(client, app, admin):
    """max_per_user=1: after a string of refusals the buyer can still buy their one unit."""
    fresh = create_product(client, admin, stock=5, max_per_user=1)
    someone = make_user(app)
    refusals = [
        buy(client, someone, fresh["id"], quantity=2),
        buy(client, someone, fresh["id"], quantity="1"),
        buy(client, someone, fresh["id"], payment_method="visa"),
        client.post(
            f"/purchase/{fresh['id']}",
            json={"quantity": 1, "payment_method": "pm_card_visa"},
            headers=someone.headers | {"Idempotency-Key": "bad key"},
        ),
    ]
    assert [r.status_code for r in refusals] == [409, 400, 400, 400]
    assert_error(refusals[0], 409, "per_user_limit")
    assert available(client, fresh["id"]) == 5
    assert buy(client, someone, fresh["id"]).status_code == 202
    assert available(client, fresh["id"]) == 4


# --- the sale window ------------------------------------------------------------------------------


def test_purchase_before_the_sale_starts_is_409_and_writes_nothing(client, admin, buyer):
    upcoming = create_product(
        client,
        admin,
        stock=5,
        sale_starts_at=iso(datetime.now(UTC) + timedelta(hours=1)),
        sale_ends_at=iso(datetime.now(UTC) + timedelta(hours=2)),
    )
    response = buy(client, buyer, upcoming["id"])
    assert_error(response, 409, "sale_not_started")
    assert available(client, upcoming["id"]) == 5


def test_purchase_after_the_sale_ended_is_409_and_writes_nothing(client, admin, buyer):
    ended = create_product(
        client,
        admin,
        stock=5,
        sale_starts_at=iso(datetime.now(UTC) - timedelta(hours=2)),
        sale_ends_at=iso(datetime.now(UTC) - timedelta(hours=1)),
    )
    response = buy(client, buyer, ended["id"])
    assert_error(response, 409, "sale_ended")
    assert available(client, ended["id"]) == 5


def test_sale_window_given_with_an_offset_or_without_a_zone(client, admin, buyer):
    later = datetime.now(UTC) + timedelta(hours=3)
    in_tokyo = later.astimezone(timezone(timedelta(hours=9))).isoformat()
    naive = later.replace(tzinfo=None).isoformat()
    for starts in (in_tokyo, naive):
        upcoming = create_product(client, admin, stock=2, sale_starts_at=starts)
        assert_error(buy(client, buyer, upcoming["id"]), 409, "sale_not_started")
        assert available(client, upcoming["id"]) == 2


def test_opening_the_sale_early_makes_the_product_purchasable(client, admin, buyer):
    upcoming = create_product(
        client, admin, stock=3, sale_starts_at=iso(datetime.now(UTC) + timedelta(hours=1))
    )
    assert_error(buy(client, buyer, upcoming["id"]), 409, "sale_not_started")
    opened = client.patch(
        f"/products/{upcoming['id']}",
        json={"sale_starts_at": iso(datetime.now(UTC) - timedelta(minutes=1))},
        headers=admin.headers,
    )
    assert opened.status_code == 200, opened.get_json()
    assert buy(client, buyer, upcoming["id"]).status_code == 202
    assert available(client, upcoming["id"]) == 2


# --- GET /orders, GET /orders/<ticket>, POST /orders/<ticket>/cancel ---------------------------


@pytest.mark.parametrize(
    "ticket",
    [
        "garbage",
        "0-000000000000000000000000",
        "1-xyz",
        "1-" + "0" * 23,
        "99999999999-" + "a" * 24,
        "12-" + "A" * 24,
        "x" * 300,
    ],
    ids=lambda t: t[:20],
)
def test_unknown_or_garbage_ticket_is_404(client, buyer, ticket):
    assert_error(client.get(f"/orders/{ticket}", headers=buyer.headers), 404, "not_found")
    cancel = client.post(f"/orders/{ticket}/cancel", headers=buyer.headers)
    assert_error(cancel, 404, "not_found")


def test_well_formed_ticket_nobody_holds_is_404(client, buyer, product):
    ticket = new_ticket_id(product["id"])
    assert_error(client.get(f"/orders/{ticket}", headers=buyer.headers), 404, "not_found")
    assert_error(client.post(f"/orders/{ticket}/cancel", headers=buyer.headers), 404, "not_found")
    elsewhere = new_ticket_id(424242424)
    assert_error(client.get(f"/orders/{elsewhere}", headers=buyer.headers), 404, "not_found")


def test_orders_need_a_token(client, product):
    ticket = new_ticket_id(product["id"])
    assert_error(client.get("/orders"), 401, "unauthorized")
    assert_error(client.get(f"/orders/{ticket}"), 401, "unauthorized")
    assert_error(client.post(f"/orders/{ticket}/cancel"), 401, "unauthorized")


def test_another_users_ticket_is_404_but_an_admin_may_read_it(client, app, admin, settings):
    owner, stranger = make_user(app), make_user(app)
    fresh = create_product(client, admin, stock=3)
    ticket = buy(client, owner, fresh["id"]).get_json()["ticket_id"]

    assert client.get(f"/orders/{ticket}", headers=owner.headers).status_code == 200
    assert_error(client.get(f"/orders/{ticket}", headers=stranger.headers), 404, "not_found")
    read = client.get(f"/orders/{ticket}", headers=admin.headers)
    assert read.status_code == 200 and read.get_json()["ticket_id"] == ticket

    # once settled, the order is read from SQL: the same rules hold there
    def confirmed():  # type: ignore[no-untyped-def]
        run_workers(settings)
        return client.get(f"/orders/{ticket}", headers=owner.headers).get_json()["status"] == (
            "confirmed"
        )

    wait_until(confirmed, 20, "the order to be confirmed")
    assert_error(client.get(f"/orders/{ticket}", headers=stranger.headers), 404, "not_found")
    assert client.get(f"/orders/{ticket}", headers=admin.headers).status_code == 200
    refused = client.post(f"/orders/{ticket}/cancel", headers=stranger.headers)
    assert_error(refused, 404, "not_found")


def test_an_admin_refund_while_the_stock_is_rebuilt_is_503_and_moves_nothing(
    client, app, admin, settings
):
    buyer = make_user(app)
    fresh = create_product(client, admin, stock=2)
    ticket = buy(client, buyer, fresh["id"]).get_json()["ticket_id"]

    def confirmed():  # type: ignore[no-untyped-def]
        run_workers(settings)
        return client.get(f"/orders/{ticket}", headers=buyer.headers).get_json()["status"] == (
            "confirmed"
        )

    wait_until(confirmed, 20, "the order to be confirmed")
    rt = app.extensions["flashsale"]
    rt.inventory_redis.delete(rt.inventory.keys(fresh["id"]).stock)
    refused = client.post(f"/orders/{ticket}/cancel", headers=admin.headers)
    assert_error(refused, 503, "inventory_unavailable")
    assert refused.headers["Retry-After"] == "2"
    assert client.get(f"/orders/{ticket}", headers=admin.headers).get_json()["status"] == (
        "confirmed"
    )
    assert rebuild_stock(rt.inventory, rt.sessions, fresh["id"])
    refunded = client.post(f"/orders/{ticket}/cancel", headers=admin.headers)
    assert refunded.status_code == 200 and refunded.get_json()["status"] == "refunded"


@pytest.mark.parametrize(
    "query",
    [
        "page=0",
        "page=-1",
        "page=abc",
        "page=",
        "page=1.5",
        "page=100001",
        "page=99999999999999999999",
        "per_page=0",
        "per_page=101",
        "per_page=1000",
        "per_page=-5",
        "per_page=ten",
        "page=%C2%B2",  # superscript two: str.isdigit() says yes, int() refuses it
        "per_page=%C2%B9",  # superscript one
    ],
)
def test_order_list_refuses_bad_paging(client, buyer, query):
    assert_error(client.get(f"/orders?{query}", headers=buyer.headers), 400, "invalid_request")


def test_order_list_accepts_the_paging_limits(client, buyer):
    response = client.get("/orders?page=1&per_page=100", headers=buyer.headers)
    assert response.status_code == 200
    assert response.get_json()["per_page"] == 100


# --- bodies, routes and methods ------------------------------------------------------------------


BODY_ROUTES = pytest.mark.parametrize(
    ("method", "path", "who"),
    [
        ("post", "/auth/register", None),
        ("post", "/auth/login", None),
        ("post", "/products", "admin"),
        ("post", "/purchase/{product}", "buyer"),
        ("patch", "/products/{product}", "admin"),
    ],
)


def send_raw(client, accounts, product, method, path, who, data):  # type: ignore[no-untyped-def]
    return getattr(client, method)(
        path.format(product=product["id"]),
        data=data,
        content_type="application/json",
        headers=accounts[who].headers if who else {},
    )


@BODY_ROUTES
def test_an_oversized_body_is_413(client, admin, buyer, product, method, path, who):
    before = available(client, product["id"])
    big = '{"padding": "' + "x" * (17 * 1024) + '"}'
    accounts = {"admin": admin, "buyer": buyer}
    response = send_raw(client, accounts, product, method, path, who, big)
    assert_error(response, 413, "payload_too_large")
    assert available(client, product["id"]) == before


@BODY_ROUTES
def test_deeply_nested_json_is_400_not_500(client, admin, buyer, product, method, path, who):
    """10 KB of brackets: under the body limit, deeper than the JSON parser's recursion limit."""
    before = available(client, product["id"])
    accounts = {"admin": admin, "buyer": buyer}
    deep = "[" * 5000 + "]" * 5000
    response = send_raw(client, accounts, product, method, path, who, deep)
    body = assert_error(response, 400)
    assert body["error"] in {"invalid_json", "invalid_request"}
    assert available(client, product["id"]) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/nope"),
        ("get", "/api/v1/products"),
        ("post", "/purchase"),
        ("get", "/orders/abc/def"),
        ("get", "/admin/nothing-here"),
        ("delete", "/auth"),
    ],
)
def test_an_unknown_route_is_404_json(client, method, path):
    assert_error(getattr(client, method)(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("delete", "/products"),
        ("put", "/products/1"),
        ("delete", "/products/1"),
        ("get", "/purchase/1"),
        ("get", "/auth/login"),
        ("get", "/auth/register"),
        ("post", "/auth/me"),
        ("delete", "/orders"),
        ("get", "/orders/1-abc/cancel"),
        ("post", "/health"),
    ],
)
def test_a_wrong_method_is_405_json_with_allow(client, method, path):
    response = getattr(client, method)(path)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers.get("Allow")


# --- rate limits (a second app with the limiter on) ----------------------------------------------


@pytest.fixture()
def limited_app(app):  # type: ignore[no-untyped-def]
    """An app with rate limits on, beside the session app that has them off."""
    with app_with(
        ratelimit_enabled=True, ratelimit_login="3/minute", ratelimit_purchase="2/minute"
    ) as limited:
        yield limited


def address() -> dict[str, str]:
    """A client address of its own, so the per-address limit of one test touches no other."""
    return {"REMOTE_ADDR": "10." + ".".join(str(secrets.randbelow(250) + 1) for _ in range(3))}


def test_login_over_the_limit_is_429_with_retry_after(limited_app):
    user = make_user(limited_app, password="the right password")
    client = limited_app.test_client()
    env = address()
    body = {"username": user.username, "password": "the right password"}
    codes = [client.post("/auth/login", json=body, environ_base=env).status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    over = client.post("/auth/login", json=body, environ_base=env)
    assert_error(over, 429, "rate_limited")
    assert int(over.headers["Retry-After"]) >= 1


def test_login_limit_is_per_username_and_address(limited_app):
    """Failed logins from one address do not lock the user out of another address: nobody can
    lock a buyer out at the opening by failing logins for their username."""
    user = make_user(limited_app, password="the right password")
    client = limited_app.test_client()
    attacker, owner = address(), address()
    wrong = {"username": user.username, "password": "not the password"}
    for _ in range(3):
        assert_error(
            client.post("/auth/login", json=wrong, environ_base=attacker),
            401,
            "invalid_credentials",
        )
    right = {"username": user.username, "password": "the right password"}
    over = client.post("/auth/login", json=right, environ_base=attacker)
    assert_error(over, 429, "rate_limited")
    assert int(over.headers["Retry-After"]) >= 1
    shouted = client.post(
        "/auth/login",
        json={"username": user.username.upper(), "password": "x"},
        environ_base=attacker,
    )
    assert_error(shouted, 429, "rate_limited")
    # the owner, from their own address, still logs in
    served = client.post("/auth/login", json=right, environ_base=owner)
    assert served.status_code == 200, served.get_json()


def test_login_with_deeply_nested_json_under_rate_limits_is_400(limited_app):
    """The per-username limit reads the body before the view does."""
    client = limited_app.test_client()
    response = client.post(
        "/auth/login",
        data="[" * 5000 + "]" * 5000,
        content_type="application/json",
        environ_base=address(),
    )
    body = assert_error(response, 400)
    assert body["error"] in {"invalid_json", "invalid_request"}


def test_login_limit_per_address_across_usernames(limited_app):
    client = limited_app.test_client()
    env = address()
    for _ in range(3):
        body = {"username": f"ghost_{secrets.token_hex(4)}", "password": "whatever"}
        assert client.post("/auth/login", json=body, environ_base=env).status_code == 401
    body = {"username": f"ghost_{secrets.token_hex(4)}", "password": "whatever"}
    assert_error(client.post("/auth/login", json=body, environ_base=env), 429, "rate_limited")


def test_purchases_over_the_per_user_limit_are_429_while_others_are_served(limited_app):
    client = limited_app.test_client()
    admin_ = make_user(limited_app, "admin")
    fresh = create_product(client, admin_, stock=20)
    eager, patient = make_user(limited_app), make_user(limited_app)
    assert buy(client, eager, fresh["id"]).status_code == 202
    assert buy(client, eager, fresh["id"]).status_code == 202
    over = buy(client, eager, fresh["id"])
    assert_error(over, 429, "rate_limited")
    assert over.headers.get("Retry-After")
    assert available(client, fresh["id"]) == 18
    # the limit is per user, not per address: another buyer from the same address is served
    assert buy(client, patient, fresh["id"]).status_code == 202
    assert available(client, fresh["id"]) == 17


def test_a_second_app_leaves_the_session_apps_limits_alone(app, client, limited_app):
    """The session app has RATELIMIT_ENABLED=false; building another app must not turn its
    limits on (web.extensions.limiter is one object shared by every app)."""
    user = make_user(app, password="the right password")
    body = {"username": user.username, "password": "wrong password"}
    codes = [client.post("/auth/login", json=body).status_code for _ in range(8)]
    assert codes == [401] * 8
