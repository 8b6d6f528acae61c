"""Neon's database migrations: numbered SQL files run once per cluster, at Primary start.

Owns the migration files (``NNNN_name.sql`` here, one per migration, Neon's numbering) and
the runner (``runner``). Called only by the node, after the catalog apply of a Primary
start; never on reconfigure. It must not touch ``ComputeState``: the node records the
outcome.
"""
