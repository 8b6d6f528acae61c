"""Secret values stay out of ``repr`` (a log line or a traceback's locals would show them)."""

from __future__ import annotations

import base64

from compute_ctl.operator import secretrefs

VALUE = "s3cr3t-never-shown"


def test_secret_repr_hides_its_data() -> None:
    encoded = base64.b64encode(VALUE.encode()).decode()
    secret = secretrefs.Secret(name="creds", uid="u", resource_version="1", data={"app": encoded})
    assert encoded not in repr(secret)
    assert VALUE not in repr(secret)
