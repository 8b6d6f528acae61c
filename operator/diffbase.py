"""kopf's "last handled" record as a hash, not a copy of the spec.

kopf decides whether a change is new by comparing the resource's essence (its spec,
labels and annotations) with the one it stored after handling the last change, by default
the whole essence, JSON, in an annotation. A ``ComputeSpec``'s spec holds role password
verifiers (an md5 verifier is password-equivalent for md5 logins), so that copy put them
in one more place anyone who can read the resource's metadata sees. This storage keeps
only a SHA-256 of the essence: equal essences still compare equal, which is all the
reconciler needs (its handlers are level-triggered and never read kopf's diff). An
annotation written by an older operator (a full essence) is hashed when read, so an
upgrade sees no spurious change.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from typing import Any, cast

import kopf

__all__ = ["HashedDiffBaseStorage"]


class HashedDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    def __init__(self, *, prefix: str, key: str) -> None:
        super().__init__(prefix=prefix, key=key)
        self._prefix = prefix

    def build(self, *, body: Any, extra_fields: Iterable[Any] | None = None) -> Any:
        return self._hashed(super().build(body=body, extra_fields=extra_fields))

    def fetch(self, *, body: Any) -> Any:
        stored = super().fetch(body=body)
        if stored is None or set(stored) == {"sha256"}:
            return stored
        return self._hashed(stored)  # a full essence from an older operator

    def _hashed(self, essence: Any) -> dict[str, str]:
        plain = cast(dict[str, Any], copy.deepcopy(dict(essence)))
        # kopf's own progress annotations (same prefix) change while handling: not content.
        annotations = (plain.get("metadata") or {}).get("annotations") or {}
        for key in [k for k in annotations if k.startswith(f"{self._prefix}/")]:
            del annotations[key]
        encoded = json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()
        return {"sha256": hashlib.sha256(encoded).hexdigest()}
