"""Secrets, unit by unit: which values are secret, and that none survives redaction,
however it is cut or embedded (the end-to-end canary is tests/e2e/test_secrets.py)."""

from __future__ import annotations

import json

from rollout_ray import secrets
from rollout_ray.config import load_config
from rollout_ray.output.plan import fingerprint, semantic_config


def job(**engine):
    return load_config(
        {
            "model": "m",
            "engine": {"kind": "openai", "api_key_env": "UNIT_API_KEY", **engine},
            "datasets": [
                {
                    "path": "x.jsonl",
                    "verifier": {
                        "kind": "http",
                        "url": "https://user:url-pass-5c1d9e@verify.example/verify",
                        "headers": {"X-Api-Key": "hdr-secret-77aa01", "X-Trace": "visible-1234"},
                        "api_key_env": "UNIT_VERIFY_TOKEN",
                    },
                }
            ],
            "output": "out",
        }
    )


def test_every_kind_of_secret_is_found_and_masked_in_the_written_config():
    config = job(env={"MY_SERVICE_TOKEN": "env-secret-93bd20", "LOG_LEVEL": "debug"})
    environ = {"UNIT_API_KEY": "sk-unit-0f4e8a", "UNIT_VERIFY_TOKEN": "vt-unit-61c2aa"}
    environ |= {"AWS_SECRET_ACCESS_KEY": "aws-unit-secret-1", "UNRELATED": "plain-value-1"}
    found = secrets.find(config, environ)
    # What actors are handed; cloud credentials they read from their own environment.
    assert set(found) == {"UNIT_API_KEY", "UNIT_VERIFY_TOKEN", "MY_SERVICE_TOKEN"}
    assert secrets.cloud_values(environ) == ["aws-unit-secret-1"]  # masked all the same
    written = json.dumps(secrets.redacted_config(config))
    for value in ("env-secret-93bd20", "hdr-secret-77aa01", "url-pass-5c1d9e"):
        assert value not in written
    assert "visible-1234" in written and "debug" in written  # only secrets are masked
    assert "UNIT_API_KEY" in written  # names stay: they say where the key comes from


def test_a_new_key_does_not_refuse_a_resume():
    one = job(env={"MY_SERVICE_TOKEN": "first-token-aaaa"})
    two = job(env={"MY_SERVICE_TOKEN": "second-token-bbbb"})
    assert fingerprint(semantic_config(one)) == fingerprint(semantic_config(two))


def test_redaction_masks_before_any_cut_and_inside_urls():
    secrets.register("sk-cut-secret-4b9d")
    text = "x" * 295 + "sk-cut-secret-4b9d and more"
    assert "sk-cut" not in secrets.redact(text)[:300]  # the cut comes after redaction
    assert "[redacted]" in secrets.redact("Bearer sk-cut-secret-4b9d")
    assert secrets.redact("https://bob:hunter2-long@host/x") == "https://bob:[redacted]@host/x"


def test_short_secrets_are_masked_where_they_stand_as_a_token(monkeypatch):
    """Values under 8 characters were never masked (an S3 key `minio` landed in clear).
    Now one of 4 to 7 characters is masked as a whole token, not inside longer words;
    under 4 nothing can be masked without masking common words."""
    monkeypatch.setattr(secrets, "_KNOWN", set())  # this test's secrets stay in this test
    secrets.register("mn10", "hunt3r2", "q9z")
    text = "key mn10 at http://mn10:9000/x with pw=hunt3r2; mn100 and xhunt3r2 stay; q9z"
    assert secrets.redact(text) == (
        "key [redacted] at http://[redacted]:9000/x with pw=[redacted]; mn100 and xhunt3r2 "
        "stay; q9z"
    )
    assert secrets.redact("sk-x", ["sk-x"]) == "[redacted]"  # an extra value, same rule


def test_secrets_given_as_command_line_overrides_are_masked_in_the_written_config():
    """`run cfg engine.env.MY_API_KEY=sk-...` once wrote the key to job.json's (and the
    trackers') `cli_overrides` while masking the same value under `engine.env`."""
    base = {
        "model": "m",
        "engine": {"kind": "openai"},
        "datasets": [{"path": "x.jsonl", "verifier": {"kind": "http", "url": "http://v/verify"}}],
        "output": "out",
    }
    overrides = [
        "engine.env.MY_API_KEY=sk-override-env-0a1b2c",
        "engine.env={OTHER_TOKEN: tok-override-dict-3d4e}",
        "engine.base_url=https://bob:pw-override-url-5f6a@api.example/v1",
        "datasets.0.verifier.headers.Authorization=Bearer hdr-override-7b8c9d",
        "sampling.temperature=0.3",
    ]
    config = load_config(base, overrides)
    written = json.dumps(secrets.redacted_config(config))
    for value in ("sk-override-env-0a1b2c", "tok-override-dict-3d4e", "pw-override-url-5f6a"):
        assert value not in written
    assert "hdr-override-7b8c9d" not in written
    recorded = secrets.redacted_config(config)["cli_overrides"]
    assert recorded[0] == "engine.env.MY_API_KEY=[redacted]"
    assert recorded[2] == "engine.base_url=https://bob:[redacted]@api.example/v1"
    assert recorded[-1] == "sampling.temperature=0.3"  # what is not secret stays readable
