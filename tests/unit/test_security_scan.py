"""Bandit's static security scan over the shipped packages: no finding of medium severity and
confidence or above (the threshold the CI workflow's scan uses too)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["engine", "api", "tasks", "beat", "conveyor"]


def test_bandit_finds_nothing_of_medium_severity_or_above() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bandit",
            "-q",
            "-r",
            *PACKAGES,
            "-f",
            "json",
            "--severity-level",
            "medium",
            "--confidence-level",
            "medium",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(result.stdout)
    findings = [f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}" for r in report["results"]]
    assert not findings, "\n".join(findings)
    assert report["metrics"]["_totals"]["loc"] > 10_000, "bandit scanned the packages"
