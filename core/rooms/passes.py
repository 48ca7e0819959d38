"""The passes an admitted buyer buys with. A pass is signed (itsdangerous, with the JWT secret
and a salt of its own) and bound to the buyer, the sale, the room (its epoch: '' for a sale
without one) and the buyer's place; it is checked in-process, and the reserve script lets it
buy once, in its own room only (its id is product:buyer:epoch:position)."""

from __future__ import annotations

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

PASS_SALT = "queue-pass"


class PassRefused(ValueError):
    """No pass the purchase may use: forged, for another buyer or sale, or expired."""


def issue_pass(secret: str, product_id: int, user_id: int, position: int, epoch: str) -> str:
    serializer = URLSafeTimedSerializer(secret, salt=PASS_SALT)
    return serializer.dumps({"p": product_id, "u": user_id, "n": position, "e": epoch})


def read_pass(secret: str, token: str, product_id: int, user_id: int, max_age_s: int) -> str:
    """The pass's id if it lets this buyer buy this product now; raises PassRefused."""
    serializer = URLSafeTimedSerializer(secret, salt=PASS_SALT)
    try:
        claims = serializer.loads(token, max_age=max_age_s)
    except SignatureExpired:
        raise PassRefused("the pass has expired: join the queue again") from None
    except BadSignature:
        raise PassRefused("the pass does not verify") from None
    if not isinstance(claims, dict) or claims.get("p") != product_id:
        raise PassRefused("the pass is for another sale")
    if claims.get("u") != user_id:
        raise PassRefused("the pass is another buyer's")
    return f"{product_id}:{user_id}:{claims.get('e', '')}:{claims.get('n')}"
