"""Names that become file names and URL segments are matched whole: a trailing newline
(which ``$`` lets through) is refused like any other odd character."""

from __future__ import annotations

import pydantic
import pytest

from compute_ctl.compute.remote_ext import names


def _remote(ext: str, control: str) -> dict[str, object]:
    return {
        "public_extensions": [ext],
        "library_index": {},
        "extension_data": {ext: {"control_data": {control: "x"}, "archive_path": "p"}},
    }


@pytest.mark.parametrize(("ext", "control"), [("ok\n", "ok.control"), ("ok", "ok.control\n")])
def test_trailing_newline_is_refused(ext: str, control: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        names.parse(_remote(ext, control))


def test_plain_names_pass() -> None:
    assert names.control_files(names.parse(_remote("ok", "ok.control"))) == [("ok.control", "x")]
