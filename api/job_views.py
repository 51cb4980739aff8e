"""Each job type's record as its submit routes document it: JobView with `result` typed as the
job type's result model, so that a client generated from the OpenAPI reads a typed result."""

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from shared.catalog import JobType
from shared.records import JobView
from shared.records.model import SENT_IN_FULL


@dataclass(frozen=True)
class JobTypeViews:
    """The models of one job type's answers: its record and a batch of them."""

    record: type[JobView]
    batch: type[BaseModel]


def model_name(job_type: JobType) -> str:
    """`text_stats` is `TextStats`: its models are `TextStatsJob` and `TextStatsBatch`."""
    return "".join(part[:1].upper() + part[1:] for part in job_type.name.split("_"))


def views_of(job_type: JobType) -> JobTypeViews:
    """Made when the app starts, from the job types it loaded; in the job's module, as its
    result model is, so that two job types' models never share a name in the schema (pydantic
    names a clash by module)."""
    name = model_name(job_type)
    module = job_type.result.__module__
    result: Any = job_type.result | None
    record = create_model(
        f"{name}Job",
        __base__=JobView,
        __module__=module,
        __doc__=f"A `{job_type.name}` job's record; its `result` is {job_type.result.__name__}.",
        result=(
            result,
            Field(default=None, description="The job's result once it has succeeded, else null."),
        ),
    )
    batch = create_model(
        f"{name}Batch",
        __config__=ConfigDict(**SENT_IN_FULL),
        __module__=module,
        __doc__="The records of a batch's jobs, in the order of its parameter sets.",
        jobs=(list[record], ...),
    )
    return JobTypeViews(record, batch)
