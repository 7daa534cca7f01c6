#!/usr/bin/env bash
# Validates the deployment files (nothing is deployed, nothing is pulled):
#   1. docker-compose.yml         docker-compose config -q (Debian's docker-compose)
#   2. compose environment        each platform service's {section}_{option} variables, as an INI
#                                 file, pass `abaco check-config` (unknown keys and bad values fail)
#   3. deploy/prometheus.yml      parses, and scrapes the API's /metrics
#   4. images/platform/build.sh   bash -n
#   5. ansible/site.yml           ansible-playbook --syntax-check -i ansible/inventory.example
#   6. ansible abaco.conf.j2      rendered for every api/compute host of the example inventory,
#                                 passes `abaco check-config`
# Installs docker-compose and ansible-core with apt-get when missing (pip in a venv otherwise).
# Checks 2 and 6 need an abaco binary ($ABACO_BIN, target/release/abaco, target/debug/abaco or
# the image abaco/platform:local); without one they print SKIPPED, and fail when CI is set.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "check-deploy: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}
passed=0
pass() {
  passed=$((passed + 1))
  log "ok: $*"
}
skip() {
  [ -z "${CI:-}" ] || die "$* (CI is set, so a skipped check fails)"
  log "SKIPPED: $*"
}

apt_updated=0
apt_install() {
  [ "$(id -u)" = 0 ] || return 1
  command -v apt-get >/dev/null 2>&1 || return 1
  export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq >"$tmp/apt.log" 2>&1 || { cat "$tmp/apt.log" >&2; return 1; }
    apt_updated=1
  fi
  log "installing $* (apt-get)"
  apt-get install -y -qq --no-install-recommends "$@" >"$tmp/apt.log" 2>&1 || { cat "$tmp/apt.log" >&2; return 1; }
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Python with PyYAML (docker-compose and ansible-core bring it on Debian).
yaml_python() {
  local py
  for py in /usr/bin/python3 python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import yaml' 2>/dev/null; then
      echo "$py"
      return
    fi
  done
  apt_install python3-yaml >/dev/null && echo /usr/bin/python3
}

# An abaco binary as a command line, or nothing: $ABACO_BIN, else the newer of the release and
# debug builds (an old build may not know newer keys), else the platform image.
abaco_cmd=()
newest=$(ls -t target/release/abaco target/debug/abaco 2>/dev/null | head -1) || true
if [ -n "${ABACO_BIN:-}" ]; then
  [ -x "$ABACO_BIN" ] || die "ABACO_BIN=$ABACO_BIN is not an executable"
  abaco_cmd=("$ABACO_BIN")
elif [ -n "$newest" ]; then
  abaco_cmd=("$newest")
elif command -v docker >/dev/null 2>&1 && docker image inspect abaco/platform:local >/dev/null 2>&1; then
  abaco_cmd=(docker run --rm -i --entrypoint /bin/sh abaco/platform:local -c 'cat >/tmp/abaco.conf && abaco --config /tmp/abaco.conf check-config')
fi
# Runs `abaco check-config` on the INI file $1 in an empty environment (no overrides leak in).
check_config() {
  if [ "${abaco_cmd[0]}" = docker ]; then
    "${abaco_cmd[@]}" <"$1"
  else
    env -i PATH=/usr/bin:/bin "${abaco_cmd[@]}" --config "$1" check-config
  fi
}

# 1. docker-compose.yml
log "1. docker-compose.yml: docker-compose config -q"
command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose ||
  die "docker-compose is missing and could not be installed (apt-get install docker-compose)"
log "   $(docker-compose version --short 2>/dev/null || docker-compose --version)"
docker-compose -f docker-compose.yml config -q || die "docker-compose.yml is invalid"
docker-compose -f docker-compose.yml --profile special-queue config >"$tmp/compose.yml" ||
  die "docker-compose.yml is invalid with the profile special-queue"
pass "docker-compose.yml is valid (with and without the profile special-queue)"

# 2. The platform services' environment is a configuration abaco accepts.
log "2. compose environment of the abaco/platform:local services: abaco check-config"
[ ${#abaco_cmd[@]} -eq 0 ] || log "   abaco: ${abaco_cmd[*]}"
py=$(yaml_python) || die "no Python with PyYAML (apt-get install python3-yaml)"
"$py" - "$tmp/compose.yml" "$tmp" <<'PY' >"$tmp/services"
import sys, yaml
compose = yaml.safe_load(open(sys.argv[1]))
for name, svc in sorted(compose["services"].items()):
    if svc.get("image") != "abaco/platform:local":
        continue
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    sections = {}
    for key, value in env.items():
        section, sep, option = key.partition("_")
        if not sep:
            sys.exit(f"service {name}: environment variable {key} is not {{section}}_{{option}}")
        sections.setdefault(section, []).append(f"{option} = {'' if value is None else value}")
    with open(f"{sys.argv[2]}/{name}.conf", "w") as out:
        for section, lines in sections.items():
            out.write(f"[{section}]\n" + "\n".join(lines) + "\n")
    print(name)
PY
[ -s "$tmp/services" ] || die "docker-compose.yml has no service with image abaco/platform:local"
if [ ${#abaco_cmd[@]} -gt 0 ]; then
  while read -r service; do
    out=$(check_config "$tmp/$service.conf" 2>&1) || die "service $service: its environment is not a valid abaco configuration:
$out"
    grep -q 'backend: Distributed' <<<"$out" || die "service $service does not run the distributed backend"
    log "   $service: accepted"
  done <"$tmp/services"
  pass "the environment of $(wc -l <"$tmp/services") platform services is valid"
else
  skip "no abaco binary (build one, or set ABACO_BIN) to check the compose environment"
fi

# 3. deploy/prometheus.yml
log "3. deploy/prometheus.yml: parses and scrapes api:8000/metrics"
"$py" - deploy/prometheus.yml <<'PY' || die "deploy/prometheus.yml is invalid"
import sys, yaml
conf = yaml.safe_load(open(sys.argv[1]))
jobs = {j["job_name"]: j for j in conf["scrape_configs"]}
api = jobs.get("abaco-api") or sys.exit("no scrape job abaco-api")
assert api.get("metrics_path", "/metrics") == "/metrics", "abaco-api must scrape /metrics"
targets = [t for sc in api["static_configs"] for t in sc["targets"]]
assert "api:8000" in targets, f"abaco-api scrapes {targets}, not api:8000"
PY
pass "deploy/prometheus.yml scrapes api:8000/metrics"

# 4. The platform image recipe.
log "4. images/platform/build.sh: bash -n (Dockerfile present)"
[ -f images/platform/Dockerfile ] || die "images/platform/Dockerfile is missing"
bash -n images/platform/build.sh || die "images/platform/build.sh has a syntax error"
pass "images/platform/build.sh parses"

# 5. ansible/site.yml
log "5. ansible/site.yml: ansible-playbook --syntax-check -i ansible/inventory.example"
ansible_bin=
if command -v ansible-playbook >/dev/null 2>&1; then
  ansible_bin=$(dirname "$(command -v ansible-playbook)")
elif apt_install ansible-core; then
  ansible_bin=/usr/bin
else
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/abaco-ansible-venv"
  log "installing ansible-core in $venv (pip)"
  { [ -x "$venv/bin/ansible-playbook" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q ansible-core; }; } >&2 ||
    die "ansible-core could not be installed (apt-get install ansible-core, or pip install ansible-core)"
  ansible_bin="$venv/bin"
fi
export ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=0 ANSIBLE_LOCALHOST_WARNING=0
log "   $("$ansible_bin/ansible-playbook" --version | head -1)"
"$ansible_bin/ansible-playbook" --syntax-check -i ansible/inventory.example ansible/site.yml >"$tmp/syntax.log" 2>&1 ||
  die "ansible-playbook --syntax-check failed:
$(cat "$tmp/syntax.log")"
"$ansible_bin/ansible-playbook" --list-tasks -i ansible/inventory.example ansible/site.yml >"$tmp/tasks.log" 2>&1 ||
  die "ansible-playbook --list-tasks failed:
$(cat "$tmp/tasks.log")"
pass "ansible/site.yml passes --syntax-check ($(grep -c 'TAGS:' "$tmp/tasks.log") tasks in $(grep -c '^  play #' "$tmp/tasks.log") plays)"

# 6. The abaco.conf the ansible roles render is a configuration abaco accepts.
log "6. ansible abaco.conf.j2 for the api/compute hosts of inventory.example: abaco check-config"
if [ ${#abaco_cmd[@]} -gt 0 ]; then
  # A throwaway role holding the common role's defaults, so that they keep role-default
  # precedence (inventory variables win, as in site.yml).
  mkdir -p "$tmp/roles/render/defaults" "$tmp/roles/render/tasks"
  cp ansible/roles/common/defaults/main.yml "$tmp/roles/render/defaults/main.yml"
  cat >"$tmp/roles/render/tasks/main.yml" <<YML
- name: abaco.conf
  ansible.builtin.template:
    src: $PWD/ansible/roles/common/templates/abaco.conf.j2
    dest: "$tmp/rendered-{{ inventory_hostname }}.conf"
    mode: "0600"
YML
  cat >"$tmp/render.yml" <<YML
- name: Render abaco.conf as the common role does, on the controller only
  hosts: api:compute
  connection: local
  gather_facts: false
  roles:
    - render
YML
  "$ansible_bin/ansible-playbook" -i ansible/inventory.example "$tmp/render.yml" >"$tmp/render.log" 2>&1 ||
    die "rendering abaco.conf.j2 failed:
$(cat "$tmp/render.log")"
  n=0
  for conf in "$tmp"/rendered-*.conf; do
    host=${conf##*/rendered-}
    host=${host%.conf}
    out=$(check_config "$conf" 2>&1) || die "the abaco.conf rendered for $host is not valid:
$out"
    log "   $host: accepted"
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || die "abaco.conf.j2 was rendered for no host"
  pass "abaco.conf.j2 renders a valid configuration for $n hosts"
else
  skip "no abaco binary (build one, or set ABACO_BIN) to check the rendered abaco.conf"
fi

log "deployment files are valid"
echo "check-deploy: $passed passed, 0 failed"
