#!/usr/bin/env bash
# Property-based API test: runs schemathesis against a RUNNING spinpay app, using the
# repository's openapi.yaml as the oracle. It creates a fresh merchant through the admin
# endpoint, then fuzzes every operation with that merchant's secret key and fails when the
# app answers 5xx or a response does not match the spec.
#
# Usage:
#   scripts/schemathesis.sh BASE_URL ADMIN_TOKEN
#   SPINPAY_BASE_URL=http://127.0.0.1:3000 SPINPAY_ADMIN_TOKEN=... scripts/schemathesis.sh
#
# Knobs (environment):
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase   (default 25)
#   SCHEMATHESIS_MAX_TIME      time budget of the run in seconds     (default 120, at most 170)
#   SCHEMATHESIS_WORKERS       concurrent workers                    (default 1; with more,
#                              schemathesis 4.32.5 on CPython 3.11 has raised a spurious
#                              "AST constructor recursion depth mismatch" runtime error)
#   SCHEMATHESIS_SEED          seed, to replay a failing run         (default: random, printed)
#   SCHEMATHESIS_VENV          virtualenv holding the pinned tools   (default target/schemathesis-venv)
#   SCHEMATHESIS_REPORT_DIR    JUnit report directory                (default target/schemathesis-report)
#
# Exit status: 0 = no failure; 1 = schemathesis found failures; 2 = bad arguments or the app
# could not be reached / the merchant could not be created; 124/137 = the hard time bound hit.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
SPEC_VALIDATOR_VERSION=0.9.0
HARD_LIMIT_S=180

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SPEC="$ROOT/openapi.yaml"

die() { echo "schemathesis.sh: $*" >&2; exit 2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

case "${1:-}" in -h|--help) usage; exit 0 ;; esac
[ "$#" -le 2 ] || die "too many arguments (expected BASE_URL ADMIN_TOKEN); see --help"

BASE="${1:-${SPINPAY_BASE_URL:-}}"
ADMIN_TOKEN="${2:-${SPINPAY_ADMIN_TOKEN:-${SPIN_VARIABLE_ADMIN_TOKEN:-}}}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-25}"
MAX_TIME="${SCHEMATHESIS_MAX_TIME:-120}"
WORKERS="${SCHEMATHESIS_WORKERS:-1}"
SEED="${SCHEMATHESIS_SEED:-}"
VENV="${SCHEMATHESIS_VENV:-$ROOT/target/schemathesis-venv}"
REPORT_DIR="${SCHEMATHESIS_REPORT_DIR:-$ROOT/target/schemathesis-report}"

[ -n "$BASE" ] || die "BASE_URL missing (first argument or SPINPAY_BASE_URL), e.g. http://127.0.0.1:3000"
[[ "$BASE" =~ ^https?://[^/[:space:]]+(/[^[:space:]]*)?$ ]] \
  || die "BASE_URL '$BASE' is not an http(s) URL such as http://127.0.0.1:3000"
BASE="${BASE%/}"
[ -n "$ADMIN_TOKEN" ] || die "ADMIN_TOKEN missing (second argument, SPINPAY_ADMIN_TOKEN or SPIN_VARIABLE_ADMIN_TOKEN)"
[[ "$MAX_EXAMPLES" =~ ^[1-9][0-9]*$ ]] || die "SCHEMATHESIS_MAX_EXAMPLES '$MAX_EXAMPLES' is not a positive integer"
[[ "$MAX_TIME" =~ ^[1-9][0-9]*$ ]] || die "SCHEMATHESIS_MAX_TIME '$MAX_TIME' is not a positive integer"
[ "$MAX_TIME" -le $((HARD_LIMIT_S - 10)) ] || die "SCHEMATHESIS_MAX_TIME $MAX_TIME is over $((HARD_LIMIT_S - 10)) s"
[[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] && [ "$WORKERS" -le 64 ] || die "SCHEMATHESIS_WORKERS '$WORKERS' is not 1..64"
[ -z "$SEED" ] || [[ "$SEED" =~ ^[0-9]+$ ]] || die "SCHEMATHESIS_SEED '$SEED' is not a non-negative integer"
[ -f "$SPEC" ] || die "spec not found: $SPEC"
command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required"

# 1. Pinned tools in a private virtualenv (reused when the versions already match).
installed_version() { "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true; }
if [ "$(installed_version schemathesis)" != "$SCHEMATHESIS_VERSION" ] \
  || [ "$(installed_version openapi-spec-validator)" != "$SPEC_VALIDATOR_VERSION" ]; then
  echo "==> installing schemathesis==$SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$SPEC_VALIDATOR_VERSION"
fi

# 2. The spec itself must be valid OpenAPI before it can judge the app.
echo "==> validating $SPEC"
"$VENV/bin/openapi-spec-validator" "$SPEC"

# 3. Wait (bounded) until the app answers at all.
echo "==> waiting for $BASE"
deadline=$((SECONDS + 30))
until curl -s -o /dev/null --max-time 2 "$BASE/v1/payments"; do
  [ "$SECONDS" -lt "$deadline" ] || die "no HTTP answer from $BASE within 30 s; is the app running?"
  sleep 0.5
done

# 4. A fresh merchant, so runs never share state.
echo "==> creating a merchant"
body_file="$(mktemp)"
trap 'rm -f "$body_file"' EXIT
status="$(curl -sS -o "$body_file" -w '%{http_code}' --max-time 10 \
  -X POST "$BASE/v1/admin/merchants" \
  -H "Authorization: Bearer $ADMIN_TOKEN" \
  -H 'Content-Type: application/json' \
  -H "Idempotency-Key: schemathesis-$(date +%s)-$$" \
  --data '{"name":"schemathesis"}')" \
  || die "POST $BASE/v1/admin/merchants failed (curl)"
case "$status" in
  200|201) ;;
  *) die "POST /v1/admin/merchants answered HTTP $status: $(head -c 500 "$body_file")" ;;
esac
SECRET_KEY="$(python3 -c '
import json, sys
try:
    key = json.load(open(sys.argv[1]))["secret_key"]
except Exception as e:
    sys.exit(f"no secret_key in the merchant response: {e}")
if not isinstance(key, str) or not key.startswith("sk_"):
    sys.exit("secret_key is not a string starting with sk_")
print(key)
' "$body_file")" || die "could not read the merchant's secret key: $(head -c 500 "$body_file")"

# 5. Fuzz. --max-time bounds the run; `timeout` is the hard stop if schemathesis overruns.
args=(
  run "$SPEC"
  --url "$BASE"
  --header "Authorization: Bearer $SECRET_KEY"
  --checks "not_a_server_error,response_schema_conformance"
  --max-examples "$MAX_EXAMPLES"
  --max-time "$MAX_TIME"
  --workers "$WORKERS"
  --request-timeout 20
  --generation-database none
  --report junit
  --report-dir "$REPORT_DIR"
  --no-color
)
[ -z "$SEED" ] || args+=(--seed "$SEED")
echo "==> schemathesis $SCHEMATHESIS_VERSION: ${MAX_EXAMPLES} examples/operation, ${MAX_TIME} s budget, ${WORKERS} workers"
rc=0
timeout --kill-after=10 "$HARD_LIMIT_S" "$VENV/bin/schemathesis" "${args[@]}" || rc=$?
case "$rc" in
  0) echo "==> schemathesis: no 5xx and no response outside the spec" ;;
  124|137) echo "==> schemathesis: stopped by the ${HARD_LIMIT_S} s hard limit" >&2 ;;
  *) echo "==> schemathesis: failures found (exit $rc); JUnit report in $REPORT_DIR" >&2 ;;
esac
exit "$rc"
