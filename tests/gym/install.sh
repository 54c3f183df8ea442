#!/usr/bin/env bash
# NeMo Gym's resources servers for the agent tests, in a venv of their own (Gym pulls
# ray, mlflow, wandb, datasets: ~1.4 GB; it must not touch the project's versions).
# nemo-gym 0.4.0 declares Python >= 3.12 but runs on 3.11: install the wheel without
# its Python check, then its own requirements normally (see docs/agents.md).
set -euo pipefail
VENV=${1:-.gym-venv}
VERSION=0.4.0
[ -f "$VENV/.installed-$VERSION" ] && exit 0
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
touch "$VENV/.installed-$VERSION"
