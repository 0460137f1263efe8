"""The Python API of pnc: one function per command (docs/api.md)."""

from .branches import load_cloned
from .cards import model_card
from .cloning import clone, search
from .deltas import apply_delta, read_delta_info, remove_delta
from .models import evaluate_model, file_info, import_model, list_archs, predict_images, train_model
from .ranking import rank_sources
from .surrogates import compute_surrogate

__all__ = [
    "clone",
    "search",
    "load_cloned",
    "rank_sources",
    "compute_surrogate",
    "apply_delta",
    "read_delta_info",
    "remove_delta",
    "evaluate_model",
    "file_info",
    "model_card",
    "import_model",
    "list_archs",
    "predict_images",
    "train_model",
]
