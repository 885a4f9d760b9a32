"""Preview some chapters: build a small book of just those pages into its own folder.

``python tools/preview.py ch04 ch05 --out /tmp/preview`` builds the index, the named pages and
the bibliography (same ``_config.yml``, own execution cache) and prints the HTML folder. Useful
while writing a chapter: it executes only the pages you name and never touches ``_build/``.
Links to pages left out do not resolve (the build is not run with warnings as errors).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _match(names, files):
    chosen = []
    for name in names:
        hits = [f for f in files if Path(f).name.startswith(name) or f == name]
        if not hits:
            raise SystemExit(f"no page matches {name!r}; pages: {', '.join(Path(f).name for f in files)}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def build(names, out: Path, strict: bool = False) -> Path:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    keep = set(_match(names, files)) | {"book/bibliography"}
    parts = []
    for part in toc["parts"]:
        chapters = [c for c in part["chapters"] if c["file"] in keep]
        if chapters:
            parts.append(dict(part, chapters=chapters))
    toc["parts"] = parts
    src = out / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    shutil.copytree(ROOT / "book", src / "book", ignore=shutil.ignore_patterns("_build", "__pycache__"))
    (src / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    config = (ROOT / "_config.yml").read_text()
    config = config.replace('  cache: ""', f'  cache: "{out / "cache"}"')
    (src / "_config.yml").write_text(config)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(src), "--builder", "html", "--path-output", str(out)]
    if strict:
        cmd += ["-W", "--keep-going"]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out / "_build" / "html"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/preview.py", description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="+", help="page names or prefixes, e.g. ch04 ch05")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "preview")
    parser.add_argument("--strict", action="store_true", help="warnings are errors")
    args = parser.parse_args(argv)
    html = build(args.pages, args.out.resolve(), args.strict)
    print(f"preview: open {html / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
