"""Lightning's model summary without its FLOPs column, which reads 0 for this module."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary import get_human_readable_count


class ParameterSummary(ModelSummary):
    """The layers, their parameters and modes, and the totals; no FLOPs (no example input)."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int = 0,
        **summarize_kwargs: Any,
    ) -> None:
        """Log the summary table and the parameter totals."""
        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        widths = [max(len(name), *map(len, values)) for name, values in columns]
        header = " | ".join(name.ljust(width) for (name, _), width in zip(columns, widths))
        rows = zip(*(values for _, values in columns))
        lines = [header, "-" * len(header)]
        lines += [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
        trainable = get_human_readable_count(trainable_parameters)
        lines.append(
            f"{trainable} trainable parameters of {get_human_readable_count(total_parameters)} "
            f"({model_size:.1f} MB), {total_training_modes['train']} modules in train mode, "
            f"{total_training_modes['eval']} in eval mode"
        )
        rank_zero_info("\n".join(lines))
