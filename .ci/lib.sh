# shellcheck shell=bash
# Helpers shared by .ci/run and .ci/start-services.sh. Source it; it defines functions only.

ci_log() { printf '[ci %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
ci_die() { ci_log "ERROR: $*"; exit 1; }

# Print the test command documented in a README: the first non-blank line of the fenced code block
# that follows the line `<!-- test-command -->` (only blank lines may stand between them).
readme_test_command() {
  local readme="$1"
  [[ -f "$readme" ]] || { ci_log "$readme not found"; return 1; }
  local out rc=0
  out="$(awk '
    state == 0 && /^[[:space:]]*<!--[[:space:]]*test-command[[:space:]]*-->[[:space:]]*$/ { state = 1; next }
    state == 1 && /^[[:space:]]*$/ { next }
    state == 1 && /^[[:space:]]*(```|~~~)/ { state = 2; next }
    state == 1 { err = "text between the <!-- test-command --> marker and its fenced block"; exit }
    state == 2 && /^[[:space:]]*(```|~~~)/ { err = "the fenced block after <!-- test-command --> is empty"; exit }
    state == 2 && /^[[:space:]]*$/ { next }
    state == 2 { sub(/^[[:space:]]+/, ""); sub(/[[:space:]]+$/, ""); print; found = 1; exit }
    END {
      if (found) exit 0
      if (err == "") err = (state == 0 ? "no <!-- test-command --> marker" : "no fenced block after the <!-- test-command --> marker")
      print err > "/dev/stderr"
      exit 2
    }
  ' "$readme")" || rc=$?
  if [[ $rc -ne 0 || -z "$out" ]]; then
    ci_log "$readme: no usable test command"
    return 1
  fi
  printf '%s\n' "$out"
}

port_open() {  # host port
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Echo the preferred port when nothing listens there, else a free one (with a warning).
pick_port() {
  local preferred="$1"
  if port_open 127.0.0.1 "$preferred"; then
    local other
    other="$(free_port)"
    ci_log "port $preferred is already in use; using $other instead"
    printf '%s\n' "$other"
  else
    printf '%s\n' "$preferred"
  fi
}

find_python311() {
  local candidate
  for candidate in "${CONVEYOR_CI_PYTHON:-}" "$(command -v python3.11 || true)" \
    "$(pyenv which python3.11 2>/dev/null || true)" "$HOME"/.pyenv/versions/3.11*/bin/python3.11 \
    /usr/local/bin/python3.11 /usr/bin/python3.11; do
    [[ -n "$candidate" && -x "$candidate" ]] || continue
    if "$candidate" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

EMULATOR_NAMES=()
EMULATOR_PIDS=()
EMULATOR_LOGS=()

# start_emulator NAME LOGFILE COMMAND...: run COMMAND in a session of its own (so that the JVM
# the gcloud wrapper spawns is stopped with it) with output to LOGFILE.
start_emulator() {
  local name="$1" log="$2"
  shift 2
  command -v "$1" >/dev/null || ci_die "$1 not found: google-cloud-cli is needed for the $name emulator"
  ci_log "starting $name emulator: $*"
  setsid "$@" >"$log" 2>&1 </dev/null &
  EMULATOR_NAMES+=("$name")
  EMULATOR_PIDS+=("$!")
  EMULATOR_LOGS+=("$log")
}

show_log_tail() {  # name log
  ci_log "---- last lines of the $1 log ($2) ----"
  tail -n 40 "$2" >&2 2>/dev/null || true
  ci_log "---- end of the $1 log ----"
}

_emulator_pid() {
  local i
  for i in "${!EMULATOR_NAMES[@]}"; do
    if [[ "${EMULATOR_NAMES[$i]}" == "$1" ]]; then
      printf '%s\n' "${EMULATOR_PIDS[$i]}"
      return 0
    fi
  done
  return 1
}

# wait_emulator NAME HOST PORT LOGFILE: bounded wait until HOST:PORT accepts connections.
wait_emulator() {
  local name="$1" host="$2" port="$3" log="$4"
  local limit="${CONVEYOR_CI_EMULATOR_TIMEOUT:-180}"
  local pid deadline=$((SECONDS + limit))
  pid="$(_emulator_pid "$name")"
  until port_open "$host" "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      show_log_tail "$name" "$log"
      ci_die "the $name emulator exited before listening on $host:$port"
    fi
    if ((SECONDS >= deadline)); then
      show_log_tail "$name" "$log"
      ci_die "the $name emulator did not accept connections on $host:$port within ${limit}s"
    fi
    sleep 0.5
  done
  ci_log "$name emulator is up on $host:$port"
}

# Stop every started emulator: TERM to its process group, KILL after a grace period.
stop_emulators() {
  local i pid
  for i in "${!EMULATOR_PIDS[@]}"; do
    pid="${EMULATOR_PIDS[$i]}"
    if kill -0 -- "-$pid" 2>/dev/null; then
      ci_log "stopping ${EMULATOR_NAMES[$i]} emulator (process group $pid)"
      kill -TERM -- "-$pid" 2>/dev/null || true
    fi
  done
  for i in "${!EMULATOR_PIDS[@]}"; do
    pid="${EMULATOR_PIDS[$i]}"
    local deadline=$((SECONDS + 15))
    while kill -0 -- "-$pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep 0.2
    done
    if kill -0 -- "-$pid" 2>/dev/null; then
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  EMULATOR_PIDS=()
  EMULATOR_NAMES=()
  EMULATOR_LOGS=()
}

# Make sure Redis answers on 127.0.0.1:6379; start it like the machine does when it does not.
ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    ci_log "redis is up on 127.0.0.1:6379"
    return 0
  fi
  command -v redis-server >/dev/null || ci_die "redis does not answer on 127.0.0.1:6379 and redis-server is not installed"
  ci_log "redis does not answer on 127.0.0.1:6379: starting it"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  local deadline=$((SECONDS + 30))
  until redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; do
    if ((SECONDS >= deadline)); then
      show_log_tail redis /var/log/redis/ci.log
      ci_die "redis did not answer on 127.0.0.1:6379 within 30s"
    fi
    sleep 0.5
  done
  ci_log "redis started on 127.0.0.1:6379"
}

# Debian's chromium and chromedriver for the console's browser tests (never a downloaded browser).
ensure_browser() {
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    ci_log "chromium $(chromium --version 2>/dev/null | awk '{print $2}') and chromedriver are installed"
    return 0
  fi
  ci_log "installing chromium and chromium-driver (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  # Wait for another apt/dpkg run (unattended upgrades, a parallel job) instead of failing on its lock.
  local lock_wait=(-o DPkg::Lock::Timeout=600)
  apt-get "${lock_wait[@]}" update -qq >/dev/null || ci_die "apt-get update failed"
  apt-get "${lock_wait[@]}" install -y -qq chromium chromium-driver >/dev/null ||
    ci_die "apt-get install chromium chromium-driver failed"
}
