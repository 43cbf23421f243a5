"""Which parameters form the backbone and which the head, and freezing the first stages of the backbone."""

from __future__ import annotations

import torch.nn as nn

from cnnfit.errors import CnnfitError


def stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Backbone stages, input to output: the model's own `stage_names`, else its top-level children but the head."""
    names = getattr(model, "stage_names", None)
    if names is None:
        return [(n, m) for n, m in model.named_children() if n != "head" and not n.startswith("aux")]
    return [(n, model.get_submodule(n)) for n in names]


def backbone_ids(model: nn.Module) -> set[int]:
    return {id(p) for _, stage in stages(model) for p in stage.parameters()}


def resolve_freeze(model: nn.Module, freeze: str | int | None) -> list[str]:
    """`backbone` -> every stage; N -> the first N. Refuses N beyond the model's stage count, naming it."""
    if freeze is None:
        return []
    all_stages = [n for n, _ in stages(model)]
    if not all_stages:
        raise CnnfitError(f"{type(model).__name__} has no backbone stages to freeze (no stage_names, no children "
                          "besides the head)")
    if freeze == "backbone":
        return all_stages
    if not 1 <= int(freeze) <= len(all_stages):
        raise CnnfitError(f"freeze={freeze} is out of range: this model has {len(all_stages)} stages "
                          f"({', '.join(all_stages)}); use 1..{len(all_stages)} or freeze=backbone")
    return all_stages[: int(freeze)]


def set_frozen(model: nn.Module, names: list[str], frozen: bool) -> None:
    for name in names:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(not frozen)


def norms_to_eval(model: nn.Module, names: list[str]) -> None:
    """Batch norm in a frozen stage keeps its running statistics: in train mode it would overwrite the
    pretrained ones with those of a few small batches, and the frozen filters would see shifted inputs."""
    for name in names:
        for m in model.get_submodule(name).modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
