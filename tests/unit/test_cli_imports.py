"""What loading the CLI imports: nothing that fixes prometheus_client's mode too early.

``conveyor worker --metrics-port`` switches prometheus_client to multiprocess mode by setting
``PROMETHEUS_MULTIPROC_DIR`` when the command runs, which works only if no module the CLI
loads beforehand imported prometheus_client (it picks its value class at import). One command
module importing the API package (which loads the metrics) once left the worker's /metrics
without any pool process's counts.
"""

from __future__ import annotations

import subprocess
import sys


def test_loading_the_cli_does_not_import_prometheus_client() -> None:
    probe = "import sys, conveyor.cli; print('prometheus_client' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", result.stderr
