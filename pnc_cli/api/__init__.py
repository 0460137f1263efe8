"""The Python API of pnc: one function per command (docs/api.md)."""

from .models import evaluate_model, file_info, import_model, list_archs, predict_images, train_model

__all__ = ["evaluate_model", "file_info", "import_model", "list_archs", "predict_images", "train_model"]
