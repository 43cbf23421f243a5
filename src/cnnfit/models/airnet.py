"""`airnet`: the airbench94 network (Keller Jordan's airbench: 94% on CIFAR-10 in seconds on one A100), written
for the zoo.

fastnet (models/small.py) keeps airbench's shape and drops its tricks; airnet keeps the tricks, because each one
buys speed in a short, high-learning-rate run:
- a fixed 2x2 patch-whitening conv, set from the training data (`init_from_data`): the first layer starts out
  decorrelating pixels instead of spending the first epochs learning to; only its bias trains, and, as in
  airbench, only for the first `whiten_bias_epochs` epochs (`set_epoch`);
- dirac (identity) init of each 3x3 conv's first filters: every group starts as a near pass-through, so the
  deep net trains like a shallow one at first and the signal survives the first high-LR steps;
- BatchNorm without a trainable scale (shift only), eps 1e-12, momentum 0.4: one parameter fewer per channel
  for the high learning rate to swing (the next conv's weights carry the scale), and running statistics that
  forget fast keep up with weights that change fast in a ~10-epoch run;
- logits scaled by 1/9: small initial logits keep the early softmax soft, so a large learning rate is stable.

Layout at 32 px: whiten 2x2 (3 -> 24 ch, 31 px) - group64 (15 px) - group256 (7 px) - group256 (3 px) - global
max pool - linear head without bias - x 1/9. Each group is conv3x3, maxpool 2, BN, act, conv3x3, BN, act.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnfit.models.layers import make_act, width_of
from cnnfit.models.registry import register

WHITEN_EPS = 5e-4  # added to each patch-covariance eigenvalue: caps the gain of near-empty directions at ~45x
WHITEN_CHUNK = 512  # images per covariance chunk: bounds the patch copy (512 x 31 x 31 x 12 fp32 = 24 MB)


class ShiftBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d with a trainable shift and no scale (fixed at 1): `weight` is None, `bias` a parameter.
    Still a torch _BatchNorm, so code that finds norm layers by type (fine-tuning) finds it; but
    SyncBatchNorm.convert_sync_batchnorm would drop the bias (it copies affine=True parameters only)."""

    def __init__(self, num_features: int, *, eps: float = 1e-12, momentum: float = 0.4) -> None:
        # momentum 0.4 in torch's convention (new = 0.6 old + 0.4 batch), airbench's "0.6" in its own
        super().__init__(num_features, eps=eps, momentum=momentum, affine=False)
        self.bias = nn.Parameter(torch.zeros(num_features))  # replaces affine=False's None; weight stays None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalize without affine, then shift. Measured with torch 2.11 on an H100: F.batch_norm(weight=None,
        # bias=b) fails in its eager CUDA backward ("tensor does not have a device"), and under torch.compile with
        # bf16 autocast both it and a shift by b cast to bf16 gave NaN gradients; the fp32 shift below gave none
        # (compiled, it fuses with the normalization, so the fp32 result costs no extra pass)
        self._check_input_dim(x)
        if self.training:
            self.num_batches_tracked.add_(1)
        x = F.batch_norm(x, self.running_mean, self.running_var, None, None, self.training, self.momentum, self.eps)
        return x + self.bias.view(-1, 1, 1)  # (B, C, H, W), promoted to the bias's dtype (fp32 under autocast)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, shift only"


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)  # bias is cancelled by the BN after it
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:cin])  # first min(cin, cout) filters pass their input channel through
    return conv


class AirGroup(nn.Module):
    """conv, 2x2 max-pool, BN, act, conv, BN, act; pooling right after the first conv runs the rest on a quarter
    of the pixels."""

    def __init__(self, cin: int, cout: int, act: str) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = ShiftBatchNorm(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = ShiftBatchNorm(cout)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.pool(self.conv1(x))))  # (B, cout, H/2, W/2)
        return self.act(self.bn2(self.conv2(x)))


class Whiten(nn.Module):
    """A 2x2 valid conv, in_chans -> 2 * in_chans * 4 filters, whose weight is a buffer (set by data, never
    trained, saved in the state_dict) and whose bias is a parameter."""

    def __init__(self, in_chans: int) -> None:
        super().__init__()
        k = in_chans * 4  # values in a 2x2 patch
        eye = torch.eye(k).reshape(k, in_chans, 2, 2)  # filter i picks patch value i: the whitener of white data
        self.register_buffer("weight", torch.cat([eye, -eye]))  # (2k, C, 2, 2)
        self.bias = nn.Parameter(torch.zeros(2 * k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias)  # (B, 2k, H-1, W-1)

    @torch.no_grad()
    def fit(self, x: torch.Tensor, eps: float = WHITEN_EPS) -> None:
        """Set the filters to the eigenvectors of the 2x2 patch covariance of `x` (N, C, H, W), largest first,
        each scaled by 1/sqrt(eigenvalue + eps), followed by their negations."""
        c = x.shape[1]
        k = c * 4
        cov = torch.zeros(k, k, dtype=torch.float32, device=x.device)
        count = 0
        for chunk in x.split(WHITEN_CHUNK):
            patches = chunk.float().unfold(2, 2, 1).unfold(3, 2, 1)  # (n, C, H-1, W-1, 2, 2)
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, k)  # (n*(H-1)*(W-1), C*4), as a filter's (C, 2, 2)
            cov += patches.T @ patches  # (k, k); no mean subtraction, as the conv sees the raw values
            count += len(patches)
        eigvals, eigvecs = torch.linalg.eigh(cov / count)  # ascending; eigvecs[:, i] is the i-th eigenvector
        eigvals, eigvecs = eigvals.flip(0), eigvecs.flip(1)  # descending: the strongest direction first
        filters = eigvecs.T / torch.sqrt(eigvals.clamp_min(0) + eps)[:, None]  # (k, k): row i = v_i / sqrt(l_i + eps)
        filters = filters.reshape(k, c, 2, 2)  # (k, C, 2, 2)
        self.weight.copy_(torch.cat([filters, -filters]))  # (2k, C, 2, 2); copy_ keeps the buffer's device and dtype


class AirNet(nn.Module):
    """whiten (2x2) - group64 - group256 - group256 - global max pool - head, logits x 1/9."""

    tv_renames: dict[str, str] | None = None  # no torchvision counterpart
    stage_names: tuple[str, ...] = ("whiten", "block1", "block2", "block3")

    def __init__(self, *, num_classes: int, in_chans: int, width: float = 1.0, act: str = "gelu",
                 whiten_bias_epochs: int = 3) -> None:
        super().__init__()
        self.whiten_bias_epochs = whiten_bias_epochs  # epochs (0-based, <) in which whiten.bias trains
        c0 = 2 * in_chans * 4  # 24 for RGB: each 2x2 patch direction and its negation
        c1, c2, c3 = (width_of(c, width) for c in (64, 256, 256))
        self.whiten = Whiten(in_chans)
        self.act = make_act(act)
        self.block1 = AirGroup(c0, c1, act)
        self.block2 = AirGroup(c1, c2, act)
        self.block3 = AirGroup(c2, c3, act)
        self.head = nn.Linear(c3, num_classes, bias=False)
        self.scale = 1 / 9  # fixed logit temperature: soft early softmax at airbench's high learning rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.whiten(x))  # (B, 8C, H-1, W-1): 31 px at 32
        x = self.block1(x)  # (B, 64, (H-1)/2, ...): 15 px
        x = self.block2(x)  # (B, 256, (H-1)/4, ...): 7 px
        x = self.block3(x)  # (B, 256, (H-1)/8, ...): 3 px
        x = x.amax(dim=(2, 3))  # (B, 256): airbench's MaxPool2d(3) at 32 px, any size here
        return self.head(x) * self.scale  # (B, num_classes)

    def init_from_data(self, x: torch.Tensor) -> None:
        """Whiten from `x`, a float (N, C, H, W) batch of normalized, unaugmented training images on the model's
        device (a few thousand suffice: 5000 CIFAR images give ~4.8M patches). Call before torch.compile."""
        self.whiten.fit(x)

    def set_epoch(self, epoch: int) -> None:
        """Train whiten.bias in epochs 0 .. whiten_bias_epochs - 1 and freeze it after; an earlier epoch (resume)
        unfreezes it again. A frozen bias also loses its grad, so the optimizer skips it (no momentum or decay)."""
        trains = epoch < self.whiten_bias_epochs
        self.whiten.bias.requires_grad_(trains)
        if not trains:
            self.whiten.bias.grad = None


@register
def airnet(*, num_classes: int, in_chans: int = 3, width: float = 1.0, act: str = "gelu", whiten_bias_epochs: int = 3,
           imgsz: int | None = None) -> nn.Module:
    # width: channel multiplier of the 64/256/256 groups; whiten_bias_epochs: epochs the whitening bias trains;
    # imgsz (px): checked against airnet.min_size by models.create, the layout is the same at every size
    return AirNet(num_classes=num_classes, in_chans=in_chans, width=width, act=act,
                  whiten_bias_epochs=whiten_bias_epochs)


airnet.min_size = 9  # px: the 2x2 whitening conv leaves 8, and three 2x2 pools take 8 to 1x1
