"""Start one NeMo Gym resources server on loopback, without `ng_run`.

Run with the Gym venv's Python: `python serve_resources.py NAME PORT [KEY=VALUE ...]`
(a dotted KEY sets a nested value, e.g. judge_model_server.name=judge). It does what
`ng_run` does for one child server (PLATFORM-NOTES.md): the global config built from
the server's own configs/NAME.yaml by Gym's parser, only the resources-server entry
kept, host 127.0.0.1 and the given port, a head_server entry (and a placeholder for any
server it names), then the server's app.py run from its folder. Gym's servers start or
join a Ray cluster they don't use; that call is replaced by a no-op.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path


def main() -> None:
    name, port, *extra = sys.argv[1:]
    import resources_servers
    from omegaconf import OmegaConf

    folder = Path(resources_servers.__path__[0]) / name
    raw = OmegaConf.load(folder / "configs" / f"{name}.yaml")
    key = next(k for k, v in raw.items() if "resources_servers" in v)
    entry = raw[key]
    server = entry["resources_servers"][name]
    server["host"], server["port"] = "127.0.0.1", int(port)
    for item in extra:
        field, value = item.split("=", 1)
        OmegaConf.update(server, field, value)  # a dotted field sets a nested value
    config = OmegaConf.create(
        {key: entry, "head_server": {"host": "127.0.0.1", "port": int(port) + 1}}
    )
    # Servers that name another server (math_with_judge's judge model) must find it in
    # the config; a placeholder that is never started stands in (its calls would fail).
    for field, value in server.items():
        if OmegaConf.is_dict(value) and {"type", "name"} <= set(value.keys()):
            if OmegaConf.is_missing(value, "name"):
                value["name"] = f"unused_{field}"
            stub = {"entrypoint": "app.py", "host": "127.0.0.1", "port": int(port) + 2}
            config[value["name"]] = {value["type"]: {"unused": stub}}
    from nemo_gym.global_config import GlobalConfigDictParser, GlobalConfigDictParserConfig

    parsed = GlobalConfigDictParser().parse(
        GlobalConfigDictParserConfig(initial_global_config_dict=config, skip_load_from_cli=True)
    )
    os.environ["NEMO_GYM_CONFIG_DICT"] = OmegaConf.to_yaml(parsed)
    os.environ["NEMO_GYM_CONFIG_PATH"] = key
    import nemo_gym.server_utils as server_utils

    server_utils.initialize_ray = lambda: None
    os.chdir(folder)
    sys.path.insert(0, str(folder))
    sys.argv = ["app.py"]
    runpy.run_path(str(folder / "app.py"), run_name="__main__")


if __name__ == "__main__":
    main()
