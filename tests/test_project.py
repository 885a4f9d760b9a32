"""The project's own wiring: packaging files agree, notebooks are clean, the TOC is complete."""
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pinned = {r.replace(" ", "") for r in pip_section if not r.startswith("-")}
    wanted = list(project["dependencies"])
    for extra in ("lm", "book", "test"):
        wanted += project["optional-dependencies"][extra]
    missing = [r for r in wanted if r.replace(" ", "") not in pinned]
    assert not missing, f"environment.yml lacks (or pins differently) {missing}; copy them from pyproject.toml"
    makefile = (ROOT / "Makefile").read_text()
    offline = re.search(r"OFFLINE_PKGS\s*:=\s*(.+)", makefile).group(1).split()
    torch_pin = re.search(r"TORCH_PIN\s*:=\s*(\S+)", makefile).group(1)
    for req in offline + [torch_pin]:
        assert req in pinned, f"environment.yml lacks {req} that the Makefile installs"


def test_toc_lists_existing_files_and_every_chapter():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    for f in files:
        found = [p for p in (ROOT / f).parent.glob(Path(f).name + ".*") if p.suffix in (".md", ".ipynb")]
        assert len(found) == 1, f"_toc.yml entry {f} should match exactly one .md/.ipynb file, found {found}"
    chapters = [f for f in files if re.search(r"/ch\d\d_", f)]
    assert [int(re.search(r"ch(\d\d)", f).group(1)) for f in chapters] == list(range(1, 10))
    on_disk = {str(p.relative_to(ROOT).with_suffix("")) for p in (ROOT / "book").glob("*.*") if p.suffix in (".md", ".ipynb")}
    assert on_disk <= set(files), f"pages not in _toc.yml: {sorted(on_disk - set(files))}"


def test_notebooks_committed_without_outputs():
    for nb_path in (ROOT / "book").glob("*.ipynb"):
        nb = json.loads(nb_path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs"), f"{nb_path.name} has outputs; clear them before committing"
                assert cell.get("execution_count") is None, f"{nb_path.name} has execution counts; clear outputs"


def test_core_modules_do_not_import_heavy_dependencies():
    code = (
        "import sys; import lmdownstream.config, lmdownstream.losses, lmdownstream.synthetic, "
        "lmdownstream.theory, lmdownstream.probes, lmdownstream.lm, lmdownstream.features; "
        "heavy = [m for m in ('transformers', 'datasets', 'matplotlib') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"core modules pulled heavy imports: {out}"


@pytest.mark.parametrize("var,value", [("LMDOWNSTREAM_PROFILE", "big")])
def test_config_rejects_unknown_profile(monkeypatch, var, value):
    from lmdownstream import config

    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match="not a profile"):
        config.profile()


def test_config_profile_device_cache(monkeypatch, tmp_path):
    from lmdownstream import config

    monkeypatch.setenv("LMDOWNSTREAM_PROFILE", "full")
    assert config.profile() == "full" and config.by_profile(1, 2) == 2
    monkeypatch.setenv("LMDOWNSTREAM_PROFILE", "ci")
    assert config.by_profile(1, 2) == 1
    monkeypatch.setenv("LMDOWNSTREAM_DEVICE", "cpu")
    assert str(config.device()) == "cpu"
    monkeypatch.setenv("LMDOWNSTREAM_CACHE", str(tmp_path / "c"))
    assert config.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    import torch

    if not torch.cuda.is_available():
        monkeypatch.setenv("LMDOWNSTREAM_DEVICE", "cuda")
        with pytest.raises(ValueError, match="CUDA is not available"):
            config.device()
