"""Google client exceptions translated into :mod:`engine.errors`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import google.auth.exceptions
from google.api_core import exceptions as gexc

from engine.errors import AlreadyExists, Conflict, ConveyorError, StoreUnavailable


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """Turn Google client exceptions into :mod:`engine.errors` (errors of ours pass through)."""
    try:
        yield
    except ConveyorError:
        raise
    except gexc.AlreadyExists as exc:
        raise AlreadyExists(f"already exists: {exc.message}") from exc
    except gexc.Aborted as exc:
        raise StoreUnavailable(f"Firestore transaction aborted by contention: {exc.message}") from exc
    except gexc.Conflict as exc:
        raise Conflict(f"Firestore conflict: {exc.message}") from exc
    except gexc.InvalidArgument as exc:
        raise ConveyorError(f"Firestore rejected the request: {exc.message}") from exc
    except (gexc.GoogleAPIError, google.auth.exceptions.GoogleAuthError) as exc:
        # Unavailable, deadlines, exhausted retries, missing database or index, credentials:
        # none of them says anything about the record asked for; the backend is not usable.
        raise StoreUnavailable(f"Firestore is unavailable: {exc}") from exc
    except ValueError as exc:
        if isinstance(exc.__cause__, gexc.Aborted):  # the transactional retry loop gave up
            raise StoreUnavailable(f"Firestore transaction kept aborting: {exc}") from exc
        raise
