"""The ``ComputeSpec`` custom resource: its coordinates and how its spec is read.

The resource's ``spec`` is ``{"computeSpec": <Neon's ComputeSpec, verbatim>}``, and
optionally ``credentials`` (Secret keys whose values go into the pushed ComputeSpec:
``secretrefs``). The wrapper keeps operator-level fields out of Neon's wire format,
and ``spec.computeSpec`` is exactly the ``spec`` of a ``POST /configure`` body, so the same
admission step validates both (the CRD schema is generated from its pydantic model, see
``crd.py``), and an invalid resource is refused before any call to compute_ctl.

Pure: no I/O, no kopf.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from compute_ctl.compute import admission, errors
from compute_ctl.operator import secretrefs

__all__ = [
    "CATEGORY",
    "FINALIZER",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAME",
    "SINGULAR",
    "SPEC_FIELD",
    "VERSION",
    "InvalidSpec",
    "ResourceView",
]

GROUP = "compute.pgctl.dev"
VERSION = "v1alpha1"
KIND = "ComputeSpec"
PLURAL = "computespecs"
SINGULAR = "computespec"
SHORT_NAME = "cspec"
CATEGORY = "compute"
SPEC_FIELD = "computeSpec"
# The one finalizer: deletion must wait until the compute is terminated (see handlers.py).
FINALIZER = f"{GROUP}/terminate"


class InvalidSpec(ValueError):
    """The resource's spec fails admission; the message names the field or object."""


@dataclasses.dataclass(frozen=True)
class ResourceView:
    """What the reconciler needs from a resource body, detached from kopf's types."""

    namespace: str | None
    name: str
    generation: int | None
    spec: Mapping[str, Any]
    status: Mapping[str, Any]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ResourceView:
        meta = body.get("metadata") or {}
        generation = meta.get("generation")
        return cls(
            namespace=meta.get("namespace"),
            name=str(meta.get("name", "")),
            generation=int(generation) if generation is not None else None,
            spec=body.get("spec") or {},
            status=body.get("status") or {},
        )

    def credentials(self) -> secretrefs.Credentials:
        """``spec.credentials``: the Secret keys the pushed spec takes values from."""
        try:
            return secretrefs.parse(self.spec)
        except secretrefs.InvalidReference as exc:
            raise InvalidSpec(str(exc)) from exc

    def compute_spec(
        self,
        rules: admission.Rules,
        secrets: Mapping[str, secretrefs.Secret] | None = None,
    ) -> admission.Admitted:
        """Admit ``spec.computeSpec``, with the values ``spec.credentials`` references
        taken from ``secrets`` (every one of ``credentials().secret_names()``), with the
        step ``/configure`` runs. ``secretrefs.SecretKeyMissing`` passes through."""
        raw = self.spec.get(SPEC_FIELD)
        if not isinstance(raw, Mapping):
            raise InvalidSpec(f"spec.{SPEC_FIELD}: field required (an object)")
        credentials = self.credentials()
        try:
            raw = secretrefs.resolve(raw, credentials, secrets or {})
        except secretrefs.InvalidReference as exc:
            raise InvalidSpec(str(exc)) from exc
        try:
            return admission.admit_spec(raw, rules=rules, where=f"spec.{SPEC_FIELD}")
        except errors.AdmissionError as exc:
            raise InvalidSpec(str(exc)) from exc
