"""``python -m compute_ctl.operator.teardown``: delete one ComputeSpec and wait until it is gone.

The Helm chart's ``pre-delete`` hook Job runs this, so a plain ``helm uninstall`` works:
Helm deletes a release's objects all at once (the StatefulSet and the operator's RBAC
with the resource), and the operator then loses its pod, token or Role before it can
terminate the compute and release its finalizer; the resource stays ``Terminating``. The
hook runs first, while the release is whole: it deletes the resource and waits until the
operator has terminated the compute (the ``Terminated`` Event records its LSN) and
removed the finalizer. Only then does Helm delete the rest.

It is a one-shot client of the API server, from inside a pod: the Job's own
ServiceAccount token (allowed ``get`` and ``delete`` on that one resource and nothing
else), the cluster CA and ``KUBERNETES_SERVICE_HOST``/``PORT``, as client-go reads them.
Synchronous on purpose (stdlib ``urllib``): a CLI that waits, with no loop to share.
Exit 0 when the resource is gone (or was never there), 1 on a timeout or API error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from compute_ctl.operator import resource

__all__ = ["main", "run"]

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class TeardownError(RuntimeError):
    """The resource could not be deleted, or is still there at the deadline."""


class _Api:
    """The few authenticated calls this needs, on the in-cluster service account."""

    def __init__(self, *, server: str, token: str, ca_file: Path | None) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def call(self, method: str, path: str) -> int:
        """The HTTP status of ``method path``; 404 is an answer, not an error."""
        request = urllib.request.Request(  # noqa: S310 (an https URL built by _server)
            self.server + path,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as reply:  # noqa: S310
                status: int = reply.status
                return status
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return 404
            detail = e.read().decode(errors="replace")[:300]
            with contextlib.suppress(ValueError):
                detail = json.loads(detail).get("message", detail)
            raise TeardownError(f"{method} {path}: HTTP {e.code}: {detail}") from e


def _server(env: Mapping[str, str]) -> str:
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise TeardownError("not in a pod: KUBERNETES_SERVICE_HOST/PORT are not set")
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def run(
    *,
    api: _Api,
    name: str,
    namespace: str,
    timeout: float,
    say: Callable[[str], None] = print,
    poll: float = 1.0,
) -> float:
    """Delete the resource and wait until it is gone; the seconds that took."""
    path = (
        f"/apis/{resource.GROUP}/{resource.VERSION}/namespaces/"
        f"{urllib.parse.quote(namespace)}/{resource.PLURAL}/{urllib.parse.quote(name)}"
    )
    started = time.monotonic()
    if api.call("DELETE", path) == 404:
        say(f"computespec {namespace}/{name} is not there: nothing to do")
        return 0.0
    say(f"computespec {namespace}/{name} deleted: waiting for its operator to terminate it")
    while api.call("GET", path) != 404:
        if time.monotonic() - started > timeout:
            raise TeardownError(
                f"computespec {namespace}/{name} is still there after {timeout:.0f} s: its "
                "operator has not released its finalizer (see `kubectl describe cspec "
                f"{name}`; docs/operator.md says how to remove it by hand)"
            )
        time.sleep(poll)
    elapsed = time.monotonic() - started
    say(f"computespec {namespace}/{name} gone after {elapsed:.1f} s")
    return elapsed


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="python -m compute_ctl.operator.teardown",
        description="Delete one ComputeSpec and wait until its operator has released it.",
    )
    parser.add_argument("--name", default=env.get("COMPUTE_SPEC_NAME"))
    parser.add_argument("--namespace", "-n", default=env.get("POD_NAMESPACE"))
    parser.add_argument("--timeout", type=float, default=240.0)
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        if not args.name or not args.namespace:
            raise TeardownError("--name/COMPUTE_SPEC_NAME and --namespace/POD_NAMESPACE needed")
        ca = SA_DIR / "ca.crt"
        api = _Api(
            server=_server(env),
            token=(SA_DIR / "token").read_text().strip(),
            ca_file=ca if ca.exists() else None,
        )
        run(api=api, name=args.name, namespace=args.namespace, timeout=args.timeout)
    except (TeardownError, OSError) as e:
        sys.stderr.write(f"teardown: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
