"""Patron's delivery layer: GraphQL schema, HTTP transport, command services and CLI."""
