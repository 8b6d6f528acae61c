"""The gateway URL's credentials never reach an error (the route's 500 body, the log).

aiohttp prints the whole URL in some errors (an invalid one, say); the userinfo may be a
user and password or a bare token as the user name. The URL's port is invalid here, so
the download fails in aiohttp before any connection (nothing is contacted).
"""

from __future__ import annotations

import pytest

from compute_ctl.compute import metrics as metrics_mod
from compute_ctl.compute import state as state_mod
from compute_ctl.compute.remote_ext import server
from tests import pgserver

TOKEN = "s3cr3ttoken"


@pytest.mark.parametrize(
    "userinfo", [f"{TOKEN}", f"user:{TOKEN}", f"{TOKEN}:x-oauth-basic", "user:p%40" + TOKEN]
)
async def test_download_errors_hide_the_userinfo(userinfo: str) -> None:
    ext_server = server.ExtensionServer(
        base_url=f"http://{userinfo}@127.0.0.1:99999/",
        build_tag="latest",
        tools=pgserver.tools(),
        metrics=metrics_mod.Metrics(build_tag="latest", state=state_mod.ComputeState()),
    )
    with pytest.raises(server.DownloadFailed) as caught:
        await ext_server.download("anything")
    assert TOKEN not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)
