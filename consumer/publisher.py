"""Publishing a batch's output records until the broker has acknowledged every one.

Three kinds of broker answer are told apart:

- a refusal of one *record* (too large, invalid): that record steps back to a fallback (its dead letter, then
  a pointer to the source offset) and the batch goes on;
- a *permanent* refusal of the stream (unknown topic, not authorised, fatal producer error): retrying cannot
  cure it, so :class:`PublishRefused` stops the service with the reason, the batch uncommitted;
- anything else (broker away, timeout): :class:`DeliveryError`, the runner rewinds and retries with backoff.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from consumer.errors import DeliveryError, PublishRefused, TransactionUnknown, TriageError
from consumer.processor import OutputRecord, Processor, Rejection

# Broker answers that concern one record, not the connection: retrying the same record cannot succeed.
RECORD_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
    }
)
# Answers about the stream itself that no retry cures: the operator has to act (create the topic, grant the ACL).
PERMANENT_ERRORS = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.POLICY_VIOLATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
    }
)
OMITTED_HEADER = "triage.value.omitted"
#: a pointer keeps the input's key (per-key order on the DLQ) unless the key alone is larger than this
POINTER_KEY_MAX_BYTES = 4096
#: bytes a record costs beyond its key, value and headers (record and batch framing), for the size check
RECORD_OVERHEAD_BYTES = 512


def record_size(record: OutputRecord) -> int:
    """What a record weighs against ``message.max.bytes``: key, value, header names and values, framing."""
    headers = sum(len(k.encode()) + len(v or b"") for k, v in record.headers)
    return len(record.key or b"") + len(record.value or b"") + headers + RECORD_OVERHEAD_BYTES


def permanent(error: KafkaError) -> bool:
    return error.fatal() or error.code() in PERMANENT_ERRORS


class _Refused(Exception):
    """Records the broker refused (too large...) inside a transaction, which must now be aborted."""

    def __init__(self, refusals: list[tuple[int, int]]):
        super().__init__(f"{len(refusals)} records refused")
        self.refusals = refusals  # (index in the batch, error code)


def _omitted(record: OutputRecord) -> bool:
    return any(k == OMITTED_HEADER for k, _ in record.headers)


class Publisher:
    """Produces output records and waits until the broker has acknowledged each one.

    With ``transactional`` (exactly-once mode) a batch's records and its input offsets are committed in
    one Kafka transaction (``send_offsets_to_transaction``), or not at all.

    Records larger than ``max_message_bytes`` (the producer's ``message.max.bytes``, at most the topics'
    limit) step back to their fallback before they are sent, so per-key order holds on that path too.
    """

    def __init__(
        self,
        producer_factory: Callable[[], Producer],
        processor: Processor,
        timeout_s: float,
        transactional: bool = False,
        max_message_bytes: int | None = None,
    ):
        self.producer_factory = producer_factory
        self.processor = processor
        self.timeout_s = timeout_s
        self.transactional = transactional
        self.max_message_bytes = max_message_bytes
        self.producer: Producer | None = self._new_producer()

    def _new_producer(self) -> Producer:
        producer = self.producer_factory()
        if self.transactional:
            try:
                producer.init_transactions(self.timeout_s)
            except KafkaException as exc:
                if permanent(exc.args[0]):
                    raise PublishRefused(
                        f"cannot start transactions: {exc.args[0].name()}: {exc.args[0].str()}"
                    ) from exc
                raise
        return producer

    def reset(self) -> None:
        """Replace the producer after a failed delivery: a restarted broker may no longer know its
        idempotence state (producer id, sequence numbers), and the old one would keep timing out.
        When the broker is still away the new producer is created by the next publish instead."""
        old, self.producer = self.producer, None
        if old is not None:
            old.purge(in_queue=True, in_flight=False)
            old.flush(0)
        try:
            self.producer = self._new_producer()
        except KafkaException:
            self.producer = None

    def close(self, timeout_s: float) -> int:
        return self.producer.flush(timeout_s) if self.producer is not None else 0

    def _live(self) -> Producer:
        """The producer of the publish in progress: :meth:`publish` makes one where :meth:`reset` left none."""
        if self.producer is None:
            raise DeliveryError("no producer")
        return self.producer

    def publish(
        self,
        records: Sequence[OutputRecord],
        offsets: list[TopicPartition] | None = None,
        group_metadata: object | None = None,
    ) -> list[OutputRecord]:
        """Publish all records; return the records as finally published (some may become dead letters).

        Raises :class:`DeliveryError` when anything could not be delivered for a reason that a retry
        may cure (broker down, timeout); nothing of the batch may be committed then. Raises
        :class:`PublishRefused` for a reason no retry cures, :class:`TransactionUnknown` when a transaction's
        commit had no answer. In transactional mode ``offsets`` are committed for ``group_metadata``'s group
        inside the same transaction.
        """
        if self.producer is None:
            try:
                self.producer = self._new_producer()
            except KafkaException as exc:
                raise DeliveryError(f"no producer: {exc.args[0].name()}") from exc
        producer = self.producer
        outgoing = [self._sized(record) for record in records]  # records are replaced in place by their fallbacks
        alone: set[int] = set()  # indexes sent one at a time from now on
        if not self.transactional:
            self._deliver(outgoing, alone)
            return outgoing
        if offsets is None:
            raise TriageError("a transactional publish needs the batch's offsets")
        # A record the broker refuses leaves the transaction abortable: nothing more can join it. So abort and
        # run the batch again, with the refused records sent one at a time (a refusal covers a whole record
        # batch, neighbours included) and a record refused on its own replaced by its fallback. Each refusal
        # moves one record a step (alone, dead letter, pointer, PublishRefused), so the loop ends.
        for _attempt in range(3 * len(outgoing) + 1):
            try:
                producer.begin_transaction()
                self._deliver(outgoing, alone)
                self._retrying(lambda: producer.send_offsets_to_transaction(offsets, group_metadata, self.timeout_s))
            except _Refused as refused:
                self._abort()
                self._step_back(outgoing, alone, refused.refusals)
                continue
            except PublishRefused:
                self._abort()
                raise
            except (KafkaException, DeliveryError) as exc:
                self._abort()
                if isinstance(exc, KafkaException) and permanent(exc.args[0]):
                    raise PublishRefused(f"transaction refused: {exc.args[0].name()}: {exc.args[0].str()}") from exc
                raise DeliveryError(f"transaction failed: {exc}") from exc
            self._commit_transaction()
            return outgoing
        raise DeliveryError("the broker kept refusing this batch's records")  # not reached: see the bound above

    def _retrying(self, call: Callable[[], None]) -> None:
        """Run a transactional call again while the client says a retry may succeed, within the timeout."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                call()
                return
            except KafkaException as exc:
                if not exc.args[0].retriable() or time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def _commit_transaction(self) -> None:
        """Commit; an abortable failure aborts (the batch is retried), an unknown outcome is never taken for
        an abort: replaying the batch could duplicate what the broker did commit."""
        try:
            self._retrying(lambda: self._live().commit_transaction(self.timeout_s))
        except KafkaException as exc:
            error = exc.args[0]
            if error.txn_requires_abort():
                self._abort()
                raise DeliveryError(f"transaction aborted: {error.name()}") from exc
            if permanent(error):
                raise PublishRefused(f"transaction commit refused: {error.name()}: {error.str()}") from exc
            # Retriable past the timeout, or no answer: the commit may have happened. The service stops; the
            # next start's init_transactions with the same transactional.id completes or aborts it.
            raise TransactionUnknown(
                f"no answer to the transaction commit within {self.timeout_s:.0f}s ({error.name()})"
            ) from exc

    def _abort(self) -> None:
        try:
            self._live().abort_transaction(self.timeout_s)
        except KafkaException:
            pass  # reset() replaces the producer

    def _sized(self, record: OutputRecord) -> OutputRecord:
        """The record, or the fallback it steps down to until it fits ``max_message_bytes``."""
        while self.max_message_bytes is not None and record_size(record) > self.max_message_bytes:
            record = self._fallback(record, KafkaError.MSG_SIZE_TOO_LARGE)
        return record

    def _deliver(self, outgoing: list[OutputRecord], alone: set[int]) -> None:
        """Send ``outgoing`` in order, consecutive records together and each of ``alone`` on its own, until the
        broker has acknowledged every one. At the first refusal the pass stops: the refused records step back
        (:meth:`_step_back`) and are sent again *before* anything after them, so a refused record's dead letter
        keeps its place among the records of its key."""
        pending = list(range(len(outgoing)))
        while pending:
            segments: list[list[int]] = []
            for index in pending:
                if index in alone or not segments or segments[-1][-1] in alone:
                    segments.append([index])
                else:
                    segments[-1].append(index)
            for number, segment in enumerate(segments):
                refusals = self._send(outgoing, segment)
                if refusals:
                    self._step_back(outgoing, alone, refusals)
                    refused = {index for index, _ in refusals}
                    later = [i for s in segments[number + 1 :] for i in s]
                    pending = sorted(refused) + later
                    break
            else:
                pending = []

    def _step_back(self, outgoing: list[OutputRecord], alone: set[int], refusals: Sequence[tuple[int, int]]) -> None:
        """A record refused among others is sent alone from now on; one refused alone gets its fallback."""
        for index, code in dict(refusals).items():
            if index in alone:
                outgoing[index] = self._fallback(outgoing[index], code)
            else:
                alone.add(index)

    def _send(self, outgoing: list[OutputRecord], indexes: Sequence[int]) -> list[tuple[int, int]]:
        """Produce ``outgoing[i]`` for each index and wait for the delivery reports: (index, error code) of the
        records the broker refused as records. In a transaction a refusal raises :class:`_Refused` at once: the
        transaction can take nothing more, so waiting for the other records would only run into the timeout."""
        refusals: list[tuple[int, int]] = []
        transient: list[KafkaError] = []
        refused_for_good: list[tuple[str, KafkaError]] = []
        stopped: KafkaException | None = None

        def on_delivery(index: int) -> Callable[[KafkaError | None, Message], None]:
            def callback(err: KafkaError | None, _msg: Message) -> None:
                if err is None:
                    return
                if err.code() in RECORD_ERRORS:
                    refusals.append((index, err.code()))
                elif permanent(err):
                    refused_for_good.append((outgoing[index].topic, err))
                else:
                    transient.append(err)

            return callback

        for index in indexes:
            try:
                self._produce(outgoing, index, on_delivery(index))
            except KafkaException as exc:  # the connection, or a transaction an earlier refusal made abortable
                stopped = exc
                break
        deadline = time.monotonic() + self.timeout_s
        remaining = self._live().flush(0) if indexes else 0
        while (
            remaining and not (self.transactional and refusals) and not refused_for_good and time.monotonic() < deadline
        ):
            remaining = self._live().flush(min(0.1, max(0.0, deadline - time.monotonic())))
        if refused_for_good:
            topic, error = refused_for_good[0]
            raise PublishRefused(f"the broker refuses records for {topic!r}: {error.name()}: {error.str()}")
        if self.transactional and refusals:
            raise _Refused(refusals)
        if stopped is not None:
            error = stopped.args[0]
            if permanent(error):
                raise PublishRefused(f"cannot produce: {error.name()}: {error.str()}") from stopped
            raise DeliveryError(f"cannot produce: {error.name()}")
        if remaining:
            raise DeliveryError(f"{remaining} output records not acknowledged within {self.timeout_s:.0f}s")
        if transient:
            raise DeliveryError(f"{len(transient)} output records failed: {transient[0].name()}")
        return refusals

    def _produce(
        self, outgoing: list[OutputRecord], index: int, callback: Callable[[KafkaError | None, Message], None]
    ) -> None:
        producer = self._live()
        while True:
            record = outgoing[index]
            try:
                producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    # the stub takes a list of (str, str | bytes | None), invariant, though produce only reads it
                    headers=record.headers,  # type: ignore[arg-type]
                    on_delivery=callback,
                )
                return
            except BufferError:  # local queue full: serve delivery reports, then try again
                producer.poll(0.05)
            except KafkaException as exc:
                code = exc.args[0].code()
                if code not in RECORD_ERRORS:
                    raise
                # refused before sending (the client checks the size itself): the transaction, if any, is intact
                outgoing[index] = self._fallback(record, code)

    def _fallback(self, record: OutputRecord, code: int) -> OutputRecord:
        """What to publish instead of a refused record: the input's dead letter; for a refused dead letter, a
        pointer to the source offset (no value, none of the input's headers); after that, nothing."""
        name = KafkaError(code).name()
        if record.route == "dlq" and _omitted(record):
            raise PublishRefused(
                f"the broker refuses even a dead letter without its value ({record_size(record)} "
                f"bytes): {name}; raise the topic's max.message.bytes"
            )
        if record.route == "dlq":
            return self._pointer(record)
        rejection = Rejection("publish", "OutputRejected", f"broker refused the enriched event: {name}")
        return self.processor.dead_letter(record.source, rejection)

    @staticmethod
    def _pointer(record: OutputRecord) -> OutputRecord:
        """The dead letter reduced to its ``triage.*`` headers: where the input is (topic, partition, offset) and
        why it failed. The input's own headers go too: they may be what made it too large."""
        omitted = [b"value", b"headers"]
        key = record.key
        if key is not None and len(key) > POINTER_KEY_MAX_BYTES:
            key, omitted = None, [*omitted, b"key"]
        headers = [(k, v) for k, v in record.headers if k.startswith("triage.") and k != OMITTED_HEADER]
        headers.append((OMITTED_HEADER, b",".join(omitted)))
        return OutputRecord(record.topic, key, None, headers, record.source, "dlq", error=record.error)
