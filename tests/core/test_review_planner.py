"""Review findings on the core: escalations competing for a budget, Lease clock skew."""

from __future__ import annotations

import pytest

from noderescue.core.health import CompiledRules, classify
from noderescue.core.model import (
    Action,
    DecisionKind,
    HealthState,
    LeaseRule,
    Phase,
    RateLimit,
    Step,
)
from noderescue.core.planner import plan
from tests.core.factories import NOW, READY_RULE, admitted, bad, node, node_class, policy, record, snapshot

PETS = node_class(
    "pets",
    ladder=(Step(Action.REPAIR, 300.0, command="x"), Step(Action.REBOOT, 600.0), Step(Action.NOTIFY)),
)


@pytest.mark.parametrize(
    "order",
    [
        pytest.param(("p1", "p2"), id="name-order"),
        pytest.param(("p2", "p1"), id="reverse-order"),
    ],
)
def test_escalations_competing_for_one_rate_limit_slot_do_not_depend_on_node_order(
    order: tuple[str, str],
) -> None:
    """Two failed repairs both escalate to reboot and one reboot is left in the hour: which node
    gets it must not depend on the order the watch cache lists the nodes in (same inputs, same
    plan), or the slot flips between nodes from one pass to the next."""
    labels = {"noderescue.io/class": "pets"}
    nodes = {name: bad(name, labels=labels) for name in ("p1", "p2")}
    records = {
        name: record(name, cls="pets", step=0, action=Action.REPAIR, phase=Phase.FAILED) for name in nodes
    }
    pol = policy(PETS, rate_limits=(RateLimit(Action.REBOOT, 1, 3600.0),))

    result = plan(snapshot(*(nodes[n] for n in order)), records, admitted(*records.values()), pol, NOW)

    escalated = [d.node for d in result.decisions if d.kind is DecisionKind.ESCALATE]
    skipped = [d.node for d in result.decisions if d.kind is DecisionKind.SKIP]
    assert escalated == ["p1"]
    assert skipped == ["p2"]


@pytest.mark.parametrize(
    "renewed_in",
    [
        pytest.param(30.0, id="30s-ahead"),
        pytest.param(600.0, id="10m-ahead"),
    ],
)
def test_a_lease_renewed_in_the_future_still_schedules_its_staleness_check(renewed_in: float) -> None:
    """A node whose clock runs ahead writes renewTime in our future. If its kubelet then dies,
    the Lease turns stale at renewTime + staleFor: the engine must wake up then, not only when
    something else happens to wake it."""
    rules = CompiledRules.of(node_class(rules=(READY_RULE, LeaseRule(120.0))))
    view = node("n1", lease_renew=NOW + renewed_in)

    health = classify(view, rules, NOW)

    assert health.state is HealthState.HEALTHY
    assert health.until == NOW + renewed_in + 120.0
    later = classify(view, rules, NOW + renewed_in + 120.0)
    assert later.state is HealthState.UNHEALTHY
