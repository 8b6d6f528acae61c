"""Fixtures of the one-node cluster tier: one real cluster per session, shared by every test.

The parts are built (or found in the caches under ~/.cache/compute-ctl) right after
collection, outside every test's timeout. The cluster is etcd + kube-apiserver
(``tests.apiserver.controlplane``) plus ``node.Node``; its teardown is checked: a test at
session end fails if a process, cgroup, mount, directory or iptables chain is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import cluster as cluster_
from tests.cluster import compute as compute_
from tests.cluster import node as node_
from tests.cluster import toolchain
from tests.support import toolchains


def pytest_collection_finish(session: pytest.Session) -> None:
    toolchains.build_after_collection(
        session, marker="cluster", build=toolchain.tools, tier="one-node cluster tier"
    )


@pytest.fixture(scope="session")
def tools() -> toolchain.Tools:
    return toolchains.built_or_skip(toolchain.tools, toolchain.Unavailable)


@pytest.fixture(scope="session")
def cluster(tools: toolchain.Tools) -> Iterator[cluster_.Cluster]:
    chains = node_.iptables_chains()
    with cluster_.started(tools) as running:
        yield running
    left = running.node.leftovers()
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
