"""Secrets: which values are secret, how they reach the actors, and how they never land.

A secret is a value, not a field: an API key read from the environment variable a
config names (`engine.api_key_env`, a verifier's `api_key_env`), a verifier's
credential headers, the password in a URL (`https://user:pass@host`), an `engine.env`
value whose name says key, token, secret, password or credential, and the cloud
credentials in the environment (AWS_*). This module finds them once, and:

- `redacted_config` is the config as job.json stores it: secret values replaced, so the
  resume fingerprint does not change when a key does;
- `find` is what actors are handed of them, as constructor arguments: API keys and
  secret `engine.env` values, never cloud credentials (see CLOUD_ENV), and never a Ray
  `runtime_env`, which Ray logs;
- `register` adds values to this process's list, and `redact` replaces every listed
  value (and any URL password) in a text: 8 characters or more wherever they appear,
  4 to 7 where they stand as a token (see MIN_LENGTH). Every text that leaves a process
  goes through `redact` before it is cut short, and `install_log_filter` does it for
  log records.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from typing import Any

from rollout_ray.config import JobConfig

MASK = "[redacted]"
#: From this length on, a secret is masked wherever it appears, inside longer words too.
ANYWHERE_LENGTH = 8
#: Secrets of MIN_LENGTH to ANYWHERE_LENGTH - 1 characters (an S3 access key `minio`, a
#: password `hunter2`) are masked where they stand as a token: not next to a letter or
#: digit. The price is false positives on whole words: with the key `minio`, every
#: standalone "minio" (the endpoint's host name too) reads [redacted]; inside a longer
#: word ("minion") it stays. Anywhere would mask pieces of ordinary words; not at all
#: would leak them. Shorter values can't be masked without masking common words and
#: protect nothing (three characters are guessed at once): they are refused a mask,
#: and `prepare` warns about them.
MIN_LENGTH = 4
#: Environment variable names whose values are secret.
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE", re.I)
#: Cloud credentials for object storage. Actors read them from their own environment;
#: the driver never hands them over. Why, from what Ray does with each way in (measured
#: on Ray 2.60): a `runtime_env`'s env_vars are written to the session's
#: runtime_env_agent.log and shown by the state API and dashboard (`serialized_runtime_env`
#: of every actor); constructor arguments are in no log, but Ray keeps them as the actor's
#: creation spec for restarts (in Redis, with GCS fault tolerance) and Ray Data puts its
#: pool's in the object store (which spills to disk). Ray has no secret channel
#: (ray-project/ray#28276 open, #40549 closed unmerged); its docs put credentials on the
#: nodes. Cloud credentials have that home: an instance role, IRSA or Workload Identity,
#: or a Kubernetes Secret as env (cluster/ and deploy/ set these up), and a local Ray
#: started by the job inherits the driver's environment. API keys have none (they are
#: given to the one command that runs the job), so they still travel as constructor
#: arguments, never through a runtime_env.
CLOUD_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
_KNOWN: set[str] = set()


def register(*values: str | None) -> None:
    """Treat these values as secret in this process from now on."""
    for value in values:
        if value and len(value) >= MIN_LENGTH:
            _KNOWN.add(value)


def known() -> tuple[str, ...]:
    return tuple(_KNOWN)


def redact(text: str, extra: tuple[str, ...] | list[str] = ()) -> str:
    """`text` with every registered (and `extra`) secret and URL password masked."""
    if not text:
        return text
    values = {*_KNOWN, *(s for s in extra if s and len(s) >= MIN_LENGTH)}
    for secret in sorted(values, key=len, reverse=True):
        if secret in text:
            if len(secret) >= ANYWHERE_LENGTH:
                text = text.replace(secret, MASK)
            else:
                text = _as_token(secret).sub(MASK, text)
    if "@" in text:
        text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return text


@functools.lru_cache(maxsize=256)
def _as_token(secret: str) -> re.Pattern[str]:
    """A short secret where it stands alone: no letter or digit right before or after."""
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])")


def plain_http_elsewhere(url: str) -> str | None:
    """The host of a plain http:// URL to another machine (a credential sent there
    crosses the network unencrypted), or None for https and for this machine's loopback.
    One rule for every client that sends a key (the openai engine, the http verifier)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    loopback = host in {"localhost", "127.0.0.1", "::1"} or host.startswith("127.")
    return host if parts.scheme == "http" and not loopback else None


def secret_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in {"authorization", "proxy-authorization"} or bool(SECRET_NAME.search(name))


def find(config: JobConfig, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The secrets a job's actors are handed: variable name -> value, from `environ` (API
    keys) and the config (secret `engine.env` values). Not cloud credentials: actors
    read those from their own environment (see CLOUD_ENV)."""
    environ = os.environ if environ is None else environ
    names: set[str] = set()
    engine = config.engine
    if getattr(engine, "api_key_env", None):
        names.add(engine.api_key_env)
    names.update(n for n in getattr(engine, "env", {}) if SECRET_NAME.search(n))
    for dataset in config.datasets:
        name = getattr(dataset.verifier, "api_key_env", None)
        if name:
            names.add(name)
    found = {n: environ[n] for n in names if environ.get(n)}
    # engine.env values set in the config itself, when their name says secret
    found.update({n: v for n, v in getattr(engine, "env", {}).items() if SECRET_NAME.search(n)})
    return found


def config_values(config: JobConfig) -> list[str]:
    """Secret values written in the config itself: credential headers, URL passwords."""
    values = []
    for dataset in config.datasets:
        for name, value in (getattr(dataset.verifier, "headers", None) or {}).items():
            if secret_header(name):
                values.append(value)
    values += [v for n, v in getattr(config.engine, "env", {}).items() if SECRET_NAME.search(n)]
    dump = config.model_dump_json()
    values += [m["pw"] for m in _URL_PASSWORD.finditer(dump)]
    return values


def cloud_values(environ: dict[str, str] | os._Environ[str] | None = None) -> list[str]:
    """This process's own cloud credentials (to mask: they are never handed on)."""
    environ = os.environ if environ is None else environ
    return [environ[n] for n in CLOUD_ENV if environ.get(n)]


def prepare(config: JobConfig) -> dict[str, str]:
    """Register every secret of a job in this process; returns what actors are handed."""
    env = find(config)
    register(*env.values(), *config_values(config), *cloud_values())
    short = sorted(n for n, v in env.items() if 0 < len(v) < MIN_LENGTH)
    if short:
        logging.getLogger(__name__).warning(
            "%s: shorter than %d characters, too short to mask in texts (use a real key)",
            ", ".join(short),
            MIN_LENGTH,
        )
    return env


def redacted_config(config: JobConfig) -> dict[str, Any]:
    """The config as it may be written down: secret values masked (names kept)."""
    data = config.model_dump(mode="json")
    engine = data.get("engine") or {}
    for name in list(engine.get("env") or {}):
        if SECRET_NAME.search(name):
            engine["env"][name] = MASK
    for dataset in data.get("datasets") or []:
        headers = (dataset.get("verifier") or {}).get("headers") or {}
        for name in list(headers):
            if secret_header(name):
                headers[name] = MASK
    data = _mask_urls(data)
    # The command line's own record of itself: `engine.env.MY_API_KEY=sk-...` holds the
    # value the config masks, and job.json and trackers receive this list too.
    data["cli_overrides"] = [
        _masked_override(item, data, config_values(config))
        for item in data.get("cli_overrides") or []
    ]
    return data


def secret_overrides(config: JobConfig) -> list[str]:
    """The keys of the command-line overrides that set a secret (written masked)."""
    shown = redacted_config(config)["cli_overrides"]
    given = config.cli_overrides
    return [g.split("=", 1)[0] for g, s in zip(given, shown, strict=True) if g != s]


def _masked_override(item: str, masked: dict[str, Any], values: list[str]) -> str:
    """A `key=value` override as it may be written down: its value masked when its key
    names a secret (a variable or header whose name says key, token, ...) or when the
    config masks the value at that key path, and any secret value of the config masked
    wherever else it appears."""
    key, sep, raw = item.partition("=")
    last = key.strip().rsplit(".", 1)[-1]
    if sep and (secret_header(last) and not last.endswith("_env")):
        raw = MASK  # a secret-named variable or header, whatever the config holds now
    elif sep:
        node: Any = masked
        for part in key.strip().split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                node = None
                break
        if node is not None and MASK in json.dumps(node):
            raw = node if isinstance(node, str) else json.dumps(node)
    return redact(f"{key}{sep}{raw}", values)


def _mask_urls(value: Any) -> Any:
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", value)
    if isinstance(value, list):
        return [_mask_urls(v) for v in value]
    if isinstance(value, dict):
        return {k: _mask_urls(v) for k, v in value.items()}
    return value


def apply(env: dict[str, str]) -> None:
    """In an actor: set the secrets it was handed, and register them and its own cloud
    credentials (read from its environment, as storage clients read them)."""
    os.environ.update(env)
    register(*env.values(), *cloud_values())
    install_log_filter()


class _Redact(logging.Filter):
    """Log records leave clean: secrets masked, and control characters (a row's or a
    model's text quoted in a message) shown rather than obeyed by the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        from rollout_ray.views.terminal import CONTROL, visible

        message = record.getMessage()
        clean = redact(message) if _KNOWN or "@" in message else message
        if CONTROL.search(clean):
            clean = visible(clean)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = _Redact()


def install_log_filter() -> None:
    """Redact log records on every handler of the root logger (and later ones: the
    filter also sits on the root logger itself)."""
    root = logging.getLogger()
    if _FILTER not in root.filters:
        root.addFilter(_FILTER)
    if not root.handlers:  # else records would reach Python's last-resort handler unfiltered
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    for handler in root.handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
