"""Adapters: implementations of the ports in :mod:`engine.ports` (storage, messaging, AI, clock)."""
