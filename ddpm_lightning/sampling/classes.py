"""A class-conditional model's classes: ids and names, the null class, the guidance rule."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from ddpm_lightning.errors import InvalidSettingError
from ddpm_lightning.utils.checks import check_at_least


class ClassConditioning:
    """The classes of a model (``num_classes`` None: an unconditional model, which takes none).

    Ids are 0..K-1; id K is the "null" class the UNet learns from dropped labels: unconditional
    samples, and the second branch of classifier-free guidance.
    """

    def __init__(
        self,
        num_classes: int | None,
        id2label: Mapping | None = None,
        class_dropout_prob: float = 0.1,
    ) -> None:
        if not 0.0 <= class_dropout_prob < 1.0:
            raise InvalidSettingError(
                f"class_dropout_prob must be in [0, 1), got {class_dropout_prob}."
            )
        if num_classes is not None:
            check_at_least("num_classes", num_classes, 1)
        if id2label is not None and len(id2label) != num_classes:
            raise InvalidSettingError(
                f"id2label names {len(id2label)} classes but num_classes is {num_classes}."
            )
        self.num_classes = num_classes
        #: While training, the share of labels replaced by the null class.
        self.class_dropout_prob = class_dropout_prob
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

    def names_by_id(self) -> dict[int, str] | None:
        """Every class name by id (None: unconditional), as pipelines save them."""
        if not self.conditional:
            return None
        return {index: self.name(index) for index in range(self.num_classes)}

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

    def label_kwargs(
        self,
        batch: Mapping[str, torch.Tensor],
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """A batch's ``class_labels`` as keyword arguments (none for an unconditional model).

        ``transform`` changes them first (training drops some to the null class).
        """
        if not self.conditional:
            return {}
        if "class_labels" not in batch:
            raise InvalidSettingError(
                f"The model is class-conditional (num_classes={self.num_classes}) but the "
                "batches carry no class_labels: set the data's label_column."
            )
        labels = batch["class_labels"]
        return {"class_labels": transform(labels) if transform else labels}

    def drop_labels(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Replace ``class_dropout_prob`` of the labels by the null class (guidance learns it)."""
        drop = torch.rand(len(labels), generator=generator, device=labels.device)
        return labels.masked_fill(drop < self.class_dropout_prob, self.null_class)

    def conditioning(
        self, ids: list[int] | None, num_images: int, guidance_scale: float, device: torch.device
    ) -> tuple[torch.Tensor | None, float]:
        """The UNet's class labels and the guidance to apply: the guidance rule, in one place.

        Unconditional: no labels, no guidance. Conditional without labels: the null class,
        for which guidance changes nothing (so it is 1). Otherwise the labels and the scale.
        """
        self.check_guidance(guidance_scale)
        if not self.conditional:
            return None, 1.0
        if ids is None:
            null = torch.full((num_images,), self.null_class, dtype=torch.int64, device=device)
            return null, 1.0
        return torch.tensor(ids, dtype=torch.int64, device=device), guidance_scale
