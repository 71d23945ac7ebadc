"""GraphQL object types, one per module."""
