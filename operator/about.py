"""About this package (it has no ``__init__.py`` on purpose).

A top-level folder named ``operator`` that is a regular package shadows the standard
library's ``operator`` whenever the repository root is on ``sys.path`` (``python -m`` run
from the checkout, ``PYTHONPATH``), and Python then fails at start-up. Without an
``__init__.py`` it is only a namespace portion, which the standard module always wins
over; through the ``compute_ctl/operator`` link it is ``compute_ctl.operator``.

The kopf operator sidecar: an adapter from a ``ComputeSpec`` resource to compute_ctl.

It watches its own resource, pushes the spec to compute_ctl over the loopback internal
HTTP API as any client would, and writes what compute_ctl reports back to the
resource's status. It imports ``compute_ctl.compute`` only for the wire models; it
never reaches into the compute's process. kopf runs in this process alone.
"""
