"""The README's Python API block runs as written (in a scratch folder): train, load the family, synthesize,
evaluate against the real images with the floor at the same n."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_python_block_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    block = next(b for b in blocks if "from cxraug.train import train" in b)
    (tmp_path / "api.py").write_text(block)
    out = subprocess.run([sys.executable, "api.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={"OMP_NUM_THREADS": "1", "PATH": "", "HOME": str(tmp_path),
                              "CXRAUG_CACHE": str(tmp_path / "cache"), "PYTHONPATH": ":".join(sys.path)})  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    name, fid, floor = out.stdout.split(maxsplit=2)
    assert name == "dcgan" and float(fid) > 0 and "'generated'" in floor and "'real'" in floor
    assert list((tmp_path / "runs").glob("train-dcgan-64-*/checkpoints/last.pt"))
