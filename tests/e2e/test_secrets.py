"""A canary secret in every place a user can put one, through every path, and then not
one copy of it anywhere: not in the output (data, failures, manifest, staged inputs),
not in the trackers' files (an MLflow file store, W&B offline), not in the Ray
session's logs, not on the driver's stdout or stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from fault_server import FaultServer
from helpers import write_jsonl

from rollout_ray import storage

pytestmark = pytest.mark.slow

CANARY = {
    "engine_key": "sk-canary-ENGINE-7f3a91c2",
    "url_password": "canary-URLPASS-55b2e0",
    "verifier_token": "canary-VERIFY-TOKEN-0c9d",
    "header": "canary-HEADER-KEY-e41a",
    "engine_env": "canary-ENGINE-ENV-9d02",
    "aws_key_id": "AKIACANARY7Q2W9E",
    "aws_secret": "canary-AWS-SECRET-b81f3d",
    "override": "canary-OVERRIDE-TOKEN-6a0c",
}
#: A secret given on the command line, as `run cfg engine.env.X_TOKEN=...` would.
OVERRIDES = [f"engine.env.MY_OVERRIDE_TOKEN={CANARY['override']}"]


class EchoVerifier:
    """A /verify endpoint that puts the request's headers into its reply (so a naive
    client would store them in every record), and for one row fails with them in the
    error body."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = dict(self.headers)
                if "fail" in json.dumps(body.get("responses_create_params") or body):
                    data, status = json.dumps({"detail": f"refused: {headers}"}).encode(), 400
                else:
                    data, status = json.dumps({"reward": 1.0, "seen": headers}).encode(), 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/verify"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def run_cli(config: dict, tmp_path: Path, name: str, env: dict) -> tuple[int, str]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "rollout_ray.cli", "run", str(path), *OVERRIDES],
        capture_output=True,
        text=True,
        env={**os.environ, "ROLLOUT_RAY_DASHBOARD": "0", **env},
        timeout=900,
    )
    return done.returncode, done.stdout + done.stderr


def output_texts(output: str) -> list[tuple[str, str]]:
    """(file, its bytes as text) for every file under an output, local or s3://."""
    fs, path = storage.split_uri(output)
    found = []
    for file in fs.find(path):
        data = fs.cat_file(file)
        try:  # Parquet pages are compressed: read the records, not the bytes
            import io

            import pyarrow.parquet as pq

            text = json.dumps(pq.read_table(io.BytesIO(data)).to_pylist(), default=str)
        except Exception:
            text = data.decode("utf-8", "replace")
        found.append((file, text))
    return found


def test_a_canary_secret_lands_nowhere(tmp_path, tiny_model, s3_server):
    import time

    began = time.time()
    verifier = EchoVerifier()
    rows = [{"prompt": f"ok {i}", "expected_answer": "x"} for i in range(6)]
    rows += [{"prompt": "leak 6"}, {"prompt": "fail 7"}]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    storage.write_bytes_atomic("s3://rollouts/canary/in.jsonl", data.read_bytes())
    env = {
        "CANARY_ENGINE_KEY": CANARY["engine_key"],
        "CANARY_VERIFY_TOKEN": CANARY["verifier_token"],
        "MLFLOW_ALLOW_FILE_STORE": "true",
        "WANDB_SILENT": "true",
        "AWS_ACCESS_KEY_ID": CANARY["aws_key_id"],
        "AWS_SECRET_ACCESS_KEY": CANARY["aws_secret"],
    }
    http_verifier = {
        "kind": "http",
        "url": verifier.url,
        "api_key_env": "CANARY_VERIFY_TOKEN",
        "headers": {"X-Api-Key": CANARY["header"]},
        "max_retries": 0,
    }
    # 1. vLLM engine, an engine.env secret, S3 input and output, the echoing verifier;
    # on Ray (actors, their logs, runtime environments). The second job runs in process.
    vllm_job = {
        "executor": "ray",
        "model": tiny_model,
        "engine": {
            "kind": "vllm",
            "max_model_len": 256,
            "env": {"MY_SERVICE_TOKEN": CANARY["engine_env"]},
        },
        "datasets": [
            {"name": "v", "path": "s3://rollouts/canary/in.jsonl", "verifier": http_verifier}
        ],
        "sampling": {"max_tokens": 4},
        "output": "s3://rollouts/canary/vllm-out",
        "metrics_port": 0,
        "tracking": {"kind": "wandb", "mode": "offline", "uri": str(tmp_path / "wb")},
    }
    code, vllm_log = run_cli(vllm_job, tmp_path, "vllm", env)
    assert code == 0, vllm_log[-3000:]
    # 2. The openai engine: a key, a password in the base URL, a server that echoes the
    # key in an error ("leak") and the same verifier.
    server = FaultServer(api_key=CANARY["engine_key"]).start()
    base_url = server.url.replace("http://", f"http://user:{CANARY['url_password']}@")
    api_job = {
        "model": "fault-model",
        "engine": {"kind": "openai", "base_url": base_url, "api_key_env": "CANARY_ENGINE_KEY"},
        "datasets": [{"name": "a", "path": str(data), "verifier": http_verifier}],
        "sampling": {"max_tokens": 4},
        "output": str(tmp_path / "api-out"),
        "metrics_port": 0,
        "tracking": {"kind": "mlflow", "uri": f"file:{tmp_path / 'mlruns'}"},
    }
    code, api_log = run_cli(api_job, tmp_path, "api", env)
    assert code == 0, api_log[-3000:]
    # Both ran every path: rollouts verified (the reply echoed the headers), a failure
    # quoting the key (leak), a verifier failure quoting the headers (fail).
    texts = output_texts("s3://rollouts/canary/vllm-out") + output_texts(str(tmp_path / "api-out"))
    assert any('"verifier_details"' in text and "seen" in text for _, text in texts)
    assert any("[redacted]" in text for _, text in texts)
    texts += [("vllm stdout+stderr", vllm_log), ("api stdout+stderr", api_log)]
    trackers = [p for d in ("wb", "mlruns") for p in (tmp_path / d).rglob("*") if p.is_file()]
    assert any(p.name.endswith(".wandb") for p in trackers) and any(
        p.name == "meta.yaml" for p in trackers
    )
    texts += [(str(p), p.read_bytes().decode("utf-8", "replace")) for p in trackers]
    # The Ray sessions these two jobs started (and any other since), every log file.
    for session in Path("/tmp/ray").glob("session_2*"):
        if session.stat().st_mtime >= began:
            for path in (session / "logs").rglob("*"):
                if path.is_file():
                    texts.append((str(path), path.read_text(errors="replace")))
    hits = [(where, name) for where, text in texts for name, v in CANARY.items() if v in text]
    assert hits == [], hits[:10]


def test_actors_take_cloud_credentials_from_their_own_environment(ray_session, tmp_path):
    """S3 keys once travelled from the driver to every actor as constructor arguments,
    which Ray keeps in the actor's creation spec (and, for Ray Data's pool, in the object
    store). Actors now read them from their own environment, as the nodes of a cluster
    hold them: a driver with other keys hands its own to no actor."""
    import hashlib

    from helpers import read_output

    from rollout_ray import run_job
    from rollout_ray.config import load_config

    def sha(value: str) -> str:
        return hashlib.sha256(value.encode()).hexdigest()[:12]

    node_secret = os.environ["AWS_SECRET_ACCESS_KEY"]  # what the session's Ray inherited
    driver_secret = "driver-only-AWS-SECRET-5d2e"
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"q {i}"} for i in range(4)])
    job = {
        "executor": "ray",
        "model": "sim",
        "engine": {"kind": "simulated"},
        "datasets": [
            {
                "name": "d",
                "path": str(data),
                "verifier": {
                    "kind": "python",
                    "function": "verifier_fixtures:credential_fingerprint",
                },
            }
        ],
        "output": str(tmp_path / "out"),
        "metrics_port": 0,
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_SECRET_ACCESS_KEY", driver_secret)
        assert run_job(load_config(job)).status == "finished"
    records = read_output(tmp_path / "out")
    seen = {json.loads(r["verifier_details"])["aws_secret_sha"] for r in records}
    assert seen == {sha(node_secret)} and sha(driver_secret) not in seen
