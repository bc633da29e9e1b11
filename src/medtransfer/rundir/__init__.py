"""Run directories: written whole or not at all (RunWriter: staging folder, DONE last, one rename), read back typed
(RunDir), with the file names declared once (files) and the metrics record as a versioned model (metrics).

The tool never deletes what it did not write: an `--out` that holds anything but a finished run is refused before
any work, and a run dir is locked while it is written, so two processes never write the same one.
"""

from medtransfer.rundir.files import (CONFIG_FILE, DONE, ENVIRONMENT_FILE, HISTORY_FILE, LOG_FILE, METRICS_FILE,
                                      PATIENTS_FILE, PREDICTIONS_FILE, WEIGHTS_KINDS, WeightsKind, weights_file)
from medtransfer.rundir.metrics import SCHEMA_VERSION, RunMetrics
from medtransfer.rundir.reader import RunDir, is_complete, parse_metrics
from medtransfer.rundir.writer import RunWriter, check_out, fresh_run_dir, lock_path, remove_stale_leftovers

__all__ = ["CONFIG_FILE", "DONE", "ENVIRONMENT_FILE", "HISTORY_FILE", "LOG_FILE", "METRICS_FILE", "PATIENTS_FILE", "PREDICTIONS_FILE", "SCHEMA_VERSION",
           "WEIGHTS_KINDS", "RunDir", "RunMetrics", "RunWriter", "WeightsKind", "check_out", "fresh_run_dir",
           "is_complete", "lock_path", "parse_metrics", "remove_stale_leftovers", "weights_file"]
