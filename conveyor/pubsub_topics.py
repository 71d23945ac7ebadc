"""Create Pub/Sub topics that do not exist yet: ``python -m conveyor.pubsub_topics PROJECT TOPIC...``.

For a fresh emulator (docker compose's ``pubsub-init``) or a new project: the bridge creates
its subscriptions, but the topics they attach to must exist first.
"""

from __future__ import annotations

import sys

from google.api_core.exceptions import AlreadyExists
from google.cloud import pubsub_v1


def ensure_topics(project: str, topics: list[str]) -> list[str]:
    """Create the missing topics of ``project``; the names of those created."""
    client = pubsub_v1.PublisherClient()
    created = []
    for topic in topics:
        try:
            client.create_topic(name=client.topic_path(project, topic))
        except AlreadyExists:
            continue
        created.append(topic)
    return created


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m conveyor.pubsub_topics PROJECT TOPIC...", file=sys.stderr)
        return 2
    created = ensure_topics(argv[0], argv[1:])
    print(f"created: {', '.join(created) or 'none (all exist)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
