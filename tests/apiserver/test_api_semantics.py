"""What kmock does not emulate, checked against the CRD on a real server.

The status subresource splits spec from status, finalizers hold deletion, resourceVersion
guards writes, and field selectors filter lists and watches: the operator relies on each.
"""

from __future__ import annotations

import threading
from typing import Any

import kubernetes
import pytest

from tests.apiserver import kube
from tests.apiserver import resources as resources_

pytestmark = pytest.mark.apiserver


def test_status_subresource_drops_spec_changes(resources: resources_.Resources) -> None:
    created = resources.create("c1")
    patched = resources.patch_status(
        "c1",
        {
            "spec": resources.wrap({"suspend_timeout_seconds": 99}),
            "status": {"observedGeneration": 1},
        },
    )
    assert patched["status"] == {"observedGeneration": 1}
    # The spec part was dropped.
    assert resources.compute_spec(patched)["suspend_timeout_seconds"] == -1
    assert patched["metadata"]["generation"] == created["metadata"]["generation"]


def test_main_resource_drops_status_changes(resources: resources_.Resources) -> None:
    resources.create("c1")
    patched = resources.patch("c1", {"status": {"observedGeneration": 7}})
    assert "status" not in patched
    # A spec change bumps generation; the status subresource is where status lives.
    patched = resources.patch_spec("c1", {"suspend_timeout_seconds": 5})
    assert patched["metadata"]["generation"] == 2


def test_finalizer_holds_deletion_until_removed(resources: resources_.Resources) -> None:
    resources.create("c1")
    resources.patch("c1", {"metadata": {"finalizers": ["compute-ctl.test/hold"]}})
    resources.delete("c1")
    held = resources.get("c1")
    assert held["metadata"]["deletionTimestamp"]
    assert held["metadata"]["finalizers"] == ["compute-ctl.test/hold"]
    resources.patch("c1", {"metadata": {"finalizers": None}})
    assert not resources.exists("c1")


def test_stale_resource_version_conflicts(resources: resources_.Resources) -> None:
    stale = resources.create("c1")
    resources.patch_spec("c1", {"suspend_timeout_seconds": 5})
    resources.compute_spec(stale)["suspend_timeout_seconds"] = 6
    with pytest.raises(kubernetes.client.ApiException) as info:
        resources.replace("c1", stale)
    assert info.value.status == 409
    assert resources.compute_spec(resources.get("c1"))["suspend_timeout_seconds"] == 5
    # The json-patch precondition kopf uses for finalizers is refused the same way.
    with pytest.raises(kubernetes.client.ApiException) as info:
        resources.api.patch_namespaced_custom_object(
            resources.group,
            resources.version,
            resources.namespace,
            resources.plural,
            "c1",
            [
                {
                    "op": "test",
                    "path": "/metadata/resourceVersion",
                    "value": stale["metadata"]["resourceVersion"],
                },
                {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]},
            ],
            _content_type="application/json-patch+json",
        )
    assert info.value.status == 422  # kopf reads 422 as "newer changes: retry next cycle"
    assert "finalizers" not in resources.get("c1")["metadata"]


def test_field_selector_filters_list_and_watch(resources: resources_.Resources) -> None:
    resources.create("mine")
    resources.create("other")
    listing = resources.list(field_selector="metadata.name=mine")
    assert [o["metadata"]["name"] for o in listing["items"]] == ["mine"]

    seen: list[tuple[str, str]] = []
    watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
    done = threading.Event()

    def consume() -> None:
        for event in watch.stream(  # type: ignore[no-untyped-call]
            resources.api.list_namespaced_custom_object,
            resources.group,
            resources.version,
            resources.namespace,
            resources.plural,
            field_selector="metadata.name=mine",
            resource_version=listing["metadata"]["resourceVersion"],
            timeout_seconds=30,
        ):
            obj: dict[str, Any] = event["object"]
            seen.append((event["type"], obj["metadata"]["name"]))
            if resources.compute_spec(obj)["suspend_timeout_seconds"] == 2:
                break
        done.set()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    resources.patch_spec("other", {"suspend_timeout_seconds": 1})
    resources.patch_spec("mine", {"suspend_timeout_seconds": 2})
    kube.wait_for(done.is_set, what="the watch to see the patch of 'mine'")
    watch.stop()  # type: ignore[no-untyped-call]
    assert seen == [("MODIFIED", "mine")]
