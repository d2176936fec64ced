"""Metrics, clip->video aggregation, protocols (cross-domain, reversal), statistics, profiling."""

from kinetoscope.evaluate.aggregate import aggregate_videos
from kinetoscope.evaluate.metrics import classification_metrics, robustness_ratio

__all__ = ["aggregate_videos", "classification_metrics", "robustness_ratio", "predict_run"]


def predict_run(*args, **kwargs):
    """See ``kinetoscope.evaluate.run.predict_run``."""
    from kinetoscope.evaluate.run import predict_run as _predict_run

    return _predict_run(*args, **kwargs)
