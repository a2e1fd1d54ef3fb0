"""Importers: start a plinth environment from another tool's description of the same hosts.

Each importer is pure (it reads files and builds data, no click, no hosts contacted); the
``plinth import ...`` commands in :mod:`plinth.cli.imports` write and report its result.
"""
