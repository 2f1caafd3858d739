"""The simulated world: destinations, tools, object stores, and a seeded
arrival sequence (Poisson arrivals plus workflow bursts)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Site:
    id: str
    cores: int
    mem_gb: float
    speed: float  # run time multiplier: 0.8 runs 20 % faster than 1.0
    latitude: float
    longitude: float
    tpv_score: float  # the admin's tag preference, as TPV computes it


@dataclass(frozen=True)
class Tool:
    id: str
    cores: int
    mem_gb: float
    median_run_s: float
    sigma: float  # of the log-normal run time
    weight: float  # share of the job mix


@dataclass(frozen=True)
class Job:
    id: str
    arrival: float
    tool: Tool
    run_s: float  # on a speed-1.0 site
    input_store: str
    input_bytes: float
    # The Galaxy server that submitted it (the multi-Galaxy scenario).
    galaxy: str = "default"


# Heterogeneous on purpose: sizes from 32 to 512 cores, speeds 0.8-1.4, and
# tag scores that do not follow capacity (TPV's default would favour a small
# site).
SITES: tuple[Site, ...] = (
    Site("pulsar_de", 512, 2048, 1.0, 50.11, 8.68, 2),
    Site("pulsar_uk", 256, 1024, 1.1, 51.51, -0.13, 3),
    Site("pulsar_fr", 192, 768, 0.9, 48.86, 2.35, 1),
    Site("pulsar_cz", 128, 512, 1.2, 49.20, 16.61, 4),
    Site("pulsar_sk", 64, 256, 1.0, 48.15, 17.11, 5),
    Site("pulsar_it", 96, 384, 0.8, 45.46, 9.19, 1),
    Site("pulsar_es", 64, 256, 1.3, 40.42, -3.70, 0),
    Site("pulsar_pt", 32, 128, 1.0, 38.72, -9.14, 2),
    Site("pulsar_no", 48, 192, 0.9, 59.91, 10.75, 1),
    Site("pulsar_pl", 160, 640, 1.4, 52.23, 21.01, 0),
    Site("pulsar_be", 96, 384, 1.0, 50.85, 4.35, 3),
    Site("condor_eu", 384, 1536, 1.1, 52.37, 4.90, 1),
)

# A realistic spread: many short QC jobs, some mapping, a few assemblies.
TOOLS: tuple[Tool, ...] = (
    Tool("toolshed.g2.bx.psu.edu/repos/devteam/fastqc/fastqc/0.74+galaxy0", 1, 2, 90, 0.5, 0.25),
    Tool("toolshed.g2.bx.psu.edu/repos/iuc/multiqc/multiqc/1.11+galaxy1", 1, 2, 40, 0.4, 0.10),
    Tool("toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp/0.23.4+galaxy0", 4, 8, 300, 0.6, 0.15),
    Tool("toolshed.g2.bx.psu.edu/repos/devteam/bwa/bwa_mem/0.7.17.2", 8, 16, 1200, 0.7, 0.15),
    Tool("toolshed.g2.bx.psu.edu/repos/iuc/hisat2/hisat2/2.2.1+galaxy1", 8, 16, 900, 0.6, 0.12),
    Tool("toolshed.g2.bx.psu.edu/repos/iuc/featurecounts/featurecounts/2.0.3+galaxy2", 2, 4, 180, 0.5, 0.13),
    Tool("toolshed.g2.bx.psu.edu/repos/iuc/kraken2/kraken2/2.1.3+galaxy1", 8, 64, 600, 0.6, 0.05),
    Tool("toolshed.g2.bx.psu.edu/repos/iuc/trinity/trinity/2.15.1+galaxy1", 16, 64, 5400, 0.8, 0.05),
)

OBJECT_STORES: dict[str, tuple[float, float]] = {
    "object_store_germany": (51.16, 10.45),
    "object_store_france": (46.71, 1.72),
    "object_store_poland": (51.92, 19.13),
}


def mean_core_seconds(tools: tuple[Tool, ...] = TOOLS) -> float:
    """E[cores x run time] of one job on a speed-1.0 site (log-normal mean)."""
    total = sum(t.weight for t in tools)
    return sum(t.weight / total * t.cores * t.median_run_s * math.exp(t.sigma**2 / 2) for t in tools)


def capacity_core_seconds_per_s(sites: tuple[Site, ...] = SITES) -> float:
    """Core-seconds of speed-1.0 work the sites finish per second."""
    return sum(s.cores / s.speed for s in sites)


def arrivals(
    load: float,
    duration_s: float,
    seed: int,
    burst_share: float = 0.3,
    burst_size: tuple[int, int] = (10, 40),
    sites: tuple[Site, ...] = SITES,
    tools: tuple[Tool, ...] = TOOLS,
) -> list[Job]:
    """Jobs arriving over ``duration_s`` so that they offer ``load`` x the
    sites' capacity: Poisson single jobs plus workflow bursts (many jobs of
    one tool at one instant) carrying ``burst_share`` of the jobs."""
    rng = random.Random(seed)
    jobs_per_s = load * capacity_core_seconds_per_s(sites) / mean_core_seconds(tools)
    mean_burst = (burst_size[0] + burst_size[1]) / 2
    single_rate = jobs_per_s * (1 - burst_share)
    burst_rate = jobs_per_s * burst_share / mean_burst
    weights = [t.weight for t in tools]
    stores = sorted(OBJECT_STORES)
    out: list[Job] = []

    def job(t: float, tool: Tool) -> Job:
        run = tool.median_run_s * math.exp(rng.gauss(0, tool.sigma))
        return Job(f"job{len(out)}", t, tool, run, rng.choice(stores), rng.lognormvariate(math.log(2e9), 1.0))

    t = 0.0
    while True:
        t += rng.expovariate(single_rate + burst_rate)
        if t >= duration_s:
            break
        if rng.random() < single_rate / (single_rate + burst_rate):
            out.append(job(t, rng.choices(tools, weights)[0]))
        else:
            tool = rng.choices(tools, weights)[0]
            for _ in range(rng.randint(*burst_size)):
                out.append(job(t, tool))
    return out
