"""Waiting rooms in front of a sale: where buyers stand (board.py), and the passes an admitted
buyer buys with (passes.py). The room's settings reach Redis with the sale's terms
(Inventory.update_terms, Inventory.restore)."""

from __future__ import annotations

from core.rooms.board import BOARD_MAX_AGE_S, Board, RoomBoard, RoomPlace
from core.rooms.passes import PASS_SALT, PassRefused, issue_pass, read_pass

__all__ = [
    "BOARD_MAX_AGE_S",
    "PASS_SALT",
    "Board",
    "PassRefused",
    "RoomBoard",
    "RoomPlace",
    "issue_pass",
    "read_pass",
]
