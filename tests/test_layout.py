"""The layering the docs promise: imports flow one way, and the service never loads training or the dev tools."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_running_the_service_loads_neither_training_nor_the_dev_tools():
    code = (
        "import sys, consumer.app, consumer.runner, model.classifier, model.onnx; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'training', 'devtools', 'triage'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_service_reads_the_environment_only_through_settings():
    offenders = []
    for package in ("schemas", "model", "consumer"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.relative_to(ROOT).as_posix() == "consumer/settings.py":
                continue
            text = path.read_text(encoding="utf-8")
            if "os.environ" in text or "getenv(" in text:
                offenders.append(path.relative_to(ROOT).as_posix())
    assert offenders == []
