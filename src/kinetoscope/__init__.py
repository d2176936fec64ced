"""kinetoscope — video recognition that takes time seriously.

Train, evaluate, probe and explain spatiotemporal models (ConvLSTM, 3D CNNs, I3D, R(2+1)D, X3D,
TimeSformer, two-stream networks). See docs/architecture.md for the map; the command line is `kinetoscope`.
Heavy modules (torch, lightning) are imported lazily by the subpackages that need them.
"""

__version__ = "0.1.0"
