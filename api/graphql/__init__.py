"""GraphQL at ``/graphql`` (Strawberry): queries, mutations, and progress subscriptions."""
