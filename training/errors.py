"""The training package's exception root: what `triage train`, `crossval` and `evaluate` report as a usage error."""

from __future__ import annotations


class TrainingError(Exception):
    """Training input or options that cannot work; the message says what and how to fix it."""


class TaxonomyError(TrainingError):
    """A labelled data file (a team's own intents) that cannot be trained on, with every problem found."""
