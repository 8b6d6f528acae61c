"""Remote extensions (Neon's ``extension_server.rs``): archives of extension files that
compute_ctl downloads from ``--remote-ext-base-url`` and unpacks into PostgreSQL's
directories, on request of the internal ``/extension_server/{filename}`` route or, at
start, for the libraries named in ``shared_preload_libraries``.

- ``names``: the ``remote_extensions`` spec, name resolution and the download layout
  (pure; admission validates the spec with it);
- ``unpack``: safe extraction of one ``<ext>.tar.zst`` into the ``share/extension`` and
  ``lib`` directories (blocking; runs in a thread);
- ``server``: the downloads (single-flight per archive), the request metric, the control
  files and the start-time preload with its ``/metrics.json`` timings.

See docs/remote-extensions.md for where this differs from Neon.
"""
