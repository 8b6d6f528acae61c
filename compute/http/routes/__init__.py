"""Route handlers of the HTTP API, one concept per module.

``lifecycle`` (status, configure, terminate), ``promote`` (replica to primary),
``metrics`` (Prometheus and timings), ``catalog`` (read-mostly catalog endpoints),
``internal`` (grants, extensions; internal port only), ``extension_server`` (remote
extension downloads; internal port only), ``probes`` (liveness, readiness),
``lfc`` (cache prewarm and offload) and ``failpoints`` (internal, tests only).
Each exposes ``routes``, an ``aiohttp.web.RouteTableDef``; ``app`` decides which port
serves which. Handlers are thin: validate, call the node or one SQL statement, translate.
"""
