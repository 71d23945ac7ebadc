"""Use cases over the Store port: each runs inside one transaction and returns effects."""
