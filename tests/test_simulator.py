"""The simulator's small, fast mode: invariants of the simulated world, and
that it really drives the broker's ranking and in-flight charges."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import fakeredis
import pytest
from click.testing import CliRunner

from tpv_broker.cli import main
from tpv_broker.shared.keys import KeySchema
from tpv_broker.shared.rank_service import RankService
from tpv_broker.shared.store import SnapshotStore
from tpv_broker.simulator.compare import POLICIES, broker_config, simulate
from tpv_broker.simulator.engine import new_world, run
from tpv_broker.simulator.policies import Broker, Oracle, Prototype, WeightedRandom
from tpv_broker.simulator.workload import SITES, arrivals, capacity_core_seconds_per_s, mean_core_seconds

JOBS = arrivals(0.8, 1200, seed=3)


def test_arrivals_are_seeded_and_offer_the_load():
    assert arrivals(0.8, 1200, seed=3) == JOBS
    assert arrivals(0.8, 1200, seed=4) != JOBS
    # offered core-seconds per second / capacity ~ load (Poisson noise over 20 min: within 35 %)
    longer = arrivals(0.8, 6 * 3600, seed=3)
    offered = sum(j.tool.cores * j.run_s for j in longer) / (6 * 3600)
    assert offered / capacity_core_seconds_per_s() == pytest.approx(0.8, rel=0.35)
    assert mean_core_seconds() > 0


@pytest.mark.parametrize("make", [lambda r: WeightedRandom(1), lambda r: Prototype(), lambda r: Oracle(),
                                  lambda r: Broker(r, charge=False), lambda r: Broker(r, charge=True)])
def test_every_job_is_placed_once_and_finishes(make):
    world = new_world()
    store = SnapshotStore(fakeredis.FakeRedis(), KeySchema("sim"))
    ranker = RankService(broker_config(0.0), store, clock=lambda: world.now)
    policy = make(ranker)
    result = run(JOBS, policy.choose, "p", store, world)
    assert [r.job.id for r in result.records] == [j.id for j in JOBS]
    for r in result.records:
        assert r.destination in world.sites
        assert r.job.arrival <= r.start <= r.end
        # run time on that site, to float precision
        assert r.end - r.start == pytest.approx(r.job.run_s * world.sites[r.destination].site.speed)
    # the capacity invariant is checked at every start inside the engine; at the end all is free
    for d in world.sites.values():
        assert (d.free_cores, d.free_mem) == (d.site.cores, d.site.mem_gb)
        assert not d.queue and not d.running and not d.staging


def test_the_broker_policy_charges_and_the_charges_spread_a_burst():
    first = arrivals(0.8, 3600, seed=5)[0]
    # a workflow burst: 60 jobs of one tool on one input, at one instant
    same_instant = [dataclasses.replace(first, id=f"burst{i}") for i in range(60)]
    for charge, expect_spread in ((False, False), (True, True)):
        world = new_world()
        store = SnapshotStore(fakeredis.FakeRedis(), KeySchema(f"sim{charge}"))
        ranker = RankService(broker_config(0.0), store, clock=lambda w=world: w.now)
        result = run(same_instant, Broker(ranker, charge=charge).choose, "b", store, world)
        used = {r.destination for r in result.records}
        # 60 jobs ranked on one snapshot: without charges they all go to the same
        # "best" site; with charges they spread as each placement is assumed.
        assert (len(used) > 1) is expect_spread, used
        assert (store.client.zcard("sim{}:inflight".format(charge)) > 0) is charge


def test_simulate_cli_quick_json(tmp_path: Path):
    png = tmp_path / "sim.png"
    result = CliRunner().invoke(main, ["simulate", "--quick", "--json", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert {r["policy"] for r in body["results"]} == set(POLICIES)
    assert all(r["jobs"] == body["results"][0]["jobs"] > 0 for r in body["results"])
    assert body["ratios"] and png.stat().st_size > 1000
    # same seed, same numbers
    again = json.loads(CliRunner().invoke(main, ["simulate", "--quick", "--json"]).output)
    assert again["results"] == body["results"]


def test_simulate_rejects_bad_loads():
    result = CliRunner().invoke(main, ["simulate", "--loads", "x"])
    assert result.exit_code == 2 and "--loads" in result.output


def test_sites_are_a_dozen_and_heterogeneous():
    assert len(SITES) == 12
    assert len({s.cores for s in SITES}) > 5 and len({s.speed for s in SITES}) > 3
    assert simulate  # the comparison entry point the CLI uses
