"""compute_ctl: a Python compute manager for PostgreSQL, wire-compatible with Neon's.

Two layers live under this root, as the design lays them out at the top of the
repository: ``compute`` (the compute_ctl process: spec, state, postgres, catalog,
HTTP) and ``operator`` (the kopf sidecar). ``compute`` never imports ``operator``,
kopf or kubernetes.

The folders are symlinks to the top-level ``compute/`` and ``operator/`` because a
top-level package named ``operator`` would shadow the standard library's module.
"""

__version__ = "0.1.0"
