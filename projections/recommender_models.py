"""`recommender_models`: every trained model version and which one serves.

A version is 'trained' until activated, 'active' while it serves, and 'retired' once
another replaced it (it can be activated again: that is a roll-back). Built from the
registry's events alone, so a rebuild reproduces it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, update

from domain.recommender import RecommenderRegistry
from projections.commerce_tables import utc
from projections.engine import Handler, ReadModel
from projections.recommender_tables import recommender_models


class RecommenderModelsProjection(ReadModel):
    name = "recommender_models"
    tables = (recommender_models,)

    def handlers(self) -> dict[type, Handler]:
        return {
            RecommenderRegistry.ModelTrained: self.on_trained,
            RecommenderRegistry.ModelActivated: self.on_activated,
        }

    def on_trained(self, conn: Connection, event: Any, position: int) -> None:
        conn.execute(insert(recommender_models).values(
            version=event.version, state="trained", checksum=event.checksum,
            trained_at=utc(event.timestamp), trained_by=event.meta["actor_id"],
            reason=event.meta.get("reason"), data_position=event.data_position,
            interactions=event.interactions, members=event.members, products=event.products,
            training_seconds=event.training_seconds, params=event.params,
            metrics=event.metrics, activated_at=None, activated_by=None, position=position))

    def on_activated(self, conn: Connection, event: Any, position: int) -> None:
        if event.previous is not None:
            conn.execute(update(recommender_models)
                         .where(recommender_models.c.version == event.previous)
                         .values(state="retired", position=position))
        conn.execute(update(recommender_models)
                     .where(recommender_models.c.version == event.version)
                     .values(state="active", activated_at=utc(event.timestamp),
                             activated_by=event.meta["actor_id"], position=position))
