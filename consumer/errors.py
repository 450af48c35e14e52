"""Exceptions raised by :mod:`consumer`; catch :class:`TriageError` for all of them."""


class TriageError(Exception):
    """Root of every error raised by the consumer package."""


class ConfigError(TriageError):
    """Settings or the routing policy are invalid."""


class BrokerError(TriageError):
    """The embedded broker could not be started or reached."""


class DeliveryError(TriageError):
    """Output could not be delivered to the broker; the batch's offsets were not committed."""


class PublishRefused(TriageError):
    """The broker refuses the service's output for a reason no retry cures (unknown topic, authorisation,
    fenced producer, a pointer larger than the topic takes); the batch's offsets were not committed."""


class TransactionUnknown(TriageError):
    """A transaction's commit got no answer: it may have been committed. The service stops rather than
    replay the batch (which could duplicate it); the next start resolves the transaction."""


class AuthenticationError(BrokerError):
    """The broker refused this client's credentials, or the TLS handshake failed: no retry cures it."""
