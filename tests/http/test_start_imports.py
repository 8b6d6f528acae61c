"""What compute_ctl's start path loads: JWT verification (joserfc and ``cryptography``, a
large import) only once a JWK is configured, never while a compute without keys starts;
zstandard, which only the cache state's prewarm and offload use, and the remote
extensions' unpacker (tarfile, and the storage package for its pipe), which only a download
uses, never at start (docs/performance.md, "Memory per pod")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.core import helpers

# The modules the CLI imports before the node runs (cli._amain), then an Authorizer's
# first check: without keys, and with one key.
_PROBE = """
import json, sys
WATCHED = (
    "joserfc", "cryptography", "zstandard",
    "compute_ctl.compute.remote_ext.unpack", "compute_ctl.compute.storage",
)
from compute_ctl.compute import cli, node, spec
from compute_ctl.compute.http import auth, server
authorizer = auth.Authorizer(compute_id="c", allow_unauthenticated=True)
authorizer.check(authorization=None, jwks=spec.Jwks(keys=[]))
loaded = {"no_keys": sorted(m for m in WATCHED if m in sys.modules)}
key = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
try:
    authorizer.check(authorization="Bearer x.y.z", jwks=spec.Jwks(keys=[key]))
except Exception:
    pass
loaded["one_key"] = sorted(m for m in WATCHED if m in sys.modules)
print(json.dumps(loaded))
"""


def test_the_start_path_loads_only_what_every_compute_uses() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        cwd=helpers.REPO,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        timeout=60,
        check=True,
    )
    loaded = json.loads(result.stdout)
    assert loaded == {"no_keys": [], "one_key": ["cryptography", "joserfc"]}
