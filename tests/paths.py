"""Locations in this checkout, whatever the working directory or TRIAGE_HOME."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data"
