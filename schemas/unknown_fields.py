"""What a request's unknown field is called out with: the closest known field, if one is close ("did you mean
`text`?"), and the fields accepted where it was found, rather than pydantic's "Extra inputs are not
permitted"."""

from __future__ import annotations

import difflib
import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model of a field's type (`WeightSpec | None` -> WeightSpec), if it has one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        for member in get_args(annotation):
            if (model := _model_in(member)) is not None:
                return model
    return None


def accepted_fields(root: type[BaseModel], loc: tuple[str | int, ...]) -> list[str] | None:
    """The fields of the model at `loc` (the path of the unknown field's parent), or None where it is not a
    model's."""
    model: type[BaseModel] | None = root
    for part in loc:
        field = model.model_fields.get(str(part)) if model is not None else None
        model = _model_in(field.annotation) if field is not None else None
    if model is None:
        return None
    return [field.alias or name for name, field in model.model_fields.items()]


def unknown_field_message(root: type[BaseModel], loc: tuple[str | int, ...]) -> str | None:
    """The message for the unknown field at `loc` of a `root` request, or None if the location is not a
    model's field."""
    if not loc:
        return None
    accepted = accepted_fields(root, loc[:-1])
    if accepted is None:
        return None
    found = str(loc[-1])
    close = difflib.get_close_matches(found, accepted, n=1, cutoff=0.7)  # temperature ~ generate is 0.63
    guess = f"did you mean `{close[0]}`? " if close else ""
    return f"found an unknown field `{found}`; {guess}expected one of: {', '.join(accepted)}"
