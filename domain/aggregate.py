"""The base of Patron's aggregates: every event says who did it, how and why.

Auditors read an event's `meta` (actor, role, channel, correlation, causation, request,
reason) for every change, so the field and the way it is filled live here once rather than
in each event class and each aggregate's helper. Events may also carry the caller's
business time (`now`), so a test or the demo can move the clock.

Two technical aggregates stay on the library's plain `Aggregate`: `EmailReservation` (a
uniqueness lock no person acts on) and `RecommenderRegistry`, whose `Opened` event was
recorded without metadata and must keep replaying as stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from domain.metadata import EventMetadata


class RecordedAggregate(Aggregate):
    """An aggregate whose events all carry the request's metadata as `meta`.

    Creation events are declared on `Aggregate.Created` and still get `meta`: the library
    redefines every event class nested in an aggregate as a subclass of that aggregate's
    `Event`, which derives from this one.
    """

    class Event(Aggregate.Event):
        meta: dict[str, Any]

    def _trigger(
        self,
        event_class: type[Aggregate.Event],
        now: datetime | None,
        meta: EventMetadata,
        **kwargs: Any,
    ) -> None:
        """Record `event_class` with the request's metadata, stamped with business time
        `now` (None: the library's own clock)."""
        if now is not None:
            kwargs["timestamp"] = now
        self.trigger_event(event_class, meta=meta.as_dict(), **kwargs)
