"""The benchmark's one table: each metric for jobcache and bare arq, the ratio to tuned bare
arq, the target and whether it was met."""

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from bench.workloads import Latencies, Stages, percentiles

if TYPE_CHECKING:
    from bench.sequential import SequentialFigures

SEQUENTIAL_TARGET = 0.8
"""Issue 24: one job at a time over HTTP, jobcache's api at least 0.8x the bare FastAPI app."""


@dataclass
class Figures:
    """One system's measurements from one run."""

    latency: Latencies | None = None
    throughput: dict[int, float] = field(default_factory=dict)
    """Jobs per second, by number of workers."""
    commands_per_job: dict[int, float] = field(default_factory=dict)
    """Redis commands per job during the throughput run, by number of workers."""
    idle_commands_per_second: float | None = None
    """None when the idle phase did not run."""
    unfinished_reads: int = 0
    """HTTP only: GET ?wait answers that came back before the job had finished."""
    stages: list[Stages] = field(default_factory=list)
    """HTTP only: where each latency job's time went."""


@dataclass(frozen=True)
class PhaseStats:
    """One measured phase: Redis's command counts, the CPU seconds each kind of process spent
    (`client` is the benchmark itself), and what to divide them by (jobs, or seconds)."""

    counts: Counter[str]
    cpu_seconds: dict[str, float]
    per: float
    unit: str


@dataclass(frozen=True)
class Row:
    metric: str
    jobcache: float
    arq_default: float
    arq_tuned: float
    decimals: int
    target: str = "-"
    met: bool | None = None

    @property
    def ratio(self) -> float:
        return self.jobcache / self.arq_tuned if self.arq_tuned else float("inf")


def latency_ms(figures: Figures, percentile: int) -> float:
    assert figures.latency is not None
    return percentiles(figures.latency.finished)[percentile] * 1000


def rows(jobcache: Figures, internal: Figures, default: Figures, tuned: Figures) -> list[Row]:
    def each(pick: Callable[[Figures], float]) -> tuple[float, float, float]:
        return pick(jobcache), pick(default), pick(tuned)

    def each_at(
        by_workers: Callable[[Figures], dict[int, float]], workers: int
    ) -> tuple[float, float, float]:
        return each(lambda figures: by_workers(figures)[workers])

    table = []
    if jobcache.latency is not None:
        p50 = Row("latency p50, ms", *each(lambda f: latency_ms(f, 50)), 2, "<= 5 ms")
        p99 = Row("latency p99, ms", *each(lambda f: latency_ms(f, 99)), 2, "<= 25 ms")
        table += [
            judged(p50, p50.jobcache <= 5),
            Row("latency p95, ms", *each(lambda f: latency_ms(f, 95)), 2),
            judged(p99, p99.jobcache <= 25),
        ]
    for workers in sorted(jobcache.throughput):
        http = Row(
            f"throughput {workers}w HTTP, jobs/s",
            *each_at(lambda f: f.throughput, workers),
            0,
            ">= 0.5x tuned",
        )
        table.append(judged(http, http.ratio >= 0.5))
        path = Row(
            f"throughput {workers}w internal, jobs/s",
            internal.throughput[workers],
            default.throughput[workers],
            tuned.throughput[workers],
            0,
            ">= 1.0x tuned",
        )
        table.append(judged(path, path.ratio >= 1.0))
    for workers in sorted(jobcache.commands_per_job):
        commands = Row(
            f"Redis commands/job {workers}w HTTP",
            *each_at(lambda f: f.commands_per_job, workers),
            1,
            "<= both arq",
        )
        table.append(
            judged(commands, commands.jobcache <= min(commands.arq_default, commands.arq_tuned))
        )
        table.append(
            Row(
                f"Redis commands/job {workers}w internal",
                internal.commands_per_job[workers],
                default.commands_per_job[workers],
                tuned.commands_per_job[workers],
                1,
            )
        )
    if jobcache.idle_commands_per_second is not None:
        idle = Row(
            "idle Redis commands/s, 4 workers",
            *each(lambda f: f.idle_commands_per_second or 0.0),
            1,
            "<= 50/s",
        )
        table.append(judged(idle, idle.jobcache <= 50))
    return table


def judged(row: Row, met: bool) -> Row:
    return replace(row, met=met)


def render(
    *,
    jobcache: Figures,
    internal: Figures,
    arq_default: Figures,
    arq_tuned: Figures,
    setup: Mapping[str, object],
    phases: Mapping[str, PhaseStats] | None,
    sequential: "SequentialFigures | None" = None,
) -> str:
    table = rows(jobcache, internal, arq_default, arq_tuned)
    header = ("metric", "jobcache", "arq default", "arq tuned", "ratio", "target", "met?")
    cells = [header] + [
        (
            row.metric,
            f"{row.jobcache:.{row.decimals}f}",
            f"{row.arq_default:.{row.decimals}f}",
            f"{row.arq_tuned:.{row.decimals}f}",
            f"{row.ratio:.2f}",
            row.target,
            {True: "yes", False: "NO", None: ""}[row.met],
        )
        for row in table
    ]
    lines = [", ".join(f"{name} {value}" for name, value in setup.items()), ""]
    verdicts = {row.metric: row.met for row in table if row.met is not None}
    if table:
        lines += aligned(cells, left_from=5)
        lines += [
            "",
            "ratio: jobcache / tuned bare arq. Bare arq columns are library-level (enqueue_job, "
            "Job.result); 'internal' is jobcache's enqueue path and record wait in-process, no "
            "HTTP.",
        ]
    if sequential is not None:
        if table:
            lines.append("")
        sequential_lines, sequential_verdicts = sequential_table(sequential)
        lines += sequential_lines
        verdicts.update(sequential_verdicts)
    missed = [metric for metric, met in verdicts.items() if not met]
    lines.append(
        f"targets met: {len(verdicts) - len(missed)} of {len(verdicts)}"
        + (f"; missed: {', '.join(missed)}" if missed else "")
    )
    if jobcache.latency is not None:
        lines += notes(jobcache)
    if phases is not None:
        lines += phase_details(phases)
    return "\n".join(lines)


def aligned(cells: Sequence[Sequence[str]], left_from: int) -> list[str]:
    """The rows of a table, its header underlined; the first column and those from
    `left_from` on are aligned left, the others (figures) right."""
    widths = [max(len(line[column]) for line in cells) for column in range(len(cells[0]))]
    lines = []
    for number, line in enumerate(cells):
        lines.append(
            "  ".join(
                cell.ljust(width) if column == 0 or column >= left_from else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def sequential_table(figures: "SequentialFigures") -> tuple[list[str], dict[str, bool]]:
    """Jobs/s one job at a time over HTTP, each system's median round next to the bare app's;
    jobcache in Redis mode is judged against the target."""
    bare = figures.median(figures.baseline)
    header = ("one job at a time over HTTP", "jobs/s", "rounds", "ratio", "target", "met?")
    cells = [header]
    verdicts = {}
    for system, rounds in figures.jobs_per_second.items():
        median = figures.median(system)
        ratio = median / bare
        judged_here = system == figures.judged
        target = f">= {SEQUENTIAL_TARGET}x bare" if judged_here else "-"
        met = ratio >= SEQUENTIAL_TARGET if judged_here else None
        if met is not None:
            verdicts[f"one at a time HTTP {system}"] = met
        cells.append(
            (
                system,
                f"{median:.0f}",
                " ".join(f"{each:.0f}" for each in rounds),
                f"{ratio:.2f}",
                target,
                {True: "yes", False: "NO", None: ""}[met],
            )
        )
    lines = aligned(cells, left_from=4)
    lines.append(
        "ratio: each system's median round / the bare FastAPI app's (bench/bare_api.py: the "
        "same two routes, no work); POST /jobs/echo, then GET ?wait, on one connection."
    )
    return lines, verdicts


def notes(jobcache: Figures) -> list[str]:
    assert jobcache.latency is not None
    submitted = percentiles(jobcache.latency.submitted)
    waited = percentiles(
        [
            finished - submit
            for submit, finished in zip(
                jobcache.latency.submitted, jobcache.latency.finished, strict=True
            )
        ]
    )
    lines = [
        f"jobcache latency split: POST p50 {submitted[50] * 1000:.2f} ms, "
        f"p99 {submitted[99] * 1000:.2f} ms; GET ?wait p50 {waited[50] * 1000:.2f} ms, "
        f"p99 {waited[99] * 1000:.2f} ms",
    ]
    if len(jobcache.stages) >= 2:
        stages = {
            "POST sent -> created_at": [stage.to_created for stage in jobcache.stages],
            "-> started_at": [stage.to_started for stage in jobcache.stages],
            "-> finished_at": [stage.to_finished for stage in jobcache.stages],
            "-> result at client": [stage.to_client for stage in jobcache.stages],
        }
        lines.append(
            "jobcache latency stages, p50 (p99) ms: "
            + ", ".join(
                f"{name} {percentiles(samples)[50] * 1000:.2f} "
                f"({percentiles(samples)[99] * 1000:.2f})"
                for name, samples in stages.items()
            )
        )
    lines.append(
        f"GET ?wait answers that came back unfinished (re-polled): {jobcache.unfinished_reads}"
    )
    return lines


def phase_details(phases: Mapping[str, PhaseStats]) -> list[str]:
    """Each phase's Redis commands (INFO commandstats) and CPU, per job or per second."""
    lines = ["", "By phase: Redis commands, then CPU ms of each kind of process; per job or /s"]
    for phase, measured in phases.items():
        total = measured.counts.total()
        lines.append(f"  {phase}: {total / measured.per:.2f} commands{measured.unit}")
        top = measured.counts.most_common()
        lines.append(
            "    " + ", ".join(f"{name} {count / measured.per:.2f}" for name, count in top)
        )
        cpu = sorted(measured.cpu_seconds.items(), key=lambda item: -item[1])
        lines.append(
            "    CPU ms: "
            + ", ".join(f"{role} {seconds * 1000 / measured.per:.3f}" for role, seconds in cpu)
            + f" (all {sum(measured.cpu_seconds.values()) * 1000 / measured.per:.3f})"
        )
    return lines
