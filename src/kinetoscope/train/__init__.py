"""Training: LightningModule, Trainer construction, callbacks, resume. Import is light; Lightning
is imported when ``fit`` runs."""

from kinetoscope.train.fit import RunDirError, fit, prepare_run_dir

__all__ = ["RunDirError", "fit", "prepare_run_dir"]
