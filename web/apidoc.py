"""How a route appears in the OpenAPI document (GET /openapi.json, web/openapi.py): spectree's
configuration and `documented`, the decorator naming the models a route reads (web/schemas.py)
and answers (web/answers.py).

The routes validate with those same models themselves (`web.common.parse_body` and friends keep
the API's own error answers) and answer their dumps (`web.answers.answer`), so spectree only
documents: its plugin below calls a documented view as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel
from spectree import Response as Answers
from spectree import SecurityScheme, SecuritySchemeData, SpecTree
from spectree.plugins.flask_plugin import FlaskPlugin

from web.answers import Error


class DocumentOnly(FlaskPlugin):
    """spectree's Flask plugin without its per-request work (validating the request, then
    unpacking and rebuilding the answer: ~10 us a request, bench/answer_cost.py)."""

    def validate(  # spectree's signature: the models, hooks and flags, then the view's arguments
        self,
        func: Callable[..., Any],
        query: Any,
        json: Any,
        form: Any,
        headers: Any,
        cookies: Any,
        resp: Any,
        before: Any,
        after: Any,
        validation_error_status: int,
        skip_validation: bool,
        force_resp_serialize: bool,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        return func(*args, **kwargs)


api = SpecTree(
    "flask",
    backend=DocumentOnly,
    mode="strict",  # only the decorated routes: the pages and rq-dashboard are left out
    title="Flash-sale purchase API",
    version="1.0.0",
    description="Errors are always JSON {error, message}. See README.md.",
    openapi_version="3.1.0",
    validation_error_status=400,
    validation_error_model=Error,
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda _parent, child: child,
    security_schemes=[
        SecurityScheme(
            name="bearerAuth",
            data=SecuritySchemeData(type="http", scheme="bearer", bearer_format="JWT"),
        )
    ],
    annotations=False,  # the views read no typed arguments: no per-request type-hint lookup
)

BODY_ERRORS = (400, 413, 415)  # not JSON, refused by its model, too large
BEARER_ERRORS = (401,)
ADMIN_ERRORS = (401, 403)


def documented(
    tag: str,
    answers: dict[int, type[BaseModel]],
    errors: Iterable[int] = (),
    *,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    headers: type[BaseModel] | None = None,
    bearer: bool = False,
    empty: Iterable[int] = (),
    body_optional: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The route in the OpenAPI document: its summary is the view's docstring; `empty` lists
    answers without a body (304); `body_optional`: the route also takes no body at all."""
    codes = {f"HTTP_{code}": model for code, model in answers.items()}
    codes |= {f"HTTP_{code}": Error for code in errors}
    validate = api.validate(
        json=body,
        query=query,
        headers=headers,
        resp=Answers(*(f"HTTP_{code}" for code in empty), **codes),
        tags=[tag],
        security={"bearerAuth": []} if bearer else None,
    )

    def document(view: Callable[..., Any]) -> Callable[..., Any]:
        documented_view = validate(view)
        documented_view.body_optional = body_optional  # type: ignore[attr-defined]
        return documented_view

    return document
