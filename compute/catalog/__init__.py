"""Catalog reconciliation: roles, databases and deltas, planned then applied.

Layers, from pure to I/O (planners never import ``db``, ``observe`` or ``execute``)::

    desired.py    spec -> normalised desired state, validated (raises ConfigError);
                  part of ``compute.admission``, which runs it before anything is touched
    model.py      the observed catalog as frozen dataclasses
    plan.py       Phase, Operation, Plan (the dry-run rendering, secrets redacted)
    roles.py, databases.py, perdb.py, extensions.py, system.py, subscriptions.py
                  pure planners, one concern each: (desired, observed) -> operations
    health_check.py  the public.health_check statements (shared with /check_writability)
    planner.py    runs the planners in Neon's phase order over a simulated catalog
    drift.py      observed vs desired, one entry per object (pure)
    db.py         the one connection policy (defeats hostile per-database settings)
    observe.py    reads the catalog into ``model.Catalog``
    execute.py    runs a plan phase by phase; the only writer
    apply.py      the public entry points: apply_desired and plan_desired (an admitted
                  desired state, the node's path), apply_spec, plan_spec, drift_report
    settings.py   which settings wait for a restart

The node's configurator is the only caller that changes the catalog (through
``apply.apply_spec``); settings are written by the node, never here.
"""
