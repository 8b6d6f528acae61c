"""The ``remote_extensions`` spec, name resolution and the download layout. No I/O.

Neon's ``RemoteExtSpec`` (``libs/compute_api/src/spec.rs``): ``library_index`` and
``extension_data`` are required; ``archive_path`` is carried but unused (the archive's
place is derived from the extension name). ``resolve`` is Neon's ``get_ext``; its error
messages are Neon's. Beyond Neon, names that reach a URL or a file name are checked at
admission (``parse``): an extension name or a control file name with a ``/`` or ``..``
would otherwise let a spec write outside the extension directory or fetch another path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

import pydantic

from compute_ctl.compute import spec as spec_mod

__all__ = [
    "NotFound",
    "RemoteExtSpec",
    "archive_name",
    "control_files",
    "parse",
    "pg_version_tag",
    "preload_names",
    "remote_path",
    "resolve",
]

# Extension and archive names: what a file name and a URL segment can hold safely.
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")  # fullmatch: "$" passes a final "\n"
# Neon drops these from the preload list: they are always local.
_NEVER_REMOTE = frozenset({"neon", "databricks_auth", ""})
_SPLIT_RE = re.compile(r"[,' ]")
_PRELOAD_LINE_RE = re.compile(r"^\s*shared_preload_libraries\s*=\s*(.*)$")


class NotFound(Exception):
    """A name the spec does not resolve to a remote extension (Neon's 404)."""


def _safe_name(value: str, *, what: str) -> str:
    if not _NAME_RE.fullmatch(value) or ".." in value:
        raise ValueError(f"{what} {value!r} must be letters, digits and _.+- (no '..')")
    return value


def _named(what: str) -> pydantic.AfterValidator:
    return pydantic.AfterValidator(lambda value: _safe_name(value, what=what))


ControlFileName = Annotated[str, _named("control file name")]
ExtensionName = Annotated[str, _named("extension name")]


class ExtensionData(pydantic.BaseModel):
    control_data: dict[ControlFileName, str]
    archive_path: str


class RemoteExtSpec(pydantic.BaseModel):
    public_extensions: list[str] | None = None
    custom_extensions: list[str] | None = None
    library_index: dict[str, str]
    extension_data: dict[ExtensionName, ExtensionData]

    def allows(self, ext: str) -> bool:
        """In ``public_extensions`` or ``custom_extensions`` (a null list allows nothing)."""
        return ext in (self.public_extensions or ()) or ext in (self.custom_extensions or ())


def parse(raw: Mapping[str, Any]) -> RemoteExtSpec:
    """``spec.remote_extensions`` as a typed value; ``pydantic.ValidationError`` if bad."""
    return RemoteExtSpec.model_validate(dict(raw))


def resolve(spec: RemoteExtSpec, name: str, *, is_library: bool) -> str:
    """Neon's ``get_ext``: the extension whose archive provides ``name``."""
    if is_library:
        # "postgis-3.so.1" and "postgis-3.so" are both the library "postgis-3".
        name = name.split(".so", 1)[0]
        ext = spec.library_index.get(name)
        if ext is None:
            raise NotFound(f"library {name} is not found")
    else:
        ext = name
    if not spec.allows(ext):
        raise NotFound(f"extension {ext} is not found")
    if ext not in spec.extension_data:
        raise NotFound(f"real_ext_name {ext} is not found")
    return ext


def archive_name(ext: str) -> str:
    return f"{ext}.tar.zst"


def remote_path(*, build_tag: str, arch: str, pg_version: str, ext: str) -> str:
    """``<build_tag>/<arch>/<vNN>/extensions/<ext>.tar.zst``, relative to the base URL."""
    return f"{build_tag}/{arch}/{pg_version}/extensions/{archive_name(ext)}"


def arch_tag(machine: str) -> str:
    """Neon's architecture segment: ``amd64``, ``arm64``, or the machine name as is."""
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def pg_version_tag(version_output: str) -> str:
    """``v15`` from ``pg_config --version`` (``PostgreSQL 15.18 (Debian ...)``)."""
    match = re.match(r"^PostgreSQL (\d+)", version_output.strip())
    if match is None:
        raise ValueError(f"unexpected pg_config --version output {version_output[:80]!r}")
    return f"v{match.group(1)}"


def _split(value: str) -> list[str]:
    return [part for part in _SPLIT_RE.split(value) if part not in _NEVER_REMOTE]


def preload_names(spec: spec_mod.ComputeSpec, remote: RemoteExtSpec) -> list[str]:
    """The libraries of ``shared_preload_libraries`` that are remote (in ``library_index``).

    As Neon: the value in ``cluster.settings`` and that of the last
    ``shared_preload_libraries`` line of ``cluster.postgresql_conf``; ``neon`` and
    ``databricks_auth`` are always local. Neon reads only a line written exactly
    ``shared_preload_libraries='...'``; blanks around ``=`` are accepted here too, since
    postgres accepts them (a library missed here would make postgres fail to start).
    """
    names: list[str] = []
    setting = spec.cluster.setting("shared_preload_libraries")
    if setting:
        names.extend(_split(setting))
    last: str | None = None
    for line in (spec.cluster.postgresql_conf or "").splitlines():
        match = _PRELOAD_LINE_RE.match(line)
        if match is not None:
            last = match.group(1)
    if last is not None:
        names.extend(_split(last.split("#", 1)[0]))
    seen: dict[str, None] = {}
    for name in names:
        if name in remote.library_index:
            seen.setdefault(name, None)
    return list(seen)


def control_files(remote: RemoteExtSpec) -> list[tuple[str, str]]:
    """``(file name, contents)`` of the control files to write at start.

    Neon's filter, kept: an extension is skipped only when both lists are given and
    neither names it (a null ``public_extensions`` writes them all).
    """
    files: list[tuple[str, str]] = []
    both = remote.public_extensions is not None and remote.custom_extensions is not None
    for ext, data in remote.extension_data.items():
        if both and not remote.allows(ext):
            continue
        files.extend(data.control_data.items())
    return files
