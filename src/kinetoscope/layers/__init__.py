"""Reusable nn.Modules: ConvLSTM, SoftPool, temporal gates, frame selection, fusion."""

from kinetoscope.layers.class_reg import ClassRegularisation  # Stergiou 2021 ch. 6
from kinetoscope.layers.conv2plus1d import Conv2Plus1D  # Tran et al. 2018 §3.5
from kinetoscope.layers.convlstm import ConvLSTM, ConvLSTMCell, reference_convlstm  # Broomé 2022 §4
from kinetoscope.layers.frame_select import select_frames, triplet_cosine_scores  # Stergiou 2021 §5.3
from kinetoscope.layers.framewise import Framewise, FramewiseSequential  # Broomé 2022 time-distributed layers
from kinetoscope.layers.gates import SRTG, CycleConsistencyGate, SqueezeRecursion  # Stergiou 2021 §4.3
from kinetoscope.layers.lstm import LSTM  # Broomé 2022 §3.2 VGG+LSTM
from kinetoscope.layers.mtconv import MTConv  # Stergiou 2021 §5.3
from kinetoscope.layers.softpool import (  # Stergiou 2021 Eq. 5.5
    SoftPool1d,
    SoftPool2d,
    SoftPool3d,
    soft_pool1d,
    soft_pool2d,
    soft_pool3d,
)
from kinetoscope.layers.twostream import (  # Feichtenhofer 2017 ch. 3-7
    IdentityTemporalConv,
    SpatialFusion,
    SubBatchNorm3d,
    bilinear_pool,
    inflate_first_conv,
    inflate_temporal,
    interleave_channels,
    pool3d,
    stack_flow,
    use_sub_batch_norm,
)

__all__ = [
    "ClassRegularisation",
    "Conv2Plus1D",
    "ConvLSTM",
    "ConvLSTMCell",
    "CycleConsistencyGate",
    "Framewise",
    "FramewiseSequential",
    "IdentityTemporalConv",
    "LSTM",
    "MTConv",
    "SRTG",
    "SoftPool1d",
    "SoftPool2d",
    "SoftPool3d",
    "SpatialFusion",
    "SqueezeRecursion",
    "SubBatchNorm3d",
    "bilinear_pool",
    "inflate_first_conv",
    "inflate_temporal",
    "interleave_channels",
    "pool3d",
    "reference_convlstm",
    "select_frames",
    "soft_pool1d",
    "soft_pool2d",
    "soft_pool3d",
    "stack_flow",
    "triplet_cosine_scores",
    "use_sub_batch_norm",
]
