"""Fixtures of the one-node cluster tier: one real cluster per session, shared by every test.

The parts are built (or found in the caches under ~/.cache/compute-ctl) right after
collection, outside every test's timeout. The cluster is etcd + kube-apiserver
(``tests.apiserver.controlplane``) plus ``node.Node``; its teardown is checked: a test at
session end fails if a process, cgroup, mount, directory or iptables chain is left.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apiserver import controlplane
from tests.cluster import cluster as cluster_
from tests.cluster import compute as compute_
from tests.cluster import node as node_
from tests.cluster import toolchain

log = logging.getLogger(__name__)


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(item.get_closest_marker("cluster") for item in session.items):
        try:
            toolchain.tools()  # builds outside any test's timeout; cached afterwards
        except Exception as e:
            log.warning("one-node cluster tier unavailable: %s", e)


@pytest.fixture(scope="session")
def tools() -> toolchain.Tools:
    try:
        return toolchain.tools()
    except toolchain.Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def cluster(tools: toolchain.Tools) -> Iterator[cluster_.Cluster]:
    chains = node_.iptables_chains()
    plane = controlplane.ControlPlane.start(tools.apiserver)
    node = None
    try:
        node = node_.Node.start(plane, tools, [tools.pause_archive, tools.image_archive])
        running = cluster_.Cluster(plane=plane, node=node, tools=tools)
        running.wait_node_ready()
        running.apply_crd()
        yield running
    finally:
        if node is not None:
            node.stop()
        plane.stop()
    left = node.leftovers() if node is not None else []
    left += [f"iptables chain {c}" for c in sorted(node_.iptables_chains() - chains)]
    assert not left, f"the cluster's teardown left {left}"


@pytest.fixture
def kube(cluster: cluster_.Cluster, tmp_path: Path) -> Iterator[cluster_.Namespace]:
    """A fresh namespace for one test; deleted (and waited for) at the end."""
    with cluster.namespace(tmp_path) as ns:
        yield ns


@pytest.fixture(scope="session")
def shared(
    cluster: cluster_.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[compute_.Compute]:
    """One compute installed with the chart for the whole session (the tier stays lean).
    Tests that use it must leave it Ready with role and database ``app``."""
    with cluster.namespace(tmp_path_factory.mktemp("shared")) as ns:
        yield compute_.installed(ns, "shared")
