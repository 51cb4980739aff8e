"""Issue 24's HTTP target: jobs per second one job at a time (POST /jobs/echo, then
GET /jobs/{id}?wait=..., each on one kept-alive connection), of jobcache's api next to a bare
FastAPI app answering the same two routes with no work behind them (bench/bare_api.py).

Each system gets its own client connection; their rounds alternate, and their order turns each
round, so that a machine that gets busier shifts them alike. A system's figure is its median
round.
"""

import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from bench.http_client import LoopbackHttp
from bench.report import PhaseStats
from bench.workloads import HttpJobs, measure_latency

BARE = "bare FastAPI"
"""The baseline's name among the systems."""
JUDGED = "jobcache HTTP (Redis)"
"""The system the target is for: the api in Redis mode, with one worker."""
WARM_UP_JOBS = 100

Counted = Callable[[Awaitable[float]], Awaitable[tuple[float, Counter[str], dict[str, float]]]]
"""Runs a measurement, counting Redis's commands and each process's CPU meanwhile."""


@dataclass
class SequentialFigures:
    """Each system's jobs per second, round by round, and its commands and CPU per job."""

    baseline: str = BARE
    judged: str = JUDGED
    jobs_per_second: dict[str, list[float]] = field(default_factory=dict)
    phases: dict[str, PhaseStats] = field(default_factory=dict)

    def median(self, system: str) -> float:
        return statistics.median(self.jobs_per_second[system])


async def one_at_a_time(jobs: HttpJobs, count: int, label: str) -> float:
    """Seconds for `count` jobs, each submitted once the previous one's result was read."""
    started = time.perf_counter()
    await measure_latency(jobs, count, label)
    return time.perf_counter() - started


async def measure_sequential(
    systems: Mapping[str, LoopbackHttp], count: int, rounds: int, counted: Counted
) -> SequentialFigures:
    """`rounds` rounds of `count` jobs for each system (`systems` names each one's client)."""
    figures = SequentialFigures()
    jobs = {name: HttpJobs(http) for name, http in systems.items()}
    for name, each in jobs.items():
        await one_at_a_time(each, WARM_UP_JOBS, f"{name} warm-up")
    names = list(jobs)
    commands_by_system: dict[str, Counter[str]] = {name: Counter() for name in names}
    cpu_by_system: dict[str, dict[str, float]] = {name: {} for name in names}
    for round_number in range(rounds):
        turn = round_number % len(names)
        for name in names[turn:] + names[:turn]:
            seconds, commands, cpu = await counted(
                one_at_a_time(jobs[name], count, f"{name} sequential {round_number}")
            )
            figures.jobs_per_second.setdefault(name, []).append(count / seconds)
            commands_by_system[name].update(commands)
            spent = cpu_by_system[name]
            for role, seconds_of_role in cpu.items():
                spent[role] = spent.get(role, 0.0) + seconds_of_role
    for name in names:
        figures.phases[f"{name}, one job at a time"] = PhaseStats(
            commands_by_system[name], cpu_by_system[name], count * rounds, "/job"
        )
    return figures
