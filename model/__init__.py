"""Loads trained artifacts and predicts intent and sentiment, batch-first."""

from model.artifacts import Manifest, read_manifest, write_manifest
from model.classifier import TextClassifier, choose_device
from model.errors import ArtifactError, InferenceError, ModelError
from model.predictor import Prediction, TriageModel

__all__ = [
    "ArtifactError",
    "InferenceError",
    "Manifest",
    "ModelError",
    "Prediction",
    "TextClassifier",
    "TriageModel",
    "choose_device",
    "read_manifest",
    "write_manifest",
]
