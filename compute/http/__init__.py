"""compute_ctl's HTTP API: an external server (JWT) and an internal one (loopback, no auth).

``server.serving(node)`` runs both for as long as its context is open. Routes depend on
the ``interface.Node`` protocol, not on the concrete node, and are thin adapters: they
validate input (``compute.api_models``, the wire contract), hand it to the node or to a
catalog request (``catalog.ondemand``, ``catalog.schema_dump``) and render the outcome;
``translate`` is the one place where errors become Neon's status codes. ``openapi.json``
documents every route; a test keeps it true. Nothing here writes the spec's catalog:
that is the configurator's job.
"""
