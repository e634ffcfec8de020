"""Paging: notifiers, routing, grouping, rate limits and a durable outbox in the store."""
