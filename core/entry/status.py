"""An entry ticket's states: valid until the gate admits it (used) or its order is refunded or
cancelled (void)."""

VALID, USED, VOID = "valid", "used", "void"
