"""compute_ctl's HTTP API: an external server (JWT) and an internal one (loopback, no auth).

``server.serving(node)`` runs both for as long as its context is open. Routes depend on
the ``interface.Node`` protocol, not on the concrete node, and are thin adapters: they
validate input, hand it to the node (or run one statement through ``pgconn``) and
translate the outcome into Neon's status codes and JSON shapes. ``openapi.json``
documents every route; a test keeps it true. Nothing here writes the spec's catalog:
that is the configurator's job.
"""
