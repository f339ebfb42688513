#!/usr/bin/env bash
# The scheduled calls a deployment makes with CronJobs (infra/k8s/*-cronjob.yaml), for an
# app running anywhere else, e.g. on a developer's machine (`scripts/run.sh` starts it):
#   POST /v1/admin/notifications/sweep  every SPINPAY_SWEEP_SECONDS (default 5)
#   POST /v1/admin/reconcile            every SPINPAY_RECONCILE_SECONDS (default 60)
# each called again at once while it answers "has_more": true (at most 20 times in a row).
# Without the sweep, merchant notifications are never delivered or retried; without
# reconciliation, a payment whose channel notification was lost stays waiting.
#
# Env: SPINPAY_URL (default http://127.0.0.1:3000) and SPIN_VARIABLE_ADMIN_TOKEN (the app's
# admin token; handed to curl on stdin, never on a command line). Needs curl.
# Prints a line for every call that did something or failed; quiet until the app first
# answers, so it can start before the app does. Runs until killed.
set -uo pipefail

url=${SPINPAY_URL:-http://127.0.0.1:3000}
url=${url%/}
sweep_every=${SPINPAY_SWEEP_SECONDS:-5}
reconcile_every=${SPINPAY_RECONCILE_SECONDS:-60}
token=${SPIN_VARIABLE_ADMIN_TOKEN:-}
if [ -z "$token" ]; then
  echo "scheduler: SPIN_VARIABLE_ADMIN_TOKEN is not set (the app's admin token)" >&2
  exit 2
fi
for name in sweep_every reconcile_every; do
  case "${!name}" in
    '' | *[!0-9]* | 0) echo "scheduler: ${name} must be a whole number of seconds > 0" >&2; exit 2 ;;
  esac
done
if ! command -v curl >/dev/null 2>&1; then
  echo "scheduler: curl not found; notifications will not be delivered" >&2
  exit 2
fi

answered=0 # set once the app has answered any call
# The token as a quoted string of curl's config syntax.
quoted=${token//\\/\\\\}
quoted=${quoted//\"/\\\"}

# call NAME PATH: POSTs {} to PATH until the answer has no "has_more": true (at most 20
# calls); prints each answer that reports work done (a count above 0) or a failure.
call() {
  local name=$1 path=$2 out rc
  for _ in $(seq 1 20); do
    out=$(printf 'header = "Authorization: Bearer %s"\n' "$quoted" |
      curl --config - --fail-with-body --silent --show-error --max-time 30 \
        -X POST -H 'Content-Type: application/json' --data '{}' "$url$path" 2>&1)
    rc=$?
    if [ $rc -eq 7 ] && [ $answered -eq 0 ]; then
      return # the app is not listening yet
    fi
    answered=1
    if [ $rc -ne 0 ]; then
      echo "scheduler: $name failed (curl exit $rc): ${out//$'\n'/ }" >&2
      return
    fi
    # Any count above 0 but the merchants visited (some always are).
    case "${out//\"merchants_visited\":/}" in *'":'[1-9]*) echo "scheduler: $name $out" ;; esac
    case "$out" in *'"merchants_failed":[{'*) echo "scheduler: $name passed over merchants: $out" >&2 ;; esac
    case "$out" in *'"has_more":true'*) ;; *) return ;; esac
  done
}

next_reconcile=0
while :; do
  call sweep /v1/admin/notifications/sweep
  now=$(date +%s)
  if [ "$now" -ge "$next_reconcile" ]; then
    call reconcile /v1/admin/reconcile
    # Counted from the first call the app answered, so it is not skipped while starting.
    [ $answered -eq 1 ] && next_reconcile=$((now + reconcile_every))
  fi
  sleep "$sweep_every"
done
