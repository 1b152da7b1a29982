"""Model, adapter and ensemble folders on disk, and loading any of them as a scorer."""

from e2urec.checkpoints.folders import (
    META_FILE,
    CheckpointError,
    check_model_folder,
    library_versions,
    load_model,
    read_meta,
    save_ensemble,
    save_model,
)
from e2urec.checkpoints.scorers import (
    AttentionAggregator,
    EnsembleScorer,
    ModelScorer,
    Scorer,
    load_scorer,
)

__all__ = ["META_FILE", "AttentionAggregator", "CheckpointError", "EnsembleScorer",
           "ModelScorer", "Scorer", "check_model_folder", "library_versions", "load_model",
           "load_scorer", "read_meta", "save_ensemble", "save_model"]
