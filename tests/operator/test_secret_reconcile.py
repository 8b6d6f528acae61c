"""The reconciler with Secret references, against in-memory stand-ins (fast tier).

compute_ctl and the Secret reader are fakes here (the real ones meet on the real-API
tier, tests/apiserver/test_secrets.py): what is pushed, when nothing is, and when the
periodic check reconciles because a Secret changed.
"""

from __future__ import annotations

import base64
from typing import Any

from compute_ctl.compute import api_models
from compute_ctl.compute import spec as spec_mod
from compute_ctl.operator import reconcile, secretrefs

S = api_models.ComputeStatus


class FakeCompute:
    """compute_ctl as the reconciler sees it: takes any spec and runs it at once."""

    base_url = "http://compute"

    def __init__(self) -> None:
        self.pushed: list[spec_mod.ComputeSpec] = []

    async def status(self) -> api_models.ComputeStatusResponse:
        current = spec_mod.spec_hash(self.pushed[-1]) if self.pushed else ""
        return api_models.ComputeStatusResponse(
            status=S.RUNNING if self.pushed else S.EMPTY,
            desired_spec_hash=current,
            applied_spec_hash=current,
            applied_generation=len(self.pushed),
            desired_generation=len(self.pushed),
        )

    async def configure(
        self, spec: spec_mod.ComputeSpec, *, if_match: str | None
    ) -> api_models.ComputeStatusResponse:
        self.pushed.append(spec)
        return await self.status()  # /configure answers with the status document

    async def timings(self) -> dict[str, int]:
        return {}


class FakeSecrets:
    def __init__(self) -> None:
        self.secrets: dict[str, secretrefs.Secret] = {}
        self.errors: dict[str, secretrefs.SecretUnavailable] = {}
        self.reads = 0

    def put(self, name: str, version: str, **data: str) -> None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.secrets[name] = secretrefs.Secret(name, "uid-1", version, encoded)

    async def read(self, name: str) -> secretrefs.Secret:
        self.reads += 1
        if name in self.errors:
            raise self.errors[name]
        if name not in self.secrets:
            raise secretrefs.SecretUnavailable(f"Secret {name!r} not found", not_found=True)
        return self.secrets[name]


BODY: dict[str, Any] = {
    "metadata": {"name": "c", "namespace": "ns", "generation": 1},
    "spec": {
        "computeSpec": {
            "format_version": 1.0,
            "suspend_timeout_seconds": -1,
            "cluster": {"roles": [{"name": "app"}], "databases": []},
        },
        "credentials": {
            "roles": [{"name": "app", "passwordFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}}]
        },
    },
}


def _reconciler(
    compute: FakeCompute, secrets: FakeSecrets, *, interval: float = 0.0
) -> reconcile.Reconciler:
    client: Any = compute
    return reconcile.Reconciler(client, secrets=secrets, secret_interval=interval)


async def test_a_missing_secret_pushes_nothing_and_says_why() -> None:
    compute, secrets = FakeCompute(), FakeSecrets()
    outcome = await _reconciler(compute, secrets).reconcile(
        BODY, uid="u", trigger=reconcile.Trigger.CHANGE
    )
    assert outcome is not None
    assert isinstance(outcome.error, reconcile.GiveUp)
    assert outcome.error.problem.reason == "SecretMissing"
    assert compute.pushed == []
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "SecretMissing")]


async def test_a_forbidden_secret_gives_up_and_an_unreachable_api_retries() -> None:
    compute, secrets = FakeCompute(), FakeSecrets()
    reconciler = _reconciler(compute, secrets)
    secrets.errors["s"] = secretrefs.SecretUnavailable("Secret 's': forbidden", forbidden=True)
    outcome = await reconciler.reconcile(BODY, uid="u", trigger=reconcile.Trigger.CHANGE)
    assert outcome is not None
    assert isinstance(outcome.error, reconcile.GiveUp)
    assert outcome.error.problem.reason == "SecretUnreadable"
    secrets.errors["s"] = secretrefs.SecretUnavailable("Secret 's': unreachable")
    outcome = await reconciler.reconcile(BODY, uid="u", trigger=reconcile.Trigger.RESYNC)
    assert outcome is not None
    assert isinstance(outcome.error, reconcile.RetryLater)
    assert compute.pushed == []


async def test_a_changed_secret_makes_the_check_reconcile_and_push() -> None:
    compute, secrets = FakeCompute(), FakeSecrets()
    secrets.put("s", "1", pw="first")
    reconciler = _reconciler(compute, secrets)
    outcome = await reconciler.reconcile(BODY, uid="u", trigger=reconcile.Trigger.CHANGE)
    assert outcome is not None
    assert outcome.error is None
    first = compute.pushed[-1].cluster.roles[0].encrypted_password
    assert first is not None
    assert first.startswith("SCRAM-SHA-256$")
    assert "first" not in first

    assert not await reconciler.due(uid="u", resync_interval=3600)  # nothing changed
    secrets.put("s", "2", pw="second")
    assert await reconciler.due(uid="u", resync_interval=3600)
    outcome = await reconciler.reconcile(BODY, uid="u", trigger=reconcile.Trigger.RESYNC)
    assert outcome is not None
    assert outcome.error is None
    assert len(compute.pushed) == 2
    assert compute.pushed[-1].cluster.roles[0].encrypted_password != first
    assert not await reconciler.due(uid="u", resync_interval=3600)


async def test_a_secret_that_appears_is_noticed() -> None:
    compute, secrets = FakeCompute(), FakeSecrets()
    reconciler = _reconciler(compute, secrets)
    await reconciler.reconcile(BODY, uid="u", trigger=reconcile.Trigger.CHANGE)
    assert not await reconciler.due(uid="u", resync_interval=3600)
    secrets.put("s", "1", pw="late")
    assert await reconciler.due(uid="u", resync_interval=3600)


async def test_secrets_are_read_again_only_once_per_interval() -> None:
    compute, secrets = FakeCompute(), FakeSecrets()
    secrets.put("s", "1", pw="pw")
    reconciler = _reconciler(compute, secrets, interval=3600)
    await reconciler.reconcile(BODY, uid="u", trigger=reconcile.Trigger.CHANGE)
    reads = secrets.reads
    secrets.put("s", "2", pw="other")
    assert not await reconciler.due(uid="u", resync_interval=3600)
    assert secrets.reads == reads
