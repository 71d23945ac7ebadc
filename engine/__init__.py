"""Conveyor's pure core: definitions, state machines, planning, expressions and use cases.

Nothing in this package performs I/O except through the ports in :mod:`engine.ports`;
adapters live in :mod:`engine.adapters` and are wired by :mod:`engine.bootstrap`.
"""
