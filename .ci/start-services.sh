#!/usr/bin/env bash
# Start the backend services the tests need, for a developer's shell, and keep them up until Ctrl-C:
#
#   bash .ci/start-services.sh        # in one terminal; copy the printed exports into another
#
# Same services and ports as .ci/run (Redis on 6379, Firestore emulator on 8686, Pub/Sub emulator on
# 8687, or a free port when one is taken). Tests also start emulators on their own when the
# variables are unset, but reusing running ones saves ~10 s per pytest session.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=.ci/lib.sh
source "$ROOT/.ci/lib.sh"
export CLOUDSDK_CORE_DISABLE_PROMPTS=1 CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=1

LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/conveyor-services.XXXXXX")"
trap 'stop_emulators' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_redis
FIRESTORE_PORT="$(pick_port "${CONVEYOR_CI_FIRESTORE_PORT:-8686}")"
PUBSUB_PORT="$(pick_port "${CONVEYOR_CI_PUBSUB_PORT:-8687}")"
start_emulator firestore "$LOG_DIR/firestore.log" \
  gcloud emulators firestore start "--host-port=127.0.0.1:$FIRESTORE_PORT"
start_emulator pubsub "$LOG_DIR/pubsub.log" \
  gcloud beta emulators pubsub start "--host-port=127.0.0.1:$PUBSUB_PORT" --project=conveyor-test
wait_emulator firestore 127.0.0.1 "$FIRESTORE_PORT" "$LOG_DIR/firestore.log"
wait_emulator pubsub 127.0.0.1 "$PUBSUB_PORT" "$LOG_DIR/pubsub.log"

cat <<EXPORTS
export FIRESTORE_EMULATOR_HOST=127.0.0.1:$FIRESTORE_PORT
export PUBSUB_EMULATOR_HOST=127.0.0.1:$PUBSUB_PORT
export CONVEYOR_TEST_REDIS_URL=redis://127.0.0.1:6379/15
EXPORTS
ci_log "services are up (logs in $LOG_DIR); Ctrl-C stops the emulators"
while :; do
  for i in "${!EMULATOR_PIDS[@]}"; do
    if ! kill -0 "${EMULATOR_PIDS[$i]}" 2>/dev/null; then
      show_log_tail "${EMULATOR_NAMES[$i]}" "${EMULATOR_LOGS[$i]}"
      ci_die "the ${EMULATOR_NAMES[$i]} emulator stopped"
    fi
  done
  sleep 2
done
