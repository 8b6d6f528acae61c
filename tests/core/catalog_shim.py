"""TEMPORARY: runs compute_ctl with the tests' SQL applier standing in for the catalog
package, which has not landed on this branch yet. ``process.compute_ctl_argv`` uses it only
when ``compute_ctl.compute.catalog`` cannot be imported; delete it once catalog is merged.
"""

from __future__ import annotations

import sys
import types

from compute_ctl.compute import cli
from tests.core import applier

_applier = applier.SqlApplier()


def _install() -> None:
    package = types.ModuleType("compute_ctl.compute.catalog")
    package.__path__ = []
    apply = types.ModuleType("compute_ctl.compute.catalog.apply")
    apply.apply_spec = _applier.apply_spec  # type: ignore[attr-defined]
    apply.plan_spec = _applier.plan_spec  # type: ignore[attr-defined]
    settings = types.ModuleType("compute_ctl.compute.catalog.settings")
    settings.pending_restart = _applier.pending_restart  # type: ignore[attr-defined]
    sys.modules.update(
        {
            package.__name__: package,
            apply.__name__: apply,
            settings.__name__: settings,
        }
    )


if __name__ == "__main__":
    _install()
    sys.exit(cli.main())
