"""Reading Prometheus' text format in tests, with the client library's own parser."""

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    return [
        Sample(sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def total(expositions: list[str] | str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`, over one or more
    expositions (one per process, as Prometheus' `sum()` adds them)."""
    if isinstance(expositions, str):
        expositions = [expositions]
    return sum(
        sample.value
        for text in expositions
        for sample in parse(text)
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def has_sample(text: str, name: str) -> bool:
    return any(sample.name == name for sample in parse(text))


def samples(text: str, name: str, **labels: str) -> list[Sample]:
    """The samples called `name` whose labels include `labels`: empty when no such series is
    exported (where `total` would say 0)."""
    return [
        sample
        for sample in parse(text)
        if sample.name == name and labels.items() <= sample.labels.items()
    ]


def families(text: str) -> set[str]:
    """The names of the metric families exported, as their samples name them."""
    return {sample.name for sample in parse(text)}
