"""The compute_ctl process: from a compute spec to a supervised, configured PostgreSQL.

Owns the wire contract (``spec``), the one state record (``state``), the postgres
process and PGDATA, the catalog apply, the HTTP API and the vm-monitor bridge.
It knows nothing of Kubernetes: it never imports kopf, kubernetes or the
``operator`` package.
"""
