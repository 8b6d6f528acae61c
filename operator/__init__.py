"""The kopf operator sidecar: an adapter from a ``ComputeSpec`` resource to compute_ctl.

It watches its own resource, pushes the spec to compute_ctl over the loopback internal
HTTP API as any client would, and writes what compute_ctl reports back to the
resource's status. It imports ``compute_ctl.compute`` only for the wire models; it
never reaches into the compute's process. kopf runs in this process alone.
"""
