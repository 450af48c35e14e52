"""The ``triage`` command line: one argparse tree. Each command parses its flags and calls one function of the
service (consumer/), the trainer (training/) or the dev tools (devtools/), imported when the command runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from triage.training_commands import add_commands

if TYPE_CHECKING:
    from consumer.settings import Settings

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

# (flag, Settings field, type, help) of `triage run`; every one also reads TRIAGE_<FIELD> from the environment.
RUN_OPTIONS: list[tuple[str, str, type, str]] = [
    ("--bootstrap-servers", "bootstrap_servers", str, "Kafka bootstrap servers H:P[,H:P] (127.0.0.1:9092)"),
    ("--group-id", "group_id", str, "consumer group id (inquiry-triage)"),
    ("--model-dir", "model_dir", Path, "directory holding intent/ and sentiment/ artifacts (artifacts)"),
    ("--input-topic", "input_topic", str, "topic of inquiries (inquiries)"),
    ("--auto-topic", "auto_topic", str, "topic for bot-answerable inquiries (inquiries.auto_response)"),
    ("--human-topic", "human_topic", str, "topic for inquiries needing a person (inquiries.human_agent)"),
    ("--dlq-topic", "dlq_topic", str, "dead-letter topic for bad records (inquiries.dlq)"),
    ("--policy", "policy_file", Path, "routing policy TOML file (built-in default)"),
    ("--batch-size", "batch_size", int, "max messages per micro-batch (256)"),
    ("--batch-max-wait-ms", "batch_max_wait_ms", int, "max wait for a started batch to fill, ms (10)"),
    ("--max-text-chars", "max_text_chars", int, "longer inquiry texts go to the DLQ (10000)"),
    ("--device", "device", str, "auto | cpu | cuda (auto)"),
    ("--backend", "backend", str, "auto | torch | onnx (auto: the artifacts' int8 ONNX export on CPU when present)"),
    ("--topic-partitions", "topic_partitions", int, "partitions of topics created at start (3)"),
    ("--session-timeout-ms", "session_timeout_ms", int, "consumer group session timeout (45000)"),
    ("--max-poll-interval-ms", "max_poll_interval_ms", int, "max time between polls (300000)"),
    ("--processing-guarantee", "processing_guarantee", str, "at_least_once | exactly_once (at_least_once)"),
    ("--security-protocol", "security_protocol", str, "PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL"),
    ("--sasl-mechanism", "sasl_mechanism", str, "e.g. PLAIN, SCRAM-SHA-512"),
    ("--sasl-username", "sasl_username", str, "SASL user (password: TRIAGE_SASL_PASSWORD)"),
    ("--ssl-ca-location", "ssl_ca_location", str, "CA certificate file"),
    ("--metrics-port", "metrics_port", int, "port of /metrics, /healthz, /readyz; 0 any free port, -1 off (9464)"),
    ("--reload-interval-s", "reload_interval_s", float, "seconds between checks for new models; 0 off (10)"),
    ("--log-format", "log_format", str, "auto | json | console (auto: console on a TTY)"),
    ("--log-level", "log_level", str, "debug | info | warning | error (info)"),
]


#: the broker security options every command that talks to Kafka takes
CONNECTION = ("security_protocol", "sasl_mechanism", "sasl_username", "ssl_ca_location")


def add_run_options(parser: argparse.ArgumentParser, *fields: str) -> None:
    """``triage run``'s flags named by ``fields`` (all of them without), each defaulting to its setting."""
    for flag, field, kind, text in RUN_OPTIONS:
        if not fields or field in fields:
            parser.add_argument(flag, dest=field, type=kind, default=None, help=text)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        (getattr(args, "help_of", None) or parser).print_help()
        return 2
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clear error instead of a traceback for known failures
        from pydantic import ValidationError
        from pydantic_settings import SettingsError

        from consumer.errors import TriageError
        from model.errors import ModelError

        if isinstance(exc, (ValidationError, SettingsError)):
            print(f"triage: invalid settings: {settings_error_text(exc)}", file=sys.stderr)
            return 2
        if isinstance(exc, (TriageError, ModelError)):
            print(f"triage: error: {exc}", file=sys.stderr)
            return 1
        from confluent_kafka import KafkaException

        if isinstance(exc, KafkaException):  # e.g. an unknown librdkafka property
            error = exc.args[0] if exc.args else exc
            print(f"triage: error: Kafka client: {getattr(error, 'str', lambda: error)()}", file=sys.stderr)
            return 1
        raise


def settings_error_text(exc: Exception) -> str:
    """Each invalid setting on its own line: where it comes from, and why (the value when it is short)."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):  # SettingsError: e.g. TRIAGE_KAFKA_PROPERTIES is not JSON
        return f'{exc} (variables holding a mapping take JSON, e.g. \'{{"linger.ms": "5"}}\')'
    lines = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "value"
        value = error.get("input")
        shown = f" (got {value!r})" if isinstance(value, (str, int, float)) and len(repr(value)) <= 60 else ""
        where = " / ".join(x for x in (_FLAGS.get(field), f"TRIAGE_{field.upper()}") if x)
        lines.append(f"{field} ({where}): {error['msg']}{shown}")
    return "\n  " + "\n  ".join(lines) if len(lines) > 1 else lines[0]


#: Settings field -> the `triage run` flag that sets it (the others only have their TRIAGE_ variable)
_FLAGS = {field: flag for flag, field, _, _ in RUN_OPTIONS} | {
    "kafka_properties": "--kafka-property",
    "create_topics": "--no-create-topics",
}


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 for any free one."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range (0-65535; 0 picks a free port)")
    return port


def storage_url(text: str) -> str:
    """argparse type: a storage URL the embedded broker knows."""
    from devtools.broker import STORAGE_SCHEMES

    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in STORAGE_SCHEMES or not rest.strip("/"):
        raise argparse.ArgumentTypeError(
            f"not a storage URL the broker knows: {text!r} (memory://tansu/, "
            "s3://BUCKET/ or postgres://USER:PASSWORD@HOST/DB)"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triage",
        description="Triage customer-service inquiries from Kafka: intent + sentiment -> auto_response | human_agent.",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the streaming triage service",
        description=(
            "Consume inquiries, classify them in micro-batches, publish enriched events to the routing topics and "
            "bad records to the DLQ. Every option can also be set as TRIAGE_<OPTION> (e.g. TRIAGE_GROUP_ID)."
        ),
    )
    add_run_options(run)
    run.add_argument(
        "--kafka-property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any librdkafka property for consumer, producer and admin (repeatable)",
    )
    run.add_argument(
        "--no-create-topics",
        dest="create_topics",
        action="store_false",
        default=None,
        help="do not create missing topics at start",
    )
    run.add_argument(
        "--print-config", action="store_true", help="print the settings in effect as JSON (secrets masked) and exit"
    )
    run.set_defaults(handler=_cmd_run)

    broker = sub.add_parser(
        "broker",
        help="run the embedded Kafka-compatible broker in the foreground (memory storage unless --storage)",
        description="Tansu, a Kafka-compatible broker, on 127.0.0.1. With the default memory storage its records "
        "and committed offsets are gone when it stops. With --storage s3://BUCKET/ they live in an "
        "S3-compatible store and survive a crash or restart of the broker: Tansu reads AWS_ENDPOINT, "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION (and AWS_ALLOW_HTTP=true for a "
        "plain-http endpoint) from the environment; the bucket must exist. "
        "postgres://USER:PASSWORD@HOST/DB stores them in PostgreSQL.",
    )
    broker.add_argument("--port", type=port_number, default=9092, help="port on 127.0.0.1; 0 picks a free one (9092)")
    broker.add_argument(
        "--storage",
        type=storage_url,
        default="memory://tansu/",
        metavar="URL",
        help="memory://tansu/ (default), s3://BUCKET/ or postgres://USER:PASSWORD@HOST/DB",
    )
    broker.set_defaults(handler=_cmd_broker)

    classify = sub.add_parser("classify", help="print the top-3 intents, the sentiment and the route of each text")
    classify.add_argument("texts", nargs="+", metavar="TEXT")
    classify.add_argument("--json", action="store_true", help="one JSON object per line, shaped like `triage`")
    classify.add_argument("--model-dir", type=Path, default=None, help="artifacts directory (artifacts)")
    classify.add_argument("--policy", type=Path, default=None, help="routing policy TOML (built-in default)")
    classify.set_defaults(handler=_cmd_classify)

    demo = sub.add_parser("demo", help="train if needed, start the embedded broker, stream samples, show the routing")
    demo.add_argument("--model-dir", type=Path, default=Path("artifacts"), help="artifacts directory (artifacts)")
    demo.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for all routed events (180)")
    demo.add_argument(
        "--console",
        nargs="?",
        const=8765,
        default=None,
        type=port_number,
        metavar="PORT",
        help="then keep everything running and serve the console on 127.0.0.1:PORT (8765) until Ctrl-C",
    )
    demo.set_defaults(handler=_cmd_demo)

    bench = sub.add_parser(
        "bench", help="measure throughput and latency: per-message pipeline() vs batched vs end to end"
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object with the numbers and ratios")
    bench.add_argument("--n", type=int, default=6000, help="inquiries in the end-to-end backlog (6000)")
    bench.add_argument("--model-dir", type=Path, default=Path("artifacts"), help="artifacts directory (artifacts)")
    bench.add_argument(
        "--members",
        type=int,
        default=1,
        help="N >= 2: also drain a fresh backlog (--n inquiries) with N fresh `triage run` processes "
        "in one consumer group and compare with the one-process backlog rate (1: skip)",
    )
    bench.set_defaults(handler=_cmd_bench)

    topics = sub.add_parser("topics", help="topic administration for operators")
    topics.set_defaults(help_of=topics)  # `triage topics` alone shows this help, not the top-level one
    topics_sub = topics.add_subparsers(title="actions", metavar="ACTION")
    create = topics_sub.add_parser(
        "create",
        help="create the input, routing and DLQ topics that are missing",
        description="Topic names and connection settings come from the same flags and "
        "TRIAGE_* variables as `triage run`.",
    )
    add_run_options(create, "bootstrap_servers", "input_topic", "auto_topic", "human_topic", "dlq_topic", *CONNECTION)
    create.add_argument("--partitions", dest="topic_partitions", type=int, default=None, help="partitions (3)")
    create.add_argument(
        "--replication",
        dest="topic_replication",
        type=int,
        default=None,
        help="replication factor (1; use 3 on a production cluster)",
    )
    create.add_argument("--retention-ms", type=int, default=None, help="retention of the routing topics")
    create.add_argument(
        "--dlq-retention-ms",
        type=int,
        default=30 * 24 * 3600 * 1000,
        help="retention of the DLQ (30 days), long enough to inspect and replay",
    )
    create.add_argument(
        "--kafka-property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any librdkafka property for the admin client (repeatable)",
    )
    create.set_defaults(handler=_cmd_topics_create)
    _add_feedback_parser(sub)
    _add_console_parser(sub)

    export = sub.add_parser(
        "export-onnx",
        help="add an int8 ONNX export to trained artifacts (fast CPU inference)",
        description="Export each artifact's network to ONNX, quantise its weights to int8 "
        "(ONNX Runtime dynamic quantisation), check it against the original on "
        "probe texts and record it in manifest.json. `triage train` does this "
        "itself, and also checks the export's accuracy on its labelled "
        "validation sets, keeping the first encoder layers' feed-forward weights "
        "in float where int8 would move accuracy or macro-F1 by more than 0.4 points; here, "
        "without labels, only the argmax agreement on probe texts is checked, and "
        "at least as many layers stay in float as the current export has. "
        "Use this for artifacts trained elsewhere. Needs the `train` extra (onnx).",
    )
    export.add_argument(
        "dirs", nargs="*", type=Path, metavar="DIR", help="artifact directories (artifacts/intent artifacts/sentiment)"
    )
    export.set_defaults(handler=_cmd_export_onnx)

    add_commands(sub)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    from consumer.settings import Settings

    fields = [field for _, field, _, _ in RUN_OPTIONS] + ["topic_partitions", "topic_replication"]
    overrides = {field: getattr(args, field) for field in fields if getattr(args, field, None) is not None}
    if getattr(args, "create_topics", None) is not None:
        overrides["create_topics"] = args.create_topics
    if getattr(args, "kafka_property", None):
        env = Settings().kafka_properties
        overrides["kafka_properties"] = {**env, **_parse_properties(args.kafka_property)}
    return Settings(**overrides)


def _parse_properties(items: Sequence[str]) -> dict[str, str]:
    properties = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"triage: error: --kafka-property expects KEY=VALUE, got {item!r}")
        properties[key.strip()] = value
    return properties


def _cmd_run(args: argparse.Namespace) -> int:
    from consumer.app import run_service
    from consumer.logs import configure_logging

    settings = settings_from_args(args)
    if args.print_config:
        import orjson

        sys.stdout.write(orjson.dumps(settings.redacted(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    configure_logging(settings.log_format, settings.log_level)
    return run_service(settings)


def _cmd_broker(args: argparse.Namespace) -> int:
    import signal

    from devtools.broker import EmbeddedBroker

    broker = EmbeddedBroker(port=args.port, storage=args.storage)
    stopping = []

    def on_signal(*_: object) -> None:  # only ask the child to stop; the main thread's wait() then returns
        stopping.append(True)
        if broker.process is not None:
            broker.process.terminate()

    with broker:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        kept = "memory only" if args.storage.startswith("memory://") else f"storage {broker.storage_name}"
        print(f"embedded broker ({kept}) listening on {broker.bootstrap_servers}; Ctrl-C stops it", flush=True)
        code = broker.wait()
    return 0 if stopping else code


def _cmd_classify(args: argparse.Namespace) -> int:
    import orjson

    from consumer.app import load_model
    from consumer.logs import configure_logging
    from consumer.routing import RoutingPolicy
    from consumer.settings import Settings

    texts = [_readable(text) for text in args.texts]
    blank = [i + 1 for i, text in enumerate(texts) if not text.strip()]
    if blank:  # the service sends such records to the DLQ
        print(f"triage classify: error: TEXT {', '.join(map(str, blank))} is empty", file=sys.stderr)
        return 2
    configure_logging("auto", "warning", sys.stderr)
    overrides = {"model_dir": args.model_dir, "policy_file": args.policy}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    policy = RoutingPolicy.from_file(settings.policy_file)
    model = load_model(settings)
    policy.check_fits(model)
    for text, prediction in zip(texts, model.predict(texts)):
        route, reasons = policy.decide(prediction)
        if args.json:
            record = {
                "text": text,
                "intent": prediction.intent.model_dump(mode="json"),
                "sentiment": prediction.sentiment.model_dump(mode="json"),
                "route": route,
                "reasons": reasons,
                "model": model.versions.model_dump(mode="json"),
            }
            sys.stdout.buffer.write(orjson.dumps(record) + b"\n")
        else:
            top = ", ".join(f"{s.label} {s.score:.2f}" for s in prediction.intent.top_k)
            print(text)
            print(f"  intent:    {top}")
            print(f"  sentiment: {prediction.sentiment.label} {prediction.sentiment.score:.2f}")
            print(f"  route:     {route} ({', '.join(reasons)})")
    sys.stdout.flush()
    return 0


def _readable(text: str) -> str:
    """A command-line argument as text: bytes that are not UTF-8 (surrogate escapes) become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _add_console_parser(sub: SubParsers) -> None:
    console = sub.add_parser(
        "console",
        help="a local web page: classify text, watch the routed stream, correct intents",
        description="Serve the console on HOST:PORT (needs the console extra: pip install "
        "'inquiry-triage[console]'). It loads the models to classify typed text, reads the routing and DLQ topics "
        "from their end without a consumer group (the service is never slowed), scrapes the service's /metrics "
        "for lag and p99 when --metrics-url is given, and publishes corrections to the feedback topic.",
    )
    add_run_options(
        console, "bootstrap_servers", "model_dir", "policy_file", "auto_topic", "human_topic", "dlq_topic", *CONNECTION
    )
    console.add_argument("--host", default="127.0.0.1", help="interface to listen on (loopback)")
    console.add_argument("--port", type=port_number, default=8765, help="port (8765)")
    console.add_argument(
        "--metrics-url", default=None, help="the service's /metrics, e.g. http://127.0.0.1:9464/metrics"
    )
    console.add_argument("--no-live", dest="live", action="store_false", help="classify only: no broker needed")
    console.add_argument("--no-feedback", dest="feedback", action="store_false", help="no corrections")
    console.add_argument("--show-text", action="store_true", help="show inquiry texts in the live list (hidden)")
    console.set_defaults(handler=_cmd_console)


def _cmd_console(args: argparse.Namespace) -> int:
    from consumer.logs import configure_logging

    try:
        from console.serve import serve
    except ImportError as exc:
        print(f"triage console: error: {exc.name} is missing: pip install 'inquiry-triage[console]'", file=sys.stderr)
        return 2
    configure_logging("auto", "warning", sys.stderr)
    settings = settings_from_args(args)
    return serve(settings, args.host, args.port, args.metrics_url, args.live, args.show_text, args.feedback)


def _add_feedback_parser(sub: SubParsers) -> None:
    feedback = sub.add_parser("feedback", help="agents' corrections: turn them into training data")
    feedback.set_defaults(help_of=feedback)
    actions = feedback.add_subparsers(title="actions", metavar="ACTION")
    collect = actions.add_parser(
        "collect",
        help="join the feedback topic with the routed events into a versioned dataset",
        description="Read every correction on the feedback topic ({event_id, intent and/or sentiment, "
        "reply_used}) and the routed events they name, and write feedback-<hash>.jsonl for `triage train intent "
        "--with-feedback`. Reads from the start to the current end of each topic without joining a consumer "
        "group. Corrections that are not valid, or name an event no routing topic holds, are counted, not kept.",
    )
    add_run_options(collect, "bootstrap_servers", "auto_topic", "human_topic", *CONNECTION)
    collect.add_argument("--feedback-topic", default=None, help="topic of corrections (inquiries.feedback)")
    collect.add_argument("--out", type=Path, default=None, help="directory for the dataset (TRIAGE_HOME/data/feedback)")
    collect.add_argument("--timeout-s", type=float, default=60.0, help="give up reading after this long")
    collect.set_defaults(handler=_cmd_feedback_collect)


def _cmd_feedback_collect(args: argparse.Namespace) -> int:
    from consumer.logs import configure_logging
    from training.errors import TrainingError
    from training.feedback import collect
    from training.paths import data_dir

    configure_logging("auto", "warning", sys.stderr)
    settings = settings_from_args(args)
    if args.feedback_topic:
        settings = settings.model_copy(update={"feedback_topic": args.feedback_topic})
    out = args.out or data_dir() / "feedback"
    try:
        result = collect(
            dict(settings.common_config()),
            settings.feedback_topic,
            [settings.auto_topic, settings.human_topic],
            out,
            args.timeout_s,
        )
    except TrainingError as exc:
        print(f"triage feedback collect: error: {exc}", file=sys.stderr)
        return 1
    rejected = ", ".join(f"{reason} {n}" for reason, n in result.rejected.items()) or "none"
    print(f"{result.path}: {result.rows} corrected inquiries ({result.version}); rejected: {rejected}")
    return 0


def _cmd_topics_create(args: argparse.Namespace) -> int:
    from consumer.logs import configure_logging
    from consumer.topics import ensure_topics

    configure_logging("auto", "warning", sys.stderr)
    settings = settings_from_args(args)
    routing = {"retention.ms": str(args.retention_ms)} if args.retention_ms else {}
    configs = {
        settings.auto_topic: routing,
        settings.human_topic: routing,
        settings.dlq_topic: {"retention.ms": str(args.dlq_retention_ms)},
    }
    topics = [settings.input_topic, *settings.output_topics]
    created = ensure_topics(
        settings.admin_config(), topics, settings.topic_partitions, settings.topic_replication, configs=configs
    )
    for topic in topics:
        print(f"{topic}: {'created' if topic in created else 'exists'}")
    return 0


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from training.onnx_export import export_onnx

    dirs = args.dirs or [Path("artifacts") / "intent", Path("artifacts") / "sentiment"]
    for directory in dirs:
        try:
            export = export_onnx(directory)
        except ImportError as exc:
            print(
                f"triage: error: exporting needs the `train` extra ({exc.name or exc} is missing): "
                "pip install 'inquiry-triage[train]'",
                file=sys.stderr,
            )
            return 1
        size = (directory / export.file).stat().st_size / 1e6
        print(
            f"{directory}: {export.file} ({size:.1f} MB, {export.quantization}); agrees with the original on "
            f"{export.probe_agreement:.1%} of {export.probe_texts} probe texts, "
            f"max logit difference {export.probe_max_abs_logit_diff:.3f}; "
            f"feed-forward MatMuls in float: {', '.join(export.float_matmuls) or 'none'}"
        )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from devtools.bench import run_bench

    return run_bench(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from devtools.demo import run_demo

    if args.console is None:
        return run_demo(args.model_dir, timeout_s=args.timeout)
    try:
        from console.serve import serve
    except ImportError as exc:
        print(f"triage demo: error: {exc.name} is missing: pip install 'inquiry-triage[console]'", file=sys.stderr)
        return 2

    def then(settings: Settings) -> None:
        metrics = f"http://127.0.0.1:{settings.metrics_port}/metrics"
        serve(settings, port=args.console, metrics_url=metrics, show_text=True)

    return run_demo(args.model_dir, timeout_s=args.timeout, then=then)


if __name__ == "__main__":
    sys.exit(main())
