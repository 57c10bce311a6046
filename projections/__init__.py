"""Read models built from the event store, exactly once, in the store's global order.

Projections never record events: they only turn events into rows.
"""
