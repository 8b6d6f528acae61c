"""``python -m compute_ctl.compute`` and the ``compute_ctl`` console script.

Only an entry point: the command line lives in ``cli``.
"""

from __future__ import annotations

import sys

from compute_ctl.compute import cli

__all__ = ["main"]


def main() -> int:
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
