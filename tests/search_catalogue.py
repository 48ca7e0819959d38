"""About 200 events in English and Korean for the search tests: the ones the queries are about,
written out, and generated fillers whose words none of the queries use."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from core.events.catalog import cancel_event, create_event, publish_event
from core.events.seatmap import SeatMapSpec, replace_seat_map
from core.models import Event


@dataclass(frozen=True)
class Spec:
    key: str
    title: str
    description: str
    category: str
    venue: str
    location: str
    day: int  # days after the catalogue's first day
    prices: tuple[int, ...]  # whole units of USD, one section each
    status: str = "published"


# fmt: off
KNOWN = [
    Spec("beyonce", "Beyoncé: Renaissance World Tour", "The queen of pop, live with a full band.",
         "pop", "Olympic Stadium", "London", 3, (95, 250)),
    Spec("iu", "아이유 콘서트 HER", "아이유의 단독 콘서트 투어, 앵콜 공연 포함.", "kpop",
         "잠실 올림픽주경기장", "서울", 5, (110, 165)),
    Spec("bts", "BTS World Tour: Permission to Dance", "Seven members, one stage.", "kpop",
         "Seoul Olympic Stadium", "Seoul", 8, (120, 220)),
    Spec("jazz_park", "Jazz in the Park", "Smooth jazz under the stars, picnic blankets welcome.",
         "jazz", "Riverside Park", "Chicago", 4, (30, 45)),
    Spec("blue_note", "Blue Note Jazz Nights", "Bebop and swing at the legendary club.", "jazz",
         "Blue Note", "New York", 6, (60, 120)),
    Spec("mahler", "Berlin Philharmonic: Mahler Symphony No. 2",
         "The Resurrection symphony with choir.", "classical", "Philharmonie", "Berlin", 12,
         (40, 180)),
    Spec("hamilton", "Hamilton", "The musical about America's founding father.", "theatre",
         "Richard Rodgers Theatre", "New York", 2, (89, 399)),
    Spec("hamilton_later", "Hamilton", "The musical about America's founding father.", "theatre",
         "Richard Rodgers Theatre", "New York", 3, (89, 399)),
    Spec("nutcracker", "The Nutcracker Ballet", "Tchaikovsky's holiday classic, with orchestra.",
         "dance", "Royal Opera House", "London", 20, (35, 140)),
    Spec("coldplay", "Coldplay: Music of the Spheres", "Stadium show with light-up wristbands.",
         "pop", "Wembley Stadium", "London", 15, (75, 190)),
    Spec("taylor", "Taylor Swift | The Eras Tour", "Every era, three and a half hours.", "pop",
         "SoFi Stadium", "Los Angeles", 25, (150, 450)),
    Spec("lesmis", "뮤지컬 레미제라블", "빅토르 위고 원작의 대작 뮤지컬.", "theatre", "블루스퀘어",
         "서울", 9, (60, 170)),
    Spec("hero", "임영웅 전국투어 콘서트", "트로트 가수 임영웅의 전국 투어.", "trot",
         "고척스카이돔", "서울", 11, (99, 154)),
    Spec("aliwong", "Stand-up Comedy Night with Ali Wong", "An hour of brand-new material.",
         "comedy", "Laugh Factory", "Los Angeles", 7, (45,)),
    Spec("ucl", "Champions League Final", "Europe's club football final.", "sports",
         "Allianz Arena", "Munich", 30, (180, 900)),
    Spec("edc", "Electric Daisy Carnival", "Three nights of electronic dance music.", "electronic",
         "Las Vegas Motor Speedway", "Las Vegas", 40, (199, 399)),
    Spec("metallica", "Metallica M72 World Tour", "Two nights, no repeat songs.", "rock",
         "Stade de France", "Paris", 18, (85, 210)),
    Spec("chopin", "Chopin Piano Recital", "Nocturnes and ballades by candlelight.", "classical",
         "Wigmore Hall", "London", 13, (25, 60)),
    Spec("newjeans", "뉴진스 팬미팅 Bunnies Camp", "뉴진스 멤버들과 함께하는 팬미팅.", "kpop",
         "KSPO DOME", "서울", 16, (88, 132)),
    Spec("sheeran", "Ed Sheeran Mathematics Tour", "Loop pedal, guitar and the whole catalogue.",
         "pop", "Croke Park", "Dublin", 22, (70, 160)),
    Spec("kooza", "Cirque du Soleil: Kooza", "Acrobats, clowns and a wheel of death.", "circus",
         "Royal Albert Hall", "London", 10, (50, 130)),
    Spec("secret", "Secret Beyoncé Warm-up Show", "Not announced yet.", "pop", "Olympic Stadium",
         "London", 2, (95,), status="draft"),
    Spec("brunch", "Jazz Brunch Cancelled", "Called off.", "jazz", "Blue Note", "New York", 6,
         (40,), status="cancelled"),
]
# fmt: on

_ADJECTIVES = ["Midnight", "Golden", "Silver", "Spring", "Autumn", "Summer", "Winter", "Grand"]
_NOUNS = ["Gala", "Festival", "Showcase", "Session", "Revue", "Tribute", "Serenade", "Fiesta"]
_KOREAN_SEASONS = ["봄", "여름", "가을", "겨울"]
_KOREAN_SHOWS = ["축제", "음악회", "페스티벌", "공연"]
_VENUES = [("Harbour Arena", "Sydney"), ("City Hall", "Toronto"), ("세종문화회관", "서울"),
           ("Grand Pavilion", "Madrid")]  # fmt: skip
_CATEGORIES = ["pop", "jazz", "classical", "theatre", "comedy", "sports", "kpop"]
FILLERS = 180


def fillers(count: int = FILLERS, seed: int = 15) -> list[Spec]:
    draw = random.Random(seed)
    specs = []
    for number in range(count):
        if number % 3 == 2:
            title = f"{draw.choice(_KOREAN_SEASONS)} {draw.choice(_KOREAN_SHOWS)} {number}"
            description = "가족과 함께 즐기는 무대."
        else:
            title = f"{draw.choice(_ADJECTIVES)} {draw.choice(_NOUNS)} {number}"
            description = "An evening out with friends and family."
        venue, location = draw.choice(_VENUES)
        low = draw.randrange(10, 200)
        specs.append(
            Spec(
                f"filler{number}",
                title,
                description,
                draw.choice(_CATEGORIES),
                venue,
                location,
                draw.randrange(0, 60),
                (low, low + draw.randrange(0, 150)),
            )
        )
    return specs


def catalogue() -> list[Spec]:
    return KNOWN + fillers()


def seed(session: Session, first_day: datetime) -> dict[str, Event]:
    """The catalogue in the database, as admins make events: created, mapped, published (or
    cancelled, or left as drafts). Committed; key -> event."""
    events = {}
    for spec in catalogue():
        event = create_event(
            session,
            title=spec.title,
            description=spec.description,
            category=spec.category,
            venue=spec.venue,
            location=spec.location,
            starts_at=first_day + timedelta(days=spec.day, hours=20),
            currency="USD",
        )
        sections = [
            {"name": f"S{i}", "price": Decimal(price), "capacity": 100}
            for i, price in enumerate(spec.prices)
        ]
        replace_seat_map(session, event, SeatMapSpec.model_validate({"sections": sections}))
        if spec.status != "draft":
            publish_event(session, event)
        if spec.status == "cancelled":
            cancel_event(event)
        events[spec.key] = event
    session.commit()
    return events
