"""Exemplar embeddings -> the contexts guidance uses: blends of several exemplars, and the
unconditional context (the learned vector, optionally steered by a negative exemplar)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def blend_embeddings(embeddings: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """(N, 1, ctx) embeddings -> their weighted mean (1, 1, ctx)."""
    if len(weights) != embeddings.shape[0]:
        raise ValueError(
            f"exemplar weights: {len(weights)} values for {embeddings.shape[0]} exemplars; "
            "give one per exemplar"
        )
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"exemplar weights must add up to more than 0; got {list(weights)}")
    scale = torch.tensor(weights, dtype=embeddings.dtype, device=embeddings.device) / total
    return (embeddings * scale[:, None, None]).sum(0, keepdim=True)


def unconditional_context(
    learned: torch.Tensor, negative: torch.Tensor | None = None, weight: float = 1.0
) -> torch.Tensor:
    """The learned unconditional vector, or its blend with a negative exemplar's embedding:
    weight 1 replaces the vector, 0 ignores the negative exemplar."""
    if negative is None:
        return learned
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"negative_weight must be within 0..1; got {weight}")
    return torch.lerp(learned, negative.to(learned).expand_as(learned), weight)
