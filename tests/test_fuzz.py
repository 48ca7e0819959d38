"""Property-based fuzzing with schemathesis against /openapi.json, in process (WSGI).

Every operation of the document gets generated requests, valid and invalid; none may answer a
5xx, and every answer must be a documented status with a body and headers matching the document.
Admin operations run as an admin, the others as a buyer (the refresh route with a refresh token,
logout with a token of its own so the buyer's stays valid).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from flask_jwt_extended import create_access_token, create_refresh_token
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers import Account, create_product, make_user, run_workers
from web.openapi import openapi_document

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES = 25

# The document the app serves (test_openapi_is_served checks they are the same); the requests
# go to the app in process (`app=` at call time). schemathesis' lazy `from_fixture` loader does
# not work with pytest 9, hence a schema built at import.
schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module", autouse=True)
def _on_sale_then_settled(app, admin, settings):  # type: ignore[no-untyped-def]
    """A product on sale, so purchases and the admin routes meet a real one now and then; after
    the run, the holds and jobs the fuzzer left are settled so later tests start clean."""
    create_product(app.test_client(), admin, stock=1000, max_per_user=0)
    yield
    run_workers(settings)


def test_openapi_is_served(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.get_json() == openapi_document()


def _token(app: Any, account: Account, role: str, *, refresh: bool = False) -> str:
    with app.app_context():
        make = create_refresh_token if refresh else create_access_token
        return make(identity=str(account.id), additional_claims={"role": role})


def _auth_for(case: Any, app: Any, admin: Account, buyer: Account) -> dict[str, str]:
    operation = case.operation
    if "admin" in (operation.definition.raw.get("tags") or []):
        return admin.headers
    if operation.path == "/auth/refresh":
        return {"Authorization": f"Bearer {_token(app, buyer, 'buyer', refresh=True)}"}
    if operation.path == "/auth/logout":
        return {"Authorization": f"Bearer {_token(app, buyer, 'buyer')}"}
    return buyer.headers


@pytest.fixture(scope="module")
def fuzz_buyer(app):  # type: ignore[no-untyped-def]
    return make_user(app)


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_5xx_and_every_answer_is_documented(case, app, admin, fuzz_buyer):  # type: ignore[no-untyped-def]
    headers = _auth_for(case, app, admin, fuzz_buyer)
    case.call_and_validate(headers=headers, checks=CHECKS, app=app)
