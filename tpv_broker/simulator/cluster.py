"""What really happens at the destinations: each runs jobs on its cores and
memory, first come first served with backfill (a queued job that fits
starts even if an earlier, larger one cannot), as HTCondor and Slurm do."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from .workload import Job, Site


@dataclass
class Running:
    job: Job
    start: float
    end: float


@dataclass
class DestinationSim:
    site: Site
    free_cores: float = 0.0
    free_mem: float = 0.0
    queue: list[tuple[Job, float]] = field(default_factory=list)  # (job, enqueued at)
    running: dict[str, Running] = field(default_factory=dict)
    staging: list[Job] = field(default_factory=list)  # placed, inputs still on their way
    busy_core_s: float = 0.0
    _last_t: float = 0.0

    def __post_init__(self) -> None:
        self.free_cores, self.free_mem = float(self.site.cores), float(self.site.mem_gb)

    def run_time(self, job: Job) -> float:
        return job.run_s * self.site.speed

    def _account(self, now: float) -> None:
        self.busy_core_s += (self.site.cores - self.free_cores) * (now - self._last_t)
        self._last_t = now

    def place(self, job: Job) -> None:
        self.staging.append(job)

    def enqueue(self, job: Job, now: float) -> list[Running]:
        self.staging.remove(job)
        self.queue.append((job, now))
        return self._start_what_fits(now)

    def finish(self, job_id: str, now: float) -> tuple[Running, list[Running]]:
        self._account(now)
        r = self.running.pop(job_id)
        self.free_cores += r.job.tool.cores
        self.free_mem += r.job.tool.mem_gb
        return r, self._start_what_fits(now)

    def _start_what_fits(self, now: float) -> list[Running]:
        self._account(now)
        started, waiting = [], []
        for job, since in self.queue:
            if job.tool.cores <= self.free_cores and job.tool.mem_gb <= self.free_mem:
                self.free_cores -= job.tool.cores
                self.free_mem -= job.tool.mem_gb
                r = Running(job, now, now + self.run_time(job))
                self.running[job.id] = r
                started.append(r)
            else:
                waiting.append((job, since))
        self.queue = waiting
        if self.free_cores < 0 or self.free_mem < 0:
            raise AssertionError(f"{self.site.id} over capacity: {self.free_cores} cores, {self.free_mem} GB free")
        return started

    def expected_start(self, job: Job, now: float, expected_run: dict[str, float]) -> float:
        """When this job would start if placed now, given the true remaining
        times of running jobs and expected run times of queued ones (the
        oracle's view: exact state, no clairvoyance about future arrivals)."""
        cores, mem = self.free_cores, self.free_mem
        ends = [(r.end, r.job.tool.cores, r.job.tool.mem_gb) for r in self.running.values()]
        heapq.heapify(ends)
        # Jobs still staging will queue ahead of this one.
        pending = [j for j, _ in self.queue] + self.staging + [job]
        t = now
        while True:
            # One backfill pass: a start only takes resources, so nothing
            # earlier in the queue can fit until a job ends.
            still = []
            for j in pending:
                if j.tool.cores <= cores and j.tool.mem_gb <= mem:
                    if j is job:
                        return t
                    cores -= j.tool.cores
                    mem -= j.tool.mem_gb
                    heapq.heappush(ends, (t + expected_run[j.tool.id] * self.site.speed, j.tool.cores, j.tool.mem_gb))
                else:
                    still.append(j)
            pending = still
            if not ends:
                return float("inf")
            t, c, m = heapq.heappop(ends)
            cores += c
            mem += m
