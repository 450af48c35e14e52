"""Exceptions raised by :mod:`consumer`; catch :class:`TriageError` for all of them."""


class TriageError(Exception):
    """Root of every error raised by the consumer package."""


class ConfigError(TriageError):
    """Settings or the routing policy are invalid."""


class BrokerError(TriageError):
    """The embedded broker could not be started or reached."""


class DeliveryError(TriageError):
    """Output could not be delivered to the broker; the batch's offsets were not committed."""
