"""bench/device_check.py, the one prepared GPU check, runs end to end at tiny sizes on the CPU."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_dry_run(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "device_check.py"), "--dry", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["probe"]["ratio"] > 0 and figures["probe"]["probe_s"] > 0
    assert 0 < figures["extract"]["float32"]["fraction_of_peak"] < 5
    assert figures["chapters"]["tiny"]["error"] is None and figures["chapters"]["tiny"]["cells"] == 2
    for line in ("probe_cv on", "extract float32", "chapter tiny", "device check done"):
        assert line in proc.stdout, line
