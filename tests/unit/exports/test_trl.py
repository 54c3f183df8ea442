"""Every training export, read back with `datasets` and given to TRL's own data
functions (`is_conversational`, `maybe_extract_prompt`, `maybe_apply_chat_template`
with a real tokenizer and chat template): what a training script does first."""

from __future__ import annotations

import json

import pytest
from test_exports import fake_output, group, load_hf

from rollout_ray import storage
from rollout_ray.exports import export
from rollout_ray.output.manifest import Layout

EPISODE = [
    {"type": "function_call", "name": "add", "arguments": '{"a": 2, "b": 3}', "call_id": "c1"},
    {"type": "function_call_output", "call_id": "c1", "output": "5"},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "5"}]},
]
TOOLS = json.dumps([{"type": "function", "function": {"name": "add", "parameters": {}}}])


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def plain_output(root) -> str:
    out = fake_output(root, group("t1", [1.0, 0.0]) + group("t2", [0.0, 1.0]))
    storage.write_json_atomic(Layout(out).job, {"config": {"datasets": [{"name": "ds"}]}})
    return out


def agent_output(root) -> str:
    """A committed agent job: two tasks, episodes with a tool call and an answer."""
    records = group("t1", [1.0, 0.0], episode=json.dumps(EPISODE), episode_tools=TOOLS)
    records += group("t2", [0.0, 1.0], episode=json.dumps(EPISODE), episode_tools=TOOLS)
    out = fake_output(root, records)
    config = {"datasets": [{"name": "ds", "agent": {"kind": "python"}}]}
    storage.write_json_atomic(Layout(out).job, {"config": config})
    return out


def trl_reads(path, tmp_path, tokenizer, kind: str) -> list[dict]:
    """Each row through TRL's functions, as its trainers prepare a dataset."""
    from trl.data_utils import is_conversational, maybe_apply_chat_template, maybe_extract_prompt

    data = load_hf(path, tmp_path)
    texts = []
    for row in data:
        example = {k: v for k, v in row.items() if k != "tools"}
        assert is_conversational(example), row
        if kind == "dpo":
            example = maybe_extract_prompt(example)
        tools = json.loads(row["tools"]) if row.get("tools") else None
        texts.append(maybe_apply_chat_template(example, tokenizer, tools=tools))
    return texts


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("agents", [False, True], ids=["plain", "agent"])
def test_trl_takes_every_training_export(tmp_path, tokenizer, suffix, agents):
    """Seen before: the sft rows held `messages` and `prompt`/`completion` together, and
    TRL's maybe_apply_chat_template raised "Invalid keys in the example"."""
    out = agent_output(tmp_path) if agents else plain_output(tmp_path)
    kinds = [
        ("sft", {}, {"text"}),
        ("sft", {"format": "prompt-completion"}, {"prompt", "completion"}),
        ("dpo", {}, {"prompt", "chosen", "rejected"}),
    ]
    if not agents:
        kinds.append(("mix", {}, {"text"}))
    for kind, options, keys in kinds:
        dest = tmp_path / f"{kind}-{len(options)}{suffix}"
        export(kind, out, str(dest), **options)
        texts = trl_reads(dest, tmp_path, tokenizer, kind)
        assert texts and all(set(t) == keys for t in texts), (kind, options)
        if agents and kind == "sft":  # the tool's reply went through the template
            whole = texts[0].get("text") or texts[0]["prompt"] + texts[0]["completion"]
            assert "<|im_start|>tool\n5<|im_end|>" in whole


def test_one_layout_per_row_and_the_cli_chooses_it(tmp_path):
    import subprocess
    import sys

    out = fake_output(tmp_path, group("t1", [1.0]))
    for flag, columns in (([], {"messages"}), (["--format", "prompt-completion"], None)):
        dest = tmp_path / f"sft{len(flag)}.jsonl"
        ran = subprocess.run(
            [sys.executable, "-m", "rollout_ray.cli", "export", "sft", out, str(dest), *flag],
            capture_output=True,
            text=True,
        )
        assert ran.returncode == 0, ran.stderr
        row = json.loads(dest.read_text().splitlines()[0])
        conversation = set(row) & {"messages", "prompt", "completion"}
        assert conversation == (columns or {"prompt", "completion"})
    with pytest.raises(ValueError, match="format must be one of messages, prompt-completion"):
        export("sft", out, str(tmp_path / "x.jsonl"), format="chatml")
