"""Reusable nn.Modules: ConvLSTM, SoftPool, temporal gates, frame selection, fusion."""

from kinetoscope.layers.convlstm import ConvLSTM, ConvLSTMCell

__all__ = ["ConvLSTM", "ConvLSTMCell"]
