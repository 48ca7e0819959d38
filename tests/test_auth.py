"""Authentication: registration, login, tokens (refresh, revocation, forgery, expiry) and the
admin-only routes. Every refusal is the JSON error contract."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt as pyjwt
import pytest

from tests.helpers import create_product

PASSWORD = "correct horse battery"


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    body = response.get_json(silent=True)
    assert response.status_code == status, (response.status_code, response.data[:300])
    assert response.mimetype == "application/json", response.mimetype
    assert isinstance(body, dict) and set(body) == {"error", "message"}, body
    assert isinstance(body["error"], str) and isinstance(body["message"], str), body
    if code is not None:
        assert body["error"] == code, body
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register(client: Any, username: str | None = None, password: str = PASSWORD) -> Any:
    username = username or f"user_{secrets.token_hex(5)}"
    return client.post("/auth/register", json={"username": username, "password": password})


def login(client: Any, username: str, password: str = PASSWORD) -> dict[str, Any]:
    response = client.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def signed(app: Any, key: str | None = None, algorithm: str = "HS256", **claims: Any) -> str:
    """A token shaped like flask-jwt-extended's, signed with `key` (the app's by default)."""
    now = datetime.now(UTC)
    payload = {
        "sub": "1",
        "jti": str(uuid.uuid4()),
        "type": "access",
        "fresh": False,
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(minutes=15),
        "role": "buyer",
    } | claims
    secret = app.config["JWT_SECRET_KEY"] if key is None else key
    return pyjwt.encode(payload, secret, algorithm=algorithm)


def b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- registration, login, me ---------------------------------------------------------------------


def test_register_then_login_then_me(client, settings):
    username = f"new_{secrets.token_hex(4)}"
    created = register(client, username)
    assert created.status_code == 201
    body = created.get_json()
    assert set(body) == {"id", "username"}
    assert isinstance(body["id"], int) and body["username"] == username

    tokens = login(client, username)
    assert set(tokens) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == settings.jwt_access_minutes * 60
    assert tokens["access_token"] != tokens["refresh_token"]

    me = client.get("/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    assert me.get_json() == {"id": body["id"], "username": username, "role": "buyer", "email": None}


def test_registration_never_makes_an_admin(client):
    username = f"sneaky_{secrets.token_hex(4)}"
    refused = client.post(
        "/auth/register", json={"username": username, "password": PASSWORD, "role": "admin"}
    )
    assert_error(refused, 400, "invalid_request")
    assert register(client, username).status_code == 201
    tokens = login(client, username)
    me = client.get("/auth/me", headers=bearer(tokens["access_token"])).get_json()
    assert me["role"] == "buyer"
    assert_error(client.get("/admin/rq/", headers=bearer(tokens["access_token"])), 403, "forbidden")


def test_admin_login_carries_the_admin_role(client, app, admin):
    tokens = login(client, admin.username, "correct horse")
    me = client.get("/auth/me", headers=bearer(tokens["access_token"])).get_json()
    assert me == {"id": admin.id, "username": admin.username, "role": "admin", "email": None}


def test_login_with_a_wrong_password_is_401(client, buyer):
    response = client.post(
        "/auth/login", json={"username": buyer.username, "password": "not the password"}
    )
    assert_error(response, 401, "invalid_credentials")


def test_login_is_case_sensitive_on_the_password(client, buyer):
    response = client.post(
        "/auth/login", json={"username": buyer.username, "password": "CORRECT HORSE"}
    )
    assert_error(response, 401, "invalid_credentials")


# --- refresh and logout --------------------------------------------------------------------------


def test_refresh_gives_a_working_access_token(client, buyer, settings):
    tokens = login(client, buyer.username, "correct horse")
    refreshed = client.post("/auth/refresh", headers=bearer(tokens["refresh_token"]))
    assert refreshed.status_code == 200, refreshed.get_json()
    body = refreshed.get_json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.jwt_access_minutes * 60
    me = client.get("/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200 and me.get_json()["id"] == buyer.id


def test_refresh_refuses_an_access_token(client, buyer):
    tokens = login(client, buyer.username, "correct horse")
    assert_error(client.post("/auth/refresh", headers=bearer(tokens["access_token"])), 401)


def test_a_refresh_token_is_not_an_access_token(client, buyer):
    tokens = login(client, buyer.username, "correct horse")
    assert_error(client.get("/auth/me", headers=bearer(tokens["refresh_token"])), 401)
    assert_error(client.get("/orders", headers=bearer(tokens["refresh_token"])), 401)


def test_refresh_without_a_token_is_401(client):
    assert_error(client.post("/auth/refresh"), 401, "unauthorized")


def test_logout_revokes_the_access_token(client, buyer):
    tokens = login(client, buyer.username, "correct horse")
    other = login(client, buyer.username, "correct horse")
    headers = bearer(tokens["access_token"])
    assert client.get("/auth/me", headers=headers).status_code == 200
    out = client.post("/auth/logout", headers=headers)
    assert out.status_code == 200 and out.get_json() == {"revoked": True}
    assert_error(client.get("/auth/me", headers=headers), 401, "token_revoked")
    assert_error(client.get("/orders", headers=headers), 401, "token_revoked")
    assert_error(client.post("/auth/logout", headers=headers), 401, "token_revoked")
    # only that token: another session of the same user goes on
    assert client.get("/auth/me", headers=bearer(other["access_token"])).status_code == 200


def test_logout_with_the_refresh_token_revokes_it(client, buyer):
    tokens = login(client, buyer.username, "correct horse")
    headers = bearer(tokens["refresh_token"])
    assert client.post("/auth/logout", headers=headers).status_code == 200
    assert_error(client.post("/auth/refresh", headers=headers), 401, "token_revoked")


def test_logout_with_the_refresh_token_in_the_body_revokes_both(client, buyer):
    tokens = login(client, buyer.username, "correct horse")
    other = login(client, buyer.username, "correct horse")
    headers = bearer(tokens["access_token"])
    out = client.post(
        "/auth/logout", headers=headers, json={"refresh_token": tokens["refresh_token"]}
    )
    assert out.status_code == 200 and out.get_json() == {"revoked": True}
    refused = client.post("/auth/refresh", headers=bearer(tokens["refresh_token"]))
    assert_error(refused, 401, "token_revoked")
    assert_error(client.get("/auth/me", headers=headers), 401, "token_revoked")
    # only that login: another login of the same user goes on
    assert client.post("/auth/refresh", headers=bearer(other["refresh_token"])).status_code == 200


def test_logout_ends_the_whole_sign_in_without_naming_the_refresh_token(client, buyer):
    tokens = login(client, buyer.username, "correct horse")
    other = login(client, buyer.username, "correct horse")
    renewed = client.post("/auth/refresh", headers=bearer(tokens["refresh_token"]))
    assert renewed.status_code == 200
    out = client.post("/auth/logout", headers=bearer(tokens["access_token"]))
    assert out.status_code == 200 and out.get_json() == {"revoked": True}
    refused = client.post("/auth/refresh", headers=bearer(tokens["refresh_token"]))
    assert_error(refused, 401, "token_revoked")
    renewed_headers = bearer(renewed.get_json()["access_token"])  # made by that refresh token
    assert_error(client.get("/auth/me", headers=renewed_headers), 401, "token_revoked")
    assert client.post("/auth/refresh", headers=bearer(other["refresh_token"])).status_code == 200


def test_logout_with_an_expired_refresh_token_in_the_body_revokes_the_access_token(
    client, app, buyer
):
    tokens = login(client, buyer.username, "correct horse")
    expired = signed(
        app, sub=str(buyer.id), type="refresh", exp=datetime.now(UTC) - timedelta(minutes=1)
    )
    headers = bearer(tokens["access_token"])
    out = client.post("/auth/logout", headers=headers, json={"refresh_token": expired})
    assert out.status_code == 200 and out.get_json() == {"revoked": True}
    assert_error(client.get("/auth/me", headers=headers), 401, "token_revoked")


def test_logout_refuses_a_body_without_the_callers_refresh_token(client, app, buyer):
    """Each refused before anything is revoked: both tokens keep working."""
    tokens = login(client, buyer.username, "correct horse")
    stranger = login(client, register(client).get_json()["username"])
    headers = bearer(tokens["access_token"])
    bodies = [
        {"refresh_token": stranger["refresh_token"]},  # another user's
        {"refresh_token": tokens["access_token"]},  # not a refresh token
        {
            "refresh_token": signed(
                app,
                key="another key, as long as a real one: 32 bytes",
                sub=str(buyer.id),
                type="refresh",
            )
        },
        {"refresh_token": "not.a.token"},
        {"refresh_token": ""},
        {"refresh_token": tokens["refresh_token"], "everything": True},
        {},
    ]
    for body in bodies:
        assert_error(client.post("/auth/logout", headers=headers, json=body), 400)
    assert_error(client.post("/auth/logout", headers=headers, data="refresh_token=x"), 415)
    assert client.get("/auth/me", headers=headers).status_code == 200
    refreshed = client.post("/auth/refresh", headers=bearer(tokens["refresh_token"]))
    assert refreshed.status_code == 200
    assert (
        client.post("/auth/refresh", headers=bearer(stranger["refresh_token"])).status_code == 200
    )


def test_the_logout_body_is_documented_as_optional(client):
    operation = client.get("/openapi.json").get_json()["paths"]["/auth/logout"]["post"]
    body = operation["requestBody"]
    assert body["required"] is False
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/LogoutRequest")


def test_logout_without_a_token_is_401(client):
    assert_error(client.post("/auth/logout"), 401, "unauthorized")


# --- forged, broken and expired tokens ------------------------------------------------------------


def test_a_token_with_a_flipped_signature_character_is_401(client, buyer):
    header, payload, signature = buyer.token.split(".")
    # the first character carries six bits of the signature (the last one partly padding)
    flipped = ("B" if signature[0] != "B" else "C") + signature[1:]
    assert_error(
        client.get("/auth/me", headers=bearer(f"{header}.{payload}.{flipped}")),
        401,
        "invalid_token",
    )


def test_a_buyer_who_edits_the_role_claim_is_401(client, buyer):
    header, payload, signature = buyer.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = f"{header}.{b64(claims | {'role': 'admin'})}.{signature}"
    assert_error(client.get("/admin/rq/", headers=bearer(forged)), 401, "invalid_token")
    response = client.post(
        "/products", json={"name": "x", "price": "1.00", "stock": 1}, headers=bearer(forged)
    )
    assert_error(response, 401, "invalid_token")


def test_a_token_signed_with_another_key_is_401(client, app, admin):
    forged = signed(app, key=secrets.token_hex(32), sub=str(admin.id), role="admin")
    assert_error(client.get("/auth/me", headers=bearer(forged)), 401, "invalid_token")
    response = client.post(
        "/products", json={"name": "x", "price": "1.00", "stock": 1}, headers=bearer(forged)
    )
    assert_error(response, 401, "invalid_token")


def test_an_alg_none_token_is_401(client, admin):
    now = int(datetime.now(UTC).timestamp())
    claims = {
        "sub": str(admin.id),
        "jti": str(uuid.uuid4()),
        "type": "access",
        "fresh": False,
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "role": "admin",
    }
    for token in (
        pyjwt.encode(claims, None, algorithm="none"),
        f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.",
        f"{b64({'alg': 'None'})}.{b64(claims)}.",
    ):
        assert_error(client.get("/auth/me", headers=bearer(token)), 401, "invalid_token")
        assert_error(client.get("/admin/rq/", headers=bearer(token)), 401, "invalid_token")


def test_an_hs512_token_with_the_right_key_is_401(client, app, buyer):
    """Only HS256 is accepted, even when the signature is good."""
    token = signed(app, algorithm="HS512", sub=str(buyer.id))
    assert_error(client.get("/auth/me", headers=bearer(token)), 401, "invalid_token")


def test_an_expired_token_is_401(client, app, buyer):
    past = datetime.now(UTC) - timedelta(hours=1)
    token = signed(
        app,
        sub=str(buyer.id),
        iat=past - timedelta(minutes=15),
        nbf=past - timedelta(minutes=15),
        exp=past,
    )
    assert_error(client.get("/auth/me", headers=bearer(token)), 401, "token_expired")
    assert_error(client.get("/orders", headers=bearer(token)), 401, "token_expired")
    # the same claims with a live expiry work: only the expiry was refused
    live = signed(app, sub=str(buyer.id))
    assert client.get("/auth/me", headers=bearer(live)).status_code == 200


def test_an_expired_refresh_token_is_401(client, app, buyer):
    past = datetime.now(UTC) - timedelta(minutes=1)
    token = signed(
        app, sub=str(buyer.id), type="refresh", iat=past - timedelta(days=1), nbf=past, exp=past
    )
    assert_error(client.post("/auth/refresh", headers=bearer(token)), 401, "token_expired")


def test_a_token_for_a_user_that_does_not_exist_is_401(client, app):
    token = signed(app, sub="2147483000")
    assert_error(client.get("/auth/me", headers=bearer(token)), 401)
    refresh = signed(app, sub="2147483000", type="refresh")
    assert_error(client.post("/auth/refresh", headers=bearer(refresh)), 401)


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer",
        "Bearer ",
        "Bearer not-a-token",
        "Bearer a.b.c",
        "Bearer a.b",
        "Bearer one two",
        "Basic dXNlcjpwYXNz",
        "bearer",
        "Token abc.def.ghi",
        "",
    ],
)
def test_a_malformed_authorization_header_is_401(client, authorization):
    response = client.get("/auth/me", headers={"Authorization": authorization})
    assert_error(response, 401)


def test_a_missing_authorization_header_is_401(client, buyer):
    for method, path in [
        ("get", "/auth/me"),
        ("get", "/orders"),
        ("post", "/auth/logout"),
        ("post", "/admin/reconcile"),
        ("get", "/admin/products/1/inventory"),
    ]:
        assert_error(getattr(client, method)(path), 401, "unauthorized")


# --- admin-only routes ---------------------------------------------------------------------------


def test_inventory_figures_are_for_admins_only(client, admin, buyer):
    product = create_product(client, admin, stock=4)
    url = f"/admin/products/{product['id']}/inventory"
    assert_error(client.get(url), 401, "unauthorized")
    assert_error(client.get(url, headers=buyer.headers), 403, "forbidden")
    figures = client.get(url, headers=admin.headers)
    assert figures.status_code == 200 and figures.get_json()["available"] == 4
    assert_error(
        client.get("/admin/products/424242424/inventory", headers=admin.headers), 404, "not_found"
    )
    assert_error(
        client.get("/admin/products/99999999999/inventory", headers=admin.headers),
        404,
        "not_found",
    )


def test_reconcile_is_for_admins_only(client, buyer):
    assert_error(client.post("/admin/reconcile", headers=buyer.headers), 403, "forbidden")


@pytest.mark.parametrize("path", ["/admin/rq/", "/admin/rq/0/data/queues.json"])
def test_rq_dashboard_is_for_admins_only(client, admin, buyer, path):
    assert_error(client.get(path), 401, "unauthorized")
    assert_error(client.get(path, headers=buyer.headers), 403, "forbidden")
    assert client.get(path, headers=admin.headers).status_code == 200


def test_a_buyers_refused_admin_request_changes_nothing(client, admin, buyer):
    product = create_product(client, admin, stock=4, name="original")
    response = client.patch(
        f"/products/{product['id']}",
        json={"name": "hijacked", "add_stock": 1000},
        headers=buyer.headers,
    )
    assert_error(response, 403, "forbidden")
    after = client.get(f"/products/{product['id']}").get_json()
    assert (after["name"], after["available"], after["initial_stock"]) == ("original", 4, 4)
