"""Where buyers stand in a sale's waiting room, answered by each web process from its own copy
of the room's board (the serving counter and what is left to buy, read again from Redis once
older than a few hundred ms) and of the places of the buyers it has seen: a buyer's place never
changes while its room lives, so most polls cost no round trip at all. Once the opening's draw
is done, the process reads the drawn places in one call, so the crowd that waited for the
opening learns its places from the copy too.

The copy may lag Redis by `max_age_s`: a buyer is told of its admission that much later, never
earlier (the serving counter only grows). A room Redis lost and rebuilt is a new room (its
epoch differs): the places known of the old one are forgotten."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from core.inventory import Inventory

BOARD_MAX_AGE_S = 0.25
MAX_PLACES = 200_000  # places kept per process (about 200 bytes each); then it starts again
DRAWN_READ_AT_ONCE = 100_000  # the drawn places a process reads in one call, at most
WAITING = 0  # the place of a buyer who came before the opening, until its draw


@dataclass(frozen=True)
class Board:
    """A waiting room's counters, as Redis had them."""

    opens_ms: int  # the sale's start (the opening's draw), Unix ms
    served: int  # places admitted so far (1..served)
    rate: int  # places admitted a second
    available: int
    held: int
    epoch: str
    drawn: bool  # the opening's draw is done: those who came before it have places
    early: int  # buyers waiting for the draw

    @classmethod
    def from_reply(cls, reply: list) -> Board:
        _, opens_ms, served, rate, available, held, epoch, drawn, early = reply[:9]
        return cls(
            int(opens_ms), int(served), int(rate), int(available), int(held), str(epoch),
            drawn == "1", int(early),
        )  # fmt: skip

    def place(self, position: int) -> RoomPlace:
        if position == WAITING:
            return RoomPlace(
                "waiting", None, self.served, self.rate, self.opens_ms, self.early, self.epoch
            )
        if position > self.served and self.available <= 0 and self.held <= 0:
            return RoomPlace("sold_out", position, self.served, self.rate, epoch=self.epoch)
        return RoomPlace("queued", position, self.served, self.rate, epoch=self.epoch)


@dataclass(frozen=True)
class RoomPlace:
    """A buyer in a waiting room: open (no room), not_joined, waiting (before the opening),
    queued (at `position`; admitted once `served` reaches it), sold_out, or unavailable."""

    state: str
    position: int | None = None
    served: int = 0
    rate: int = 0
    opens_ms: int = 0  # waiting: the opening, Unix ms
    crowd: int = 0  # waiting: how many wait for the opening's draw
    epoch: str = ""  # the room's ('' without one): its passes buy in this room only

    @property
    def admitted(self) -> bool:
        return self.state == "queued" and self.position is not None and self.position <= self.served


class RoomBoard:
    """This process's copy of the rooms' boards and of the places of the buyers it has seen."""

    def __init__(self, inventory: Inventory, max_age_s: float = BOARD_MAX_AGE_S) -> None:
        self._inventory = inventory
        self._max_age_s = max_age_s
        self._boards: dict[int, tuple[float, Board]] = {}  # product -> (read at, board)
        self._places: dict[tuple[int, int], tuple[str, int]] = {}  # -> (epoch, place)
        self._drawn_read: dict[int, str] = {}  # product -> the epoch whose draw was read
        self._reading = threading.Lock()
        self._drawing = threading.Lock()

    def join(self, product_id: int, user_id: int) -> RoomPlace:
        """Takes the buyer's place (joining again keeps it): one round trip."""
        return self._ask("room_join", product_id, user_id)

    def status(self, product_id: int, user_id: int) -> RoomPlace:
        """Where the buyer stands: from this process's copy when it knows the buyer's place,
        else one round trip."""
        return self.known_place(product_id, user_id) or self._ask(
            "room_status", product_id, user_id
        )

    def known_place(self, product_id: int, user_id: int) -> RoomPlace | None:
        """Where the buyer stands, from this process's copy alone (the board read again once
        old: one round trip every `max_age_s`); None when Redis must be asked about the buyer."""
        board = self._board(product_id)
        known = self._places.get((product_id, user_id))
        if board is None or known is None or board.epoch != known[0]:
            return None
        if known[1] == WAITING and board.drawn:
            return None  # came before the opening: its place is drawn now
        return board.place(known[1])

    def _board(self, product_id: int) -> Board | None:
        read = self._boards.get(product_id)
        if read is not None and time.monotonic() - read[0] < self._max_age_s:
            return read[1]
        # One thread reads it again; the others answer from the copy meanwhile.
        if read is not None and not self._reading.acquire(blocking=False):
            return read[1]
        if read is None:
            self._reading.acquire()
        try:
            k = self._inventory.keys(product_id)
            others = self._inventory.other_buckets_stock(product_id)
            reply = self._inventory.scripts.room_board(keys=[k.stock, *k.room_keys], args=[others])
            return self._keep(product_id, reply)
        finally:
            self._reading.release()

    def _read_drawn(self, product_id: int, epoch: str) -> None:
        """The places given so far (those drawn at the opening first), in one call, once a
        room's draw is seen (by whichever thread sees it first)."""
        with self._drawing:
            if self._drawn_read.get(product_id) == epoch:
                return
            self._drawn_read[product_id] = epoch
        places = self._inventory.room_places(product_id, DRAWN_READ_AT_ONCE)
        if len(self._places) + len(places) > MAX_PLACES:
            self._places.clear()
        for buyer, position in places:
            self._places[(product_id, buyer)] = (epoch, position)

    def _keep(self, product_id: int, reply: list) -> Board | None:
        """The board a script answered, kept as this process's copy; None without a room."""
        if reply[0] != "board":
            self._boards.pop(product_id, None)
            return None
        board = Board.from_reply(reply)
        kept = self._boards.get(product_id)
        # Two threads' reads may come back in either order: the serving counter never goes back.
        if kept is not None and kept[1].epoch == board.epoch and kept[1].served > board.served:
            return kept[1]
        self._boards[product_id] = (time.monotonic(), board)
        if board.drawn and self._drawn_read.get(product_id) != board.epoch:
            self._read_drawn(product_id, board.epoch)
        return board

    def _ask(self, script: str, product_id: int, user_id: int) -> RoomPlace:
        k = self._inventory.keys(product_id)
        others = self._inventory.other_buckets_stock(product_id)
        reply = getattr(self._inventory.scripts, script)(
            keys=[k.stock, *k.room_keys], args=[user_id, others]
        )
        board = self._keep(product_id, reply)
        if board is None:
            return RoomPlace(reply[0])
        place = reply[9]
        if place == "not_joined":
            return RoomPlace(place, None, board.served, board.rate)
        position = WAITING if place == "waiting" else int(place)
        if len(self._places) >= MAX_PLACES:
            self._places.clear()
        self._places[(product_id, user_id)] = (board.epoch, position)
        return board.place(position)
