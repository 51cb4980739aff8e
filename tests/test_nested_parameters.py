"""A team's parameter model holding plain pydantic models (in lists, dicts, optional fields,
unions, and a model that holds itself) is as strict at every depth as at the top: unknown
fields and JSON of the wrong type are a 422 naming the field's whole path, for one job and in
a batch, and /openapi.json says so with `additionalProperties: false` on each component."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import client_for, finished_record, settings_for_test, write_module

ORDERS = '''
"""Orders: plain pydantic models, nothing configured for strictness."""

from pydantic import BaseModel, ConfigDict, Field

from shared.jobs import JobContext, job


class Line(BaseModel):
    sku: str
    quantity: int = Field(ge=1)
    unit_price: float


class Address(BaseModel):
    street: str
    postcode: str


class Bundle(BaseModel):
    label: str
    parts: list["Bundle"] = []
    line: Line | None = None


class Notes(BaseModel):
    """Its own config says it takes any field."""

    model_config = ConfigDict(extra="allow")
    text: str = ""


class Order(BaseModel):
    lines: list[Line]
    shipping: Address | None = None
    by_warehouse: dict[str, list[Line]] = {}
    gift: Address | Bundle | None = None
    notes: Notes | None = None
    copies: int = 1


class Placed(BaseModel):
    quantities: list[int]
    types: list[str]
    declared_classes: bool
    copies: int


@job(summary="Place an order")
async def order(parameters: Order, context: JobContext) -> Placed:
    return Placed(
        quantities=[line.quantity for line in parameters.lines],
        types=[type(line.quantity).__name__ for line in parameters.lines],
        declared_classes=all(isinstance(line, Line) for line in parameters.lines),
        copies=parameters.copies,
    )
'''

LINE = {"sku": "tea", "quantity": 2, "unit_price": 3.5}


@pytest.fixture
async def client(job_directory: Path, namespace: str) -> AsyncIterator[httpx.AsyncClient]:
    module = write_module(job_directory, ORDERS)
    settings = settings_for_test(cache_namespace=namespace, cpu_workers=1, jobcache_jobs=module)
    async with client_for(settings) as client:
        yield client


def line(**changes: Any) -> dict[str, Any]:
    return {**LINE, **changes}


@pytest.mark.parametrize(
    ("body", "where", "kind"),
    [
        ({"lines": [line(quantity=True)]}, ["lines", 0, "quantity"], "int_type"),
        ({"lines": [line(quantity="2")]}, ["lines", 0, "quantity"], "int_type"),
        ({"lines": [line(quantity=2.5)]}, ["lines", 0, "quantity"], "int_from_float"),
        ({"lines": [line(unit_price="3.5")]}, ["lines", 0, "unit_price"], "float_type"),
        ({"lines": [line(colour="red")]}, ["lines", 0, "colour"], "extra_forbidden"),
        (
            {"lines": [], "shipping": {"street": "Main St", "postcode": 12345}},
            ["shipping", "postcode"],
            "string_type",
        ),
        (
            {"lines": [], "by_warehouse": {"north": [LINE, line(quantity=False)]}},
            ["by_warehouse", "north", 1, "quantity"],
            "int_type",
        ),
        (
            {
                "lines": [],
                "gift": {
                    "label": "box",
                    "parts": [{"label": "inner", "parts": [{"label": "core", "line": line(x=1)}]}],
                },
            },
            ["gift", "Bundle", "parts", 0, "parts", 0, "line", "x"],
            "extra_forbidden",
        ),
        ({"lines": [], "copies": 1.5}, ["copies"], "int_from_float"),
    ],
    ids=[
        "true for an int",
        "a string for an int",
        "a fraction for an int",
        "a string for a float",
        "an unknown field in a list",
        "in an optional model",
        "in a dict of lists",
        "in a union, three levels down",
        "a fraction at the top",
    ],
)
async def test_bad_input_at_any_depth_is_a_422_naming_its_path(
    client: httpx.AsyncClient, body: dict[str, Any], where: list[str | int], kind: str
) -> None:
    response = await client.post("/jobs/order", json=body)
    assert response.status_code == 422, response.text
    issues = response.json()["detail"]
    named = [issue for issue in issues if issue["loc"] == ["body", *where]]
    assert [issue["type"] for issue in named] == [kind], issues
    assert all(issue["msg"] for issue in issues)


async def test_a_bad_job_in_a_batch_is_named_by_its_index_and_path(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/jobs/order/batch", json=[{"lines": [LINE]}, {"lines": [LINE, line(colour="red")]}]
    )
    assert response.status_code == 422, response.text
    [issue] = response.json()["detail"]
    assert issue["loc"] == ["body", 1, "lines", 1, "colour"]
    assert issue["msg"] == "Extra inputs are not permitted"


async def test_a_whole_number_is_an_integer_at_any_depth(client: httpx.AsyncClient) -> None:
    """JSON Schema's `integer` admits 2.0: the job gets the int 2, in its own model classes."""
    response = await client.post(
        "/jobs/order", json={"lines": [line(quantity=2.0), LINE], "copies": 3.0}
    )
    assert response.status_code == 202, response.text
    record = await finished_record(client, response.json()["id"])
    assert record["status"] == "succeeded", record
    assert record["result"] == {
        "quantities": [2, 2],
        "types": ["int", "int"],
        "declared_classes": True,
        "copies": 3,
    }


async def test_a_model_whose_own_config_takes_any_field_keeps_it(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/jobs/order", json={"lines": [LINE], "notes": {"text": "hi", "colour": "red"}}
    )
    assert response.status_code == 202, response.text


async def test_the_schema_refuses_unknown_fields_of_every_nested_model(
    client: httpx.AsyncClient,
) -> None:
    components = (await client.get("/openapi.json")).json()["components"]["schemas"]
    for name in ("Order", "Line", "Address", "Bundle"):
        assert components[name]["additionalProperties"] is False, components[name]
    assert components["Notes"]["additionalProperties"] is True
    assert components["Line"]["properties"]["quantity"] == {
        "type": "integer",
        "minimum": 1,
        "title": "Quantity",
    }
    assert components["Bundle"]["properties"]["parts"]["items"] == {
        "$ref": "#/components/schemas/Bundle"
    }
