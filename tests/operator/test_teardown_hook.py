"""The chart's pre-delete hook (``helm uninstall`` deletes the ComputeSpec first) and its CLI.

The hook's behaviour on real pods is ``tests/cluster/test_hardening.py``'s; here its
rendering: least privilege, the same resource name as the operator's, and a pod no Service
of the compute selects.
"""

from __future__ import annotations

from typing import Any

import pytest

from compute_ctl.operator import resource, teardown
from tests.operator.test_manifests import (
    _by_kind,
    _one,
    _template,
    is_hook,
    render_chart,
    resource_name,
    validate_all,
)


def _hooks(*flags: str) -> list[dict[str, Any]]:
    return [d for d in render_chart(*flags) if is_hook(d)]


def test_the_hook_deletes_only_the_operators_resource_before_the_release() -> None:
    flags = ("--set=computeId=compute-7", "--set=hostNetwork=true")
    hooks = _hooks(*flags)
    validate_all(hooks)
    assert {d["kind"] for d in hooks} == {"ServiceAccount", "Role", "RoleBinding", "Job"}
    for doc in hooks:
        annotations = doc["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-delete"
        assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]
    weights = {d["kind"]: int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) for d in hooks}
    assert weights["Job"] > max(w for k, w in weights.items() if k != "Job")  # RBAC first

    release = _template(*flags)
    name = resource_name(release)
    assert _one(hooks, "Role")["rules"] == [
        {
            "apiGroups": [resource.GROUP],
            "resources": [resource.PLURAL],
            "resourceNames": [name],
            "verbs": ["get", "delete"],
        }
    ]
    account = _one(hooks, "ServiceAccount")["metadata"]["name"]
    assert [s["name"] for s in _one(hooks, "RoleBinding")["subjects"]] == [account]
    pod = _one(hooks, "Job")["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == account
    assert pod["spec"]["hostNetwork"] is True  # it reaches the API server as the operator does
    (container,) = pod["spec"]["containers"]
    assert container["command"][-1] == "compute_ctl.operator.teardown"
    env = {e["name"]: e for e in container["env"]}
    assert env["COMPUTE_SPEC_NAME"]["value"] == name
    # No Service of the compute selects the hook's pod.
    for service in _by_kind(release, "Service"):
        assert not service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()


def test_the_hook_can_be_turned_off() -> None:
    assert _hooks("--set=operator.teardownHook.enabled=false") == []
    assert _hooks("--set=operator.enabled=false") == []


def test_the_cli_outside_a_pod_says_why_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert teardown.main(["--name", "c1", "-n", "ns1"], env={}) == 1
    assert "KUBERNETES_SERVICE_HOST" in capsys.readouterr().err
    assert teardown.main([], env={}) == 1
    assert "--name" in capsys.readouterr().err


class _Replies(teardown._Api):
    """The API server's answers in order; the calls made, recorded."""

    def __init__(self, *answers: int) -> None:
        super().__init__(server="https://127.0.0.1:1", token="t", ca_file=None)
        self.answers = list(answers)
        self.calls: list[str] = []

    def call(self, method: str, path: str) -> int:
        self.calls.append(method)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_it_waits_until_the_resource_is_gone() -> None:
    api = _Replies(200, 200, 200, 404)
    said: list[str] = []
    teardown.run(api=api, name="c1", namespace="ns1", timeout=30, say=said.append, poll=0.01)
    assert api.calls == ["DELETE", "GET", "GET", "GET"]
    assert "gone" in said[-1]


def test_a_resource_never_there_is_nothing_to_do() -> None:
    api = _Replies(404)
    assert teardown.run(api=api, name="c1", namespace="ns1", timeout=30, say=print) == 0.0
    assert api.calls == ["DELETE"]


def test_a_finalizer_never_released_is_an_error_naming_the_way_out() -> None:
    api = _Replies(200)
    with pytest.raises(teardown.TeardownError, match="finalizer"):
        teardown.run(api=api, name="c1", namespace="ns1", timeout=0.05, say=print, poll=0.01)
