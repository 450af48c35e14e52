"""Exceptions raised by :mod:`model`; catch :class:`ModelError` for all of them."""


class ModelError(Exception):
    """Root of every error raised by the model package."""


class ArtifactError(ModelError):
    """An artifact directory is missing, incomplete or inconsistent."""


class InferenceError(ModelError):
    """The model failed on a batch, or returned non-finite scores."""
