#!/usr/bin/env bash
# Offline checks of the deployment files, no Docker engine or cluster needed:
#   1. docker-compose.yml against the Compose specification (check-jsonschema's vendored
#      compose-spec schema: `--builtin-schema vendor.compose-spec`);
#   2. every Kubernetes manifest under deploy/kubernetes against the Kubernetes OpenAPI schemas
#      bundled in kubernetes-validate (strict: unknown fields fail), each kustomization listing every
#      manifest of its directory, and the rendered kustomizations when kubectl is installed;
#   3. every variable the binaries require set for every compose service and Kubernetes workload
#      that runs them (REQUIRED_* below, the one list; checked against the code too), and the
#      engine's consumer group apart from the workers' (gamify-engine refuses to start otherwise).
# The tools come from PyPI (deploy/validate-requirements.txt) into target/deploy-venv.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# --- What each binary needs set in a deployment: the one list. ------------------------------------
# Required by the code (no default): config::required / config::postgres_url / config::envelope_secret
# in apps/api/src/config.rs, apps/worker/src/config.rs (which gamify-engine reads too),
# apps/engine/src/config.rs, libs/common/src/config.rs, and ADMIN_TOKEN
# (required unless GAMIFY_DEV_MODE=1, which no deployment may use). Also KAFKA_BROKERS and
# REDIS_URL: their defaults (127.0.0.1) only suit a local run, never a container.
REQUIRED_API="DATABASE_URL ENVELOPE_SECRET ADMIN_TOKEN KAFKA_BROKERS REDIS_URL"   # gamify-api serve
REQUIRED_MIGRATE="DATABASE_OWNER_URL DATABASE_URL"                               # gamify-api migrate
REQUIRED_WORKER="DATABASE_URL ENVELOPE_SECRET KAFKA_BROKERS"                     # gamify-worker
REQUIRED_ENGINE="DATABASE_URL ENVELOPE_SECRET KAFKA_BROKERS"                     # gamify-engine
CONFIG_SOURCES="apps/api/src/config.rs apps/worker/src/config.rs apps/engine/src/config.rs libs/common/src/config.rs"
KUBERNETES_VERSION=1.32.0   # one of the versions kubernetes-validate bundles

VENV=$ROOT/target/deploy-venv
REQUIREMENTS=deploy/validate-requirements.txt
if ! cmp -s "$REQUIREMENTS" "$VENV/.requirements" 2>/dev/null; then
  log "installing the validators into ${VENV#"$ROOT"/}"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  cp "$REQUIREMENTS" "$VENV/.requirements"
fi

log "docker-compose.yml against the Compose specification"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml

log "Kubernetes manifests against the Kubernetes $KUBERNETES_VERSION schemas"
mapfile -t manifests < <(find deploy/kubernetes -name '*.yaml' ! -name kustomization.yaml | sort)
[ ${#manifests[@]} -gt 0 ] || die "no manifests under deploy/kubernetes"
"$VENV/bin/kubernetes-validate" --quiet --strict -k "$KUBERNETES_VERSION" "${manifests[@]}"
if command -v kubectl >/dev/null 2>&1; then
  for dir in $(find deploy/kubernetes -name kustomization.yaml -exec dirname {} \; | sort); do
    kubectl kustomize "$dir" >"$ROOT/target/deploy-rendered.yaml" || die "kubectl kustomize $dir failed"
    "$VENV/bin/kubernetes-validate" --quiet --strict -k "$KUBERNETES_VERSION" "$ROOT/target/deploy-rendered.yaml"
  done
else
  log "kubectl not installed: kustomizations checked for completeness only, not rendered"
fi

log "required variables for every service and workload"
REQUIRED_API=$REQUIRED_API REQUIRED_MIGRATE=$REQUIRED_MIGRATE REQUIRED_WORKER=$REQUIRED_WORKER \
  REQUIRED_ENGINE=$REQUIRED_ENGINE CONFIG_SOURCES=$CONFIG_SOURCES "$VENV/bin/python" - <<'PY'
import os, re, sys, pathlib
import yaml

required = {
    "gamify-api serve": os.environ["REQUIRED_API"].split(),
    "gamify-api migrate": os.environ["REQUIRED_MIGRATE"].split(),
    "gamify-worker": os.environ["REQUIRED_WORKER"].split(),
    "gamify-engine": os.environ["REQUIRED_ENGINE"].split(),
}
errors = []

# The list must cover every variable the code requires (a new required variable fails here until
# it is added above and set everywhere).
in_code = set()
for source in os.environ["CONFIG_SOURCES"].split():
    text = pathlib.Path(source).read_text()
    in_code |= set(re.findall(r'\b(?:required|postgres_url)\("([A-Z0-9_]+)"\)', text))
listed = set().union(*required.values())
for variable in sorted(in_code - listed):
    errors.append(f"{variable} is required by the code but missing from REQUIRED_* in scripts/validate-deploy.sh")

def unset(value):
    """Empty counts as unset (config::optional); ${X} without a default is not guaranteed."""
    if value is None:
        return True
    value = str(value).strip()
    return value == "" or re.fullmatch(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", value) is not None

def group_of(role, env):
    """The consumer group a worker or engine joins (apps/worker/src/config.rs, apps/engine/src/config.rs)."""
    def get(name):
        value = env.get(name)
        return None if unset(value) else str(value).strip()
    worker_group = get("KAFKA_GROUP_ID")
    if role == "gamify-worker":
        return worker_group or "gamify-worker"
    return get("ENGINE_GROUP_ID") or (f"{worker_group}.engine" if worker_group else "gamify-engine")

def check_groups(where, groups):
    """groups: [(description, role, env)] of one deployment: no engine shares a workers' group."""
    workers = {group_of(role, env) for _, role, env in groups if role == "gamify-worker"}
    for description, role, env in groups:
        if role != "gamify-engine":
            continue
        group = group_of(role, env)
        own = str(env.get("KAFKA_GROUP_ID") or "").strip() or "gamify-worker"
        if group == own or group in workers:
            errors.append(f"{where}: {description} consumes in group {group}, the workers' group: set ENGINE_GROUP_ID apart from KAFKA_GROUP_ID")

# --- docker-compose.yml
compose = yaml.safe_load(pathlib.Path("docker-compose.yml").read_text())
found = set()
groups = []
for name, service in (compose.get("services") or {}).items():
    build = service.get("build")
    target = build.get("target") if isinstance(build, dict) else None
    image = str(service.get("image", ""))
    command = service.get("command") or []
    command = command.split() if isinstance(command, str) else command
    if target == "worker" or image.startswith("gamify-worker"):
        role = "gamify-worker"
    elif target == "engine" or image.startswith("gamify-engine"):
        role = "gamify-engine"
    elif target == "api" or image.startswith("gamify-api"):
        role = "gamify-api migrate" if "migrate" in command else "gamify-api serve"
    else:
        continue
    found.add(role)
    env = {}
    env_files = service.get("env_file") or []
    for env_file in [env_files] if isinstance(env_files, (str, dict)) else env_files:
        path = env_file["path"] if isinstance(env_file, dict) else env_file
        for line in pathlib.Path(path).read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, value = line.split("=", 1)
                env[key.strip()] = value
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, None) for item in environment)
    env.update(environment)
    for variable in required[role]:
        if unset(env.get(variable)):
            errors.append(f"docker-compose.yml: service {name} ({role}) does not set {variable}")
    groups.append((f"service {name}", role, env))
for role in required:
    if role not in found:
        errors.append(f"docker-compose.yml: no service runs {role}")
check_groups("docker-compose.yml", groups)

# --- deploy/kubernetes
documents = []
for path in sorted(pathlib.Path("deploy/kubernetes").rglob("*.yaml")):
    if path.name != "kustomization.yaml":
        documents += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
sources = {}
for path, doc in documents:
    if doc.get("kind") in ("ConfigMap", "Secret"):
        data = dict(doc.get("data") or {})
        data.update(doc.get("stringData") or {})
        sources[(doc["kind"], doc["metadata"]["name"])] = data

# every manifest is listed in its directory's kustomization (else kubectl apply -k skips it)
for kustomization in pathlib.Path("deploy/kubernetes").rglob("kustomization.yaml"):
    listed = (yaml.safe_load(kustomization.read_text()) or {}).get("resources") or []
    for path in sorted(kustomization.parent.glob("*.yaml")):
        if path.name != "kustomization.yaml" and path.name not in listed:
            errors.append(f"{path} is not listed in {kustomization}")
    for entry in listed:
        if not (kustomization.parent / entry).exists():
            errors.append(f"{kustomization} lists {entry}, which does not exist")

found = set()
groups = []
for path, doc in documents:
    kind = doc.get("kind")
    if kind not in ("Deployment", "Job", "StatefulSet", "DaemonSet", "CronJob"):
        continue
    spec = doc["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else doc["spec"]
    for container in spec["template"]["spec"].get("containers", []):
        image = container.get("image", "").rsplit("/", 1)[-1].split(":")[0]
        args = (container.get("command") or []) + (container.get("args") or [])
        if image == "gamify-worker":
            role = "gamify-worker"
        elif image == "gamify-engine":
            role = "gamify-engine"
        elif image == "gamify-api":
            role = "gamify-api migrate" if "migrate" in args else "gamify-api serve"
        else:
            continue
        found.add(role)
        where = f"{path}: {kind} {doc['metadata']['name']} container {container['name']} ({role})"
        env = {}
        for source in container.get("envFrom") or []:
            for key, kind_name in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if key in source:
                    ref = (kind_name, source[key]["name"])
                    if ref not in sources:
                        errors.append(f"{where}: envFrom {kind_name} {ref[1]} is not in deploy/kubernetes")
                        continue
                    prefix = source.get("prefix", "")
                    env.update({prefix + k: v for k, v in sources[ref].items()})
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = item["value"]
            elif "valueFrom" in item:
                value_from = item["valueFrom"]
                for key, kind_name in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    if key in value_from:
                        ref = (kind_name, value_from[key]["name"])
                        value = sources.get(ref, {}).get(value_from[key]["key"])
                        if value is None:
                            errors.append(f"{where}: {item['name']} refers to {kind_name} {ref[1]} key {value_from[key]['key']}, not in deploy/kubernetes")
                        env[item["name"]] = value
                if "fieldRef" in value_from or "resourceFieldRef" in value_from:
                    env[item["name"]] = "(from the pod)"
            else:
                env[item["name"]] = None
        for variable in required[role]:
            if unset(env.get(variable)):
                errors.append(f"{where} does not set {variable}")
        groups.append((f"{path}: {kind} {doc['metadata']['name']} container {container['name']}", role, env))
for role in required:
    if role not in found:
        errors.append(f"deploy/kubernetes: no workload runs {role}")
check_groups("deploy/kubernetes", groups)

for error in errors:
    print(f"\033[1;31merror:\033[0m {error}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
log "deployment files are valid"
