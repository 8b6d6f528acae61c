"""Cache prewarm and offload: Neon's ``/lfc/prewarm`` and ``/lfc/offload`` (parity topic 11).

The state of a compute's cache is saved to, and read back from, the endpoint storage
(``storage``: Neon's URL layout, Bearer token, ``PUT``/``GET``), zstd-compressed. What
the state *is* depends on the backend, chosen per operation by what the maintenance
database offers (``backends``):

- ``neon``: the ``neon`` extension's functions (``get_local_cache_state``,
  ``prewarm_local_cache``, ``get_prewarm_info``): Neon's Local File Cache;
- ``vanilla`` (beyond Neon): the list of blocks in ``shared_buffers``, read from
  ``pg_buffercache`` and loaded back with ``pg_prewarm``.

``controller.Lfc`` owns the two state machines, single flight, cancellation, the periodic
offload and the metrics; the HTTP routes (``compute.http.routes.lfc``) and the node only
call it. This package never serves HTTP and never changes the compute's status. The only
catalog changes it makes are the two contrib extensions the vanilla backend needs
(``docs/lfc.md``).
"""
