"""Idempotence as a property: for generated specs (hostile names, passwords, options,
renames and deletes, replayed deltas, Neon's ``web_access`` role, the subscription drop
of a new timeline), after an apply the plan of the same spec is empty and a re-apply
executes nothing. Runs against the tier's real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute_ctl.compute import spec
from tests import pgserver
from tests.catalog.conftest import (
    apply,
    database,
    delta,
    make_spec,
    option,
    replan,
    reset_catalog,
    role,
    scram_verifier,
    user_databases,
    user_roles,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ALPHABET = st.sampled_from(list("abcXYZ019_ -\"'\\;%$.:,()*=?üé名🐘\t"))
RESERVED = {"public", "none", "cloud_admin", "neon_superuser", "postgres", "template0", "template1"}
VERIFIERS = [scram_verifier(p) for p in ("one", "two")]


def _fit(text: str) -> str:
    return text.encode()[:63].decode(errors="ignore")


names = (
    st.text(ALPHABET, min_size=1, max_size=70)
    .map(_fit)
    .filter(lambda n: bool(n) and not n.startswith("pg_") and n not in RESERVED)
)
passwords = st.one_of(
    st.none(),
    st.text("0123456789abcdef", min_size=32, max_size=32),
    st.sampled_from(VERIFIERS),
)
role_options = st.lists(
    st.sampled_from(
        [
            option("NOCREATEDB", vartype="bool"),
            option("NOREPLICATION", vartype="bool"),
            option("NOLOGIN", vartype="bool"),
            option("CONNECTION LIMIT", "3", "integer"),
            option("VALID UNTIL", "2040-01-01T00:00:00+00:00"),
        ]
    ),
    max_size=3,
    unique_by=lambda o: o["name"],
)


# drop_subscriptions_before_start on no timeline (vanilla), a branch, or its child.
branches: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.just({}),
    st.sampled_from([None, "ab" * 16, "cd" * 16]).map(
        lambda t: {"drop_subscriptions_before_start": True, "timeline_id": t}
    ),
)


@dataclasses.dataclass
class Scenario:
    first: spec.ComputeSpec
    second: spec.ComputeSpec


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    all_names = draw(st.lists(names, min_size=1, max_size=9, unique=True))
    if draw(st.booleans()):
        all_names.insert(0, "web_access")  # Neon grants it CREATE on public (15+)
    first_roles, fresh = all_names[:4], all_names[4:]
    db_names = draw(st.lists(names, max_size=3, unique=True))

    def a_role(name: str) -> dict[str, Any]:
        return role(name, draw(passwords), draw(role_options))

    first_specs = {n: a_role(n) for n in first_roles}
    first = make_spec(
        roles=list(first_specs.values()),
        databases=[database(n, draw(st.sampled_from(first_roles))) for n in db_names],
        **draw(branches),
    )
    second_specs: dict[str, dict[str, Any]] = {}
    deltas: list[dict[str, Any]] = []
    for name in first_roles:
        action = draw(st.sampled_from(["keep", "rename", "delete"]))
        # Half the time a kept or renamed role keeps its password and options verbatim.
        same = draw(st.booleans())
        if action == "rename" and fresh:
            new = fresh.pop()
            deltas.append(delta("rename_role", name, new))
            second_specs[new] = {**first_specs[name], "name": new} if same else a_role(new)
        elif action == "delete":
            deltas.append(delta("delete_role", name))
        else:
            second_specs[name] = first_specs[name] if same else a_role(name)
    for name in fresh[: draw(st.integers(0, len(fresh)))]:
        second_specs[name] = a_role(name)
    second_roles = list(second_specs)
    second_dbs: list[dict[str, Any]] = []
    for name in db_names:
        action = draw(st.sampled_from(["keep", "rename", "delete"]))
        if action == "delete" or not second_roles:
            deltas.append(delta("delete_db", name))
            continue
        new_name = name
        if action == "rename":
            candidate = _fit(name + "~")
            if candidate not in db_names:
                deltas.append(delta("rename_db", name, candidate))
                new_name = candidate
        second_dbs.append(database(new_name, draw(st.sampled_from(second_roles))))
    # Deltas naming objects that do not exist (a replay, or a stale control plane).
    deltas.append(delta("delete_role", "ghost role"))
    deltas.append(delta("rename_db", "ghost db", "still a ghost"))
    deltas = draw(st.permutations(deltas))
    second = make_spec(
        roles=list(second_specs.values()), databases=second_dbs, deltas=deltas, **draw(branches)
    )
    return Scenario(first=first, second=second)


async def check(server: pgserver.PgServer, scenario: Scenario) -> None:
    for compute_spec in (scenario.first, scenario.second):
        await apply(server, compute_spec, concurrency=3)
        leftover = await replan(server, compute_spec)
        assert not leftover, leftover.render()
        again = await apply(server, compute_spec, concurrency=3)
        assert again.statements_executed == 0
    wanted_roles = {r.name for r in scenario.second.cluster.roles}
    assert user_roles(server.dsn()) == wanted_roles | {"neon_superuser"}
    assert user_databases(server.dsn()) == {d.name for d in scenario.second.cluster.databases}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios())
def test_apply_then_plan_is_empty(catalog_server: pgserver.PgServer, scenario: Scenario) -> None:
    reset_catalog(catalog_server)
    asyncio.run(check(catalog_server, scenario))
