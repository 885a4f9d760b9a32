"""The command line: python -m lmdownstream table ..."""
import csv
import subprocess
import sys

import pytest

pytest.importorskip("transformers")
from lmdownstream import cli  # noqa: E402


@pytest.mark.slow
def test_table_writes_csv_markdown_and_png(tmp_path, tmp_cache, tiny_gpt2_folder, capsys):
    model = tiny_gpt2_folder
    out = tmp_path / "out"
    code = cli.main(["table", "--model", model, "--dataset", "tweet-sentiment", "--n-train", "40", "--n-test", "20",
                     "--seeds", "1", "--cs", "0.1,10", "--max-words", "30", "--device", "cpu", "--out", str(out), "--quiet"])
    assert code == 0
    rows = list(csv.DictReader(open(out / "table.csv")))
    assert len(rows) >= 10 and {r["features"] for r in rows} >= {"f(s)", "Φp_f(s)", "bag of words", "zero-shot"}
    assert all(0 <= float(r["mean"]) <= 1 and len(r["accs"].split()) == 1 for r in rows)
    assert {r["n_test"] for r in rows} == {"20"} and {r["prompt"] for r in rows} == {"True", "False"}
    assert (out / "table.md").read_text().startswith("| dataset |")
    assert (out / "table.png").stat().st_size > 1000
    assert "wrote" in capsys.readouterr().out


def test_table_bad_inputs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["table", "--dataset", "imdb", "--out", str(tmp_path)]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert cli.main(["table", "--model", "no-such-org/no-such-model", "--dataset", "bbc-news",
                     "--out", str(tmp_path)]) == 2
    assert "smollm2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["table"])  # --dataset and --out are required


def test_module_entry_point():
    res = subprocess.run([sys.executable, "-m", "lmdownstream", "table", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and "--dataset" in res.stdout
