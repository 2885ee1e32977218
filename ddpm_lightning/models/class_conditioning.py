"""What a class-conditional model knows of its classes: ids and names, the null class, guidance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.utils.checks import check_at_least


class ClassConditioning:
    """The classes of a model (``num_classes`` None: an unconditional model, which takes none).

    Ids are 0..K-1; id K is the "null" class the UNet learns from dropped labels: unconditional
    samples, and the second branch of classifier-free guidance.
    """

    def __init__(self, num_classes: int | None, id2label: Mapping | None = None) -> None:
        if num_classes is not None:
            check_at_least("num_classes", num_classes, 1)
        if id2label is not None and len(id2label) != num_classes:
            raise InvalidSettingError(
                f"id2label names {len(id2label)} classes but num_classes is {num_classes}."
            )
        self.num_classes = num_classes
        #: Names by id (JSON and YAML may give the ids as strings).
        self.id2label = {int(index): str(name) for index, name in (id2label or {}).items()}

    @property
    def conditional(self) -> bool:
        """Whether the UNet takes class labels."""
        return self.num_classes is not None

    @property
    def null_class(self) -> int:
        """The id of "no class"."""
        return self.num_classes

    def name(self, index: int) -> str:
        """The class's name (its id as text when the model has no names)."""
        return self.id2label.get(index, str(index))

    def ids(self, class_labels: Sequence[int | str] | None) -> list[int] | None:
        """Class ids for ids or names; an unknown one is an error that lists the known ones."""
        if class_labels is None:
            return None
        if not self.conditional:
            raise InvalidSettingError(
                "This model is unconditional (num_classes is None): it takes no class_labels."
            )
        by_name = {name: index for index, name in self.id2label.items()}
        ids = []
        for label in class_labels:
            if isinstance(label, str) and label not in by_name and label.isdigit():
                label = int(label)  # an id typed on the command line
            index = by_name.get(label) if isinstance(label, str) else label
            if not isinstance(index, int) or not 0 <= index < self.num_classes:
                known = [f"{i}: {name}" for i, name in self.id2label.items()]
                known = known or list(range(self.num_classes))
                raise InvalidSettingError(f"Unknown class {label!r}; the model knows {known}.")
            ids.append(index)
        return ids

    def check_guidance(self, guidance_scale: float) -> float:
        """Return ``guidance_scale`` if the model can use it, else raise."""
        if guidance_scale < 0:
            raise InvalidSettingError(f"guidance_scale must be 0 or more, got {guidance_scale}.")
        if guidance_scale != 1.0 and not self.conditional:
            raise InvalidSettingError(
                f"guidance_scale {guidance_scale} needs a class-conditional model (num_classes); "
                "this one is unconditional: leave guidance_scale at 1."
            )
        return guidance_scale
