"""Job parameters take JSON's types strictly at every depth: the strict copy of a parameter
model and of every model it holds, from which the api both validates and documents requests."""

import copy
import math
from types import UnionType
from typing import Annotated, Any, ForwardRef, Literal, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic.errors import PydanticUndefinedAnnotation
from pydantic_core import PydanticCustomError

from shared.errors import ConfigurationError


def whole_number(value: Any) -> Any:
    """A JSON number without a fractional part, `2.0`, is the integer 2, as JSON Schema's
    `integer` says; `2.5` is refused, and `true` or `"2"` still are by the strict field."""
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        if math.isfinite(value):
            raise PydanticCustomError(
                "int_from_float",
                "Input should be a valid integer, got a number with a fractional part",
            )
    return value


WHOLE_NUMBER = BeforeValidator(whole_number)
JsonInteger = Annotated[int, WHOLE_NUMBER]
"""What an `int` of a parameter model becomes: strict, but taking `2.0` as 2."""

_copies: dict[type[BaseModel], type[BaseModel]] = {}
"""Each model's strict copy, made once: two job types holding one model share its copy (and
its one component in the OpenAPI schema)."""


def strict(model: type[BaseModel]) -> type[BaseModel]:
    """The parameter model as the api validates it: it and every model it holds, in lists,
    dicts, optional fields and unions, at any depth, refuse unknown fields and take JSON's
    types strictly, each unless its own `model_config` says otherwise (`extra=`, `strict=`). A
    misspelt parameter, or `true` or `"5"` sent for a number, is an error the client sees, not
    a default or a conversion silently used; an integer is taken for a float, and a number
    without a fractional part (`2.0`) for an integer. The api validates the parsed JSON
    (pydantic's Python mode), where a strict field refuses a datetime, UUID or enum given as a
    string: such a field says `Field(strict=False)`. The copies are subclasses of the models
    the job's code declared, with their names, validators and defaults."""
    copies = StrictCopies()
    try:
        return copies.complete(copies.model(model))
    except PydanticUndefinedAnnotation as error:
        raise ConfigurationError(f"model {model.__name__}: {error}") from None


class StrictCopies:
    """One walk through a model tree, copying each model in it once. A model that holds itself
    (a tree of them) refers to its copy by a name until every copy exists."""

    def __init__(self) -> None:
        self.building: dict[type[BaseModel], str] = {}
        self.made: dict[type[BaseModel], type[BaseModel]] = {}
        self.names: dict[str, type[BaseModel]] = {}

    def model(self, model: type[BaseModel]) -> Any:
        """The model's strict copy, or a reference to it while it is being made."""
        if model in _copies:
            return _copies[model]
        if model in self.made:
            return self.made[model]
        if model in self.building:
            return ForwardRef(self.building[model])
        if not model.__pydantic_complete__:
            model.model_rebuild()  # annotations naming models declared after it
        reference = f"{model.__name__}__strict_{id(model)}"
        self.building[model] = reference
        fields = {
            field_name: (self.annotation(field.annotation), field)
            for field_name, field in model.model_fields.items()
        }
        changed = {
            field_name: (annotation, field)
            for field_name, (annotation, field) in fields.items()
            if annotation is not field.annotation
        }
        config = {
            setting: value
            for setting, value in (("extra", "forbid"), ("strict", True))
            if model.model_config.get(setting) is None
        }
        made = model
        if changed or config:
            namespace: dict[str, Any] = {
                "__module__": model.__module__,
                "__qualname__": model.__qualname__,
                "__doc__": model.__doc__,
                "__annotations__": {name: type_ for name, (type_, _) in changed.items()},
                "model_config": ConfigDict(**config),  # type: ignore[typeddict-item]
                **{name: copy.copy(field) for name, (_, field) in changed.items()},
            }
            made = type(model.__name__, (model,), namespace)
        del self.building[model]
        self.made[model] = made
        self.names[reference] = made
        return made

    def annotation(self, annotation: Any) -> Any:
        """The annotation with each model in it replaced by its strict copy and each `int` by
        JsonInteger; the very same object when nothing in it changes."""
        if annotation is int:
            return JsonInteger
        origin = get_origin(annotation)
        if origin is None:
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                return self.model(annotation)
            return annotation
        arguments = get_args(annotation)
        if origin is Annotated:
            if arguments[0] is int:
                # Outside the constraints, so that the schema still shows them (`minimum`).
                return Annotated[(int, *annotation.__metadata__, WHOLE_NUMBER)]
            inner = self.annotation(arguments[0])
            if inner is arguments[0]:
                return annotation
            return Annotated[(inner, *annotation.__metadata__)]
        if origin is Literal:
            return annotation
        strict_arguments = tuple(self.annotation(argument) for argument in arguments)
        if all(new is old for new, old in zip(strict_arguments, arguments, strict=True)):
            return annotation
        if origin is Union or origin is UnionType:
            return Union[strict_arguments]  # noqa: UP007 (the arguments are a tuple)
        try:
            return origin[strict_arguments]
        except TypeError:  # a generic that cannot be subscribed again: left as declared
            return annotation

    def complete(self, top: Any) -> type[BaseModel]:
        """Resolve the references of models that hold themselves, then remember the copies."""
        incomplete = [made for made in self.made.values() if not made.__pydantic_complete__]
        while incomplete:
            for made in incomplete:
                made.model_rebuild(raise_errors=False, _types_namespace=self.names)
            still = [made for made in incomplete if not made.__pydantic_complete__]
            if len(still) == len(incomplete):
                still[0].model_rebuild(_types_namespace=self.names)  # raises what is missing
            incomplete = still
        _copies.update(self.made)
        strict_model: type[BaseModel] = top
        return strict_model
