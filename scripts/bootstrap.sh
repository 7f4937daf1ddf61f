#!/usr/bin/env bash
# Installs what modelbus needs on a fresh Debian/Ubuntu machine, in three levels:
#   bootstrap.sh          the platform and the demo (`make demo`): Java 17, Maven, PostgreSQL and
#                         Prometheus from the OS packages when missing, Jaeger built from its Go
#                         module, the project into ./.venv with its `platform` extra
#   bootstrap.sh --dev    also the tools (`make unit`, `make check`, `make docs`): the `dev` extra
#   bootstrap.sh --test   also what only the tests use (`make test`): chromium, Alertmanager and
#                         amtool, kustomize and toxiproxy, and MLflow's and the Open Inference
#                         Protocol clients' virtualenvs
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[bootstrap] %s\n' "$*"; }
fail() { printf '[bootstrap] error: %s\n' "$*" >&2; exit 1; }

level=demo
case "${1:-}" in
  "") ;;
  --dev) level=dev ;;
  --test) level=test ;;
  *) fail "unknown option ${1} (none for the demo, --dev for the tools, --test for the tests)" ;;
esac
testing() { [ "$level" = test ]; }

missing=()
java_major=$( (java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1) || true)
[ "${java_major:-0}" -ge 17 ] 2>/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)
command -v prometheus >/dev/null || missing+=(prometheus)
if testing; then
  [ -x /usr/bin/chromium ] || missing+=(chromium fonts-dejavu-core)
  [ -x /usr/bin/prometheus-alertmanager ] || missing+=(prometheus-alertmanager)
fi

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    fail "missing system packages: ${missing[*]} (install them with your package manager, then run this again)"
  fi
  say "installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No package's daemon starts (Alertmanager's would take 9093, the Kafka controller's port):
  # the stack and the tests run their own.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
  if [[ " ${missing[*]} " == *" postgresql "* ]] && command -v pg_lsclusters >/dev/null; then
    # The package may start a default cluster on 5432; the stack runs its own.
    pg_lsclusters -h | awk '$4 == "online" {print $1, $2}' | while read -r version cluster; do
      say "stopping the package's default cluster $version/$cluster"
      pg_ctlcluster "$version" "$cluster" stop || true
    done
  fi
  if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v invoke-rc.d >/dev/null; then
    # Likewise the package's own Prometheus on 9090: the stack runs its own, on its own config.
    invoke-rc.d prometheus stop >/dev/null 2>&1 || true
  fi
else
  say "system packages present (java ${java_major}, maven, postgresql, prometheus$(testing && echo ', alertmanager, chromium'))"
fi

# kustomize renders k8s/ for the deployment tests; pinned, built from the Go module proxy.
kustomize_version=v5.7.1
kustomize=.modelbus/bin/kustomize
if ! testing; then
  :
elif [ -x "$kustomize" ] && "$kustomize" version 2>/dev/null | grep -qx "$kustomize_version"; then
  say "kustomize $kustomize_version present"
elif command -v go >/dev/null; then
  say "building kustomize $kustomize_version with go install (about 2 minutes the first time)"
  mkdir -p .modelbus/bin
  GOBIN="$PWD/.modelbus/bin" GOFLAGS=-mod=mod go install "sigs.k8s.io/kustomize/kustomize/v5@$kustomize_version" \
    || fail "go install sigs.k8s.io/kustomize/kustomize/v5@$kustomize_version failed (see above)"
else
  fail "Go is needed to build kustomize $kustomize_version for the k8s/ checks (or put that kustomize at $kustomize)"
fi

# Jaeger v2 receives the services' traces in the local stack; built from its Go module, pinned by
# scripts/jaeger/go.mod (`go get -tool github.com/jaegertracing/jaeger/cmd/jaeger@v1.75.0`).
jaeger=.modelbus/bin/jaeger
jaeger_stamp="$jaeger.built-$(cat scripts/jaeger/go.mod scripts/jaeger/go.sum | sha256sum | cut -c1-16)"
jaeger_build=""
if [ -x "$jaeger" ] && [ -f "$jaeger_stamp" ]; then
  say "jaeger v1.75.0 present"
elif command -v go >/dev/null; then
  # The compile runs while pip downloads and installs below (one is CPU-bound, the other mostly not);
  # its output goes to a log, and the script waits for it before it ends.
  mkdir -p .modelbus/bin .modelbus/logs
  say "building jaeger v1.75.0 from scripts/jaeger with go build, beside the Python install (about 5 minutes the first time; .modelbus/logs/jaeger-build.log)"
  (
    cd scripts/jaeger && GOFLAGS=-mod=mod go build -o "../../$jaeger" github.com/jaegertracing/jaeger/cmd/jaeger
  ) > .modelbus/logs/jaeger-build.log 2>&1 &
  jaeger_build=$!
  trap '[ -z "$jaeger_build" ] || kill "$jaeger_build" 2>/dev/null || true' EXIT  # a failure below stops it too
else
  fail "Go is needed to build jaeger v1.75.0 for the local stack (or put that jaeger at $jaeger)"
fi
wait_for_jaeger() {
  [ -n "$jaeger_build" ] || return 0
  if wait "$jaeger_build"; then
    rm -f "$jaeger".built-*
    touch "$jaeger_stamp"
    say "jaeger v1.75.0 built"
  else
    tail -n 30 .modelbus/logs/jaeger-build.log >&2
    fail "go build github.com/jaegertracing/jaeger/cmd/jaeger (scripts/jaeger) failed (above, and in .modelbus/logs/jaeger-build.log)"
  fi
  jaeger_build=""
}

# toxiproxy puts latency, bandwidth limits, blackholes and connection resets between the services
# and Kafka, PostgreSQL and S3 in the fault scenarios; pinned, built from the Go module proxy.
toxiproxy_version=v2.12.0
toxiproxy=.modelbus/bin/toxiproxy-server
if ! testing; then
  :
elif [ -x "$toxiproxy" ] && [ -f "$toxiproxy.built-$toxiproxy_version" ]; then
  say "toxiproxy $toxiproxy_version present"
elif command -v go >/dev/null; then
  say "building toxiproxy $toxiproxy_version with go install (about 1 minute the first time)"
  mkdir -p .modelbus/bin .modelbus/go-bin
  GOBIN="$PWD/.modelbus/go-bin" GOFLAGS=-mod=mod go install "github.com/Shopify/toxiproxy/v2/cmd/server@$toxiproxy_version" \
    || fail "go install github.com/Shopify/toxiproxy/v2/cmd/server@$toxiproxy_version failed (see above)"
  mv .modelbus/go-bin/server "$toxiproxy"
  rm -f "$toxiproxy".built-*
  touch "$toxiproxy.built-$toxiproxy_version"
else
  fail "Go is needed to build toxiproxy $toxiproxy_version for the fault scenarios (or put that toxiproxy-server at $toxiproxy)"
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || fail "Python 3.11 or newer is needed (found $("$python" --version 2>&1))"
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$python" -m venv .venv
fi
extra=$([ "$level" = demo ] && echo platform || echo dev)
digest=$(sha256sum pyproject.toml | cut -c1-16)
stamp=".venv/.installed-$extra-$digest"
if { [ -f "$stamp" ] || [ -f ".venv/.installed-dev-$digest" ]; } && .venv/bin/modelbus --help >/dev/null 2>&1; then
  say "modelbus already installed in .venv (pyproject.toml unchanged)"
else
  say "installing modelbus[$extra] and its dependencies into .venv (the first run downloads ~300 MB)"
  export PYTHONWARNINGS=ignore  # setuptools' notices about editable installs
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$extra]"
  rm -f .venv/.installed-*
  .venv/bin/modelbus --help >/dev/null && touch "$stamp"
  say "done: modelbus CLI ready at .venv/bin/modelbus"
fi
wait_for_jaeger
testing || exit 0

# MLflow in a virtualenv of its own: the MLflow interop tests (notebook models in, exports loaded
# with mlflow.pyfunc, the tracking mirror) and the serving benchmark use it, unmodified.
.venv/bin/python -c 'from tests.support.venvs import mlflow_python; mlflow_python()' \
  || fail "could not install MLflow into .modelbus/bench/mlflow-venv (see above)"
say "MLflow ready in .modelbus/bench/mlflow-venv"

# The Open Inference Protocol's clients (tritonclient, kserve) in a virtualenv of their own: the
# serving protocol tests call modelbus with them, unmodified.
.venv/bin/python -c 'from tests.support.venvs import clients_python; clients_python()' \
  || fail "could not install tritonclient and kserve into .modelbus/bench/clients-venv (see above)"
say "tritonclient and kserve ready in .modelbus/bench/clients-venv"
