"""Weight initialisation shared by the 3D CNNs built in the layout of torchvision's video ResNets and
PyTorchVideo's X3D (``init_net_weights``): both use the same scheme."""

from __future__ import annotations

from torch import nn


def he_fan_out_init_(model: nn.Module) -> None:
    """In place: He normal (fan-out, ReLU gain) for every ``Conv3d``, unit weight and zero bias for every
    ``BatchNorm3d``, ``N(0, 0.01)`` weights for every ``Linear``; conv and linear biases zeroed."""
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
