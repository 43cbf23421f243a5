"""Training the head alone on a frozen backbone's features: what the head receives, computed once, and a model
that takes them as its input."""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn as nn

from cnnfit.engine.loop import infer


@torch.no_grad()
def head_inputs(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                amp_dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """What `model.head` receives for every batch, float32 on CPU, (N, F), in eval mode; None when the model has no
    `head`, or its output is not head(features) of flat features (it post-processes them), so its head cannot
    train on them alone."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        return None
    seen: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, args, _out: seen.append(args[0].float().cpu()))
    try:
        outputs, _ = infer(model, batches, amp_dtype=amp_dtype)
    finally:
        hook.remove()
    if not seen or seen[0].ndim != 2 or sum(len(f) for f in seen) != len(outputs):
        return None
    features = torch.cat(seen)  # (N, F)
    was_training = head.training
    head.eval()
    again = head(features[:8].to(next(head.parameters()).device)).float().cpu()
    head.train(was_training)
    return features if torch.allclose(again, outputs[:8], atol=0.05, rtol=0.05) else None  # bf16 rounding


class OnFeatures(nn.Module):
    """A model whose forward takes its head's input: the head trains on cached features of a frozen backbone, at a
    matrix product per step. Its state_dict is the whole model's, so checkpoints load as any other run's."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.head(features)  # (B, F) -> (B, classes)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return self.model.load_state_dict(state_dict, strict=strict, assign=assign)
