"""Patron's domain model: aggregates and their rules, free of I/O, SQL and GraphQL."""
