#!/usr/bin/env bash
# NeMo Gym's resources servers for the agent tests, in a venv of their own (Gym pulls
# ray, mlflow, wandb, datasets: ~1.4 GB; it must not touch the project's versions).
# nemo-gym 0.4.0 declares Python >= 3.12 but runs on 3.11: install the wheel without
# its Python check, then its own requirements normally (see docs/agents.md).
set -euo pipefail
VENV=${1:-.gym-venv}
VERSION=0.4.0
# Gym itself, once.
if [ ! -f "$VENV/.installed-$VERSION" ]; then
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
WHEELS=$(mktemp -d)
"$VENV/bin/python" -m pip download --quiet --no-deps --python-version 3.12 \
  --only-binary=:all: -d "$WHEELS" "nemo-gym==$VERSION"
WHEEL=$(ls "$WHEELS"/nemo_gym-*.whl)
"$VENV/bin/python" -m pip install --quiet --no-deps --ignore-requires-python "$WHEEL"
# The wheel's own Requires-Dist lines, extras dropped.
"$VENV/bin/python" - "$WHEEL" > "$WHEELS/requirements.txt" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    for line in wheel.read(meta).decode().splitlines():
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            print(line.split(":", 1)[1].strip())
PY
"$VENV/bin/python" -m pip install --quiet -r "$WHEELS/requirements.txt"
rm -rf "$WHEELS"
fi
# What the servers the tests start need beyond Gym itself (ng_run installs each server's
# requirements.txt into a venv of its own): math_with_judge's math-verify.
"$VENV/bin/python" -c "import math_verify" 2>/dev/null ||
  "$VENV/bin/python" -m pip install --quiet "math-verify==0.8.0"
touch "$VENV/.installed-$VERSION"
