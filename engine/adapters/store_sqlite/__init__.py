"""SQLite store: the embedded default backend.

One database file is shared by every worker process and thread on a machine. WAL mode lets
readers run beside the single writer, and every write transaction starts with
``BEGIN IMMEDIATE``: it takes the write lock before its first read, so read-modify-write
cycles are serializable across threads and processes without optimistic retries.

Each record is one JSON document (``doc``) plus copies of the scalar columns that queries
filter or sort on; both are written by one function per table so they cannot drift apart.
Every primary key starts with the tenant. Execution and step fields whose JSON is larger
than ``inline_payload_bytes`` live out of line in ``payloads`` (claim-check, as in the
Firestore adapter), which keeps the hot rows that the reconciler scans small.

The package, by responsibility:

* :mod:`.schema`: the tables and indexes, and the statements shared by the store and its transactions;
* :mod:`.connection`: one connection per thread, transactions with retries, error translation;
* :mod:`.codec`: records <-> rows (documents, out-of-line payloads, deferred inputs), page cursors;
* :mod:`.transaction`: :class:`SqliteTransaction`, the :class:`~engine.ports.Transaction` port;
* :mod:`.store`: :class:`SqliteStore`, the :class:`~engine.ports.Store` port;
* :mod:`.search`: execution search (the labels side table, filtered listings, counts per status);
* :mod:`.purge`: deleting expired executions (retention) and the scan that finds them.
"""

from engine.adapters.store_sqlite.store import SqliteStore
from engine.adapters.store_sqlite.transaction import SqliteTransaction

__all__ = ["SqliteStore", "SqliteTransaction"]
