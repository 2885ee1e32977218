"""Class labels from any label column: ids 0..K-1 in a stable, documented order, names kept."""

from __future__ import annotations

from typing import Any

import datasets

from ddpm_lightning.errors import InvalidSettingError, MissingColumnError


def class_names(dataset: datasets.Dataset | datasets.IterableDataset, column: str) -> list[str]:
    """The names of the classes in id order.

    A ``ClassLabel`` column keeps its own order; integers are sorted numerically and strings
    alphabetically (so ids do not depend on the order of the rows).
    """
    columns = dataset.column_names or list(dataset.features or {})
    if column not in columns:
        raise MissingColumnError(
            f"The dataset has no label column {column!r}; its columns are {columns}. Set "
            "label_column to one of them (or to null for unconditional training)."
        )
    feature = (dataset.features or {}).get(column)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    if isinstance(dataset, datasets.IterableDataset):
        raise InvalidSettingError(
            f"A streamed label column must be a ClassLabel (its names are known up front); "
            f"{column!r} is {feature}. Cast it with cast_column(..., ClassLabel(names=[...]))."
        )
    values = dataset.unique(column)
    if any(value is None for value in values) or len({type(v) for v in values}) != 1:
        raise InvalidSettingError(
            f"The label column {column!r} must hold one integer or one string per image; "
            f"found the values {sorted(map(repr, values))[:10]}."
        )
    return [str(value) for value in sorted(values)]


def label_ids(
    dataset: datasets.Dataset | datasets.IterableDataset, column: str, names: list[str]
) -> dict[Any, int]:
    """The column's raw values mapped to class ids (a ``ClassLabel`` already holds the ids)."""
    if isinstance((dataset.features or {}).get(column), datasets.ClassLabel):
        return {index: index for index in range(len(names))}
    values = sorted(dataset.unique(column))
    return {value: index for index, value in enumerate(values)}
