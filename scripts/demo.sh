#!/usr/bin/env bash
# The main job (`make demo`): on a fresh Debian 12 machine, as root, build a real Ceph 16.2.15 cluster in
# network namespaces, reproduce the 2014 nf_conntrack incident on one OSD host, then rerun it with each
# remedy, print the comparison, show the ctguard mgr module's health check rising and clearing, and tear
# everything down again.
#
#   scripts/demo.sh                       # 3 hosts x 4 OSDs, every scenario (about 10-20 minutes)
#   DEMO_PREFIX=cl DEMO_HOSTS=3 DEMO_OSDS=4 DEMO_OUT=out/lab DEMO_SCENARIOS="all-at-once untracked" scripts/demo.sh
#
# Only 198.18.0.0/15 inside namespaces named DEMO_PREFIX-*; nothing in the init namespace is changed. The
# time series, logs and one PNG per scenario land in DEMO_OUT/<run id>/ (default out/lab). `lab down` runs on
# every exit path, so an interrupted demo leaves nothing behind either.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${DEMO_PREFIX:-cl}
HOSTS=${DEMO_HOSTS:-3}
OSDS=${DEMO_OSDS:-4}
OUT=${DEMO_OUT:-out/lab}
SCENARIOS=${DEMO_SCENARIOS:-}

if [ "$(id -u)" != 0 ]; then
  echo "demo: needs root (network namespaces, nftables, conntrack)" >&2
  exit 3
fi

# Install what is missing (Debian packages + the virtualenv); idempotent.
bash scripts/setup.sh
VENV=${VENV:-.venv}   # the same default as scripts/setup.sh
CTGUARD=("$VENV/bin/ctguard")
[ -x "${CTGUARD[0]}" ] || CTGUARD=("$VENV/bin/python" -c 'from ctguard.cli import main; main()')

cleanup() {
  echo "demo: lab down"
  "${CTGUARD[@]}" lab down --prefix "$PREFIX" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A lab left over from an earlier, killed demo: remove it first.
"${CTGUARD[@]}" lab down --prefix "$PREFIX" >/dev/null 2>&1 || true

echo "demo: lab up ($HOSTS hosts x $OSDS OSDs, prefix $PREFIX)"
"${CTGUARD[@]}" lab up --prefix "$PREFIX" --hosts "$HOSTS" --osds-per-host "$OSDS"
"${CTGUARD[@]}" lab status --prefix "$PREFIX" || true

args=(lab reproduce --prefix "$PREFIX" --out "$OUT")
for s in $SCENARIOS; do args+=(--scenario "$s"); done
mkdir -p "$OUT"
echo "demo: ${CTGUARD[*]} ${args[*]}"
rc=0
"${CTGUARD[@]}" "${args[@]}" || rc=$?
echo "demo: the comparison is above; time series, logs and plots are under $OUT/"
# The same run read back as an operator would after an outage: the story from the recorded logs and counters.
run_dir=$(ls -td "$OUT"/*/ 2>/dev/null | head -1 || true)
if [ -n "$run_dir" ]; then
  echo "demo: ${CTGUARD[*]} diagnose $run_dir"
  "${CTGUARD[@]}" diagnose "$run_dir" || true   # exit 2 = an overflow incident was found, as expected here
fi
# Conntrack trouble in Ceph's own health (docs/ceph-health.md): the ctguard mgr module that `lab up` enabled
# raises CTGUARD_CONNTRACK_NEARFULL for a filled host, `ceph ctguard ok-to-restart` says no, both clear again.
echo "demo: ${CTGUARD[*]} mgr demo --lab $PREFIX"
mgr_rc=0
"${CTGUARD[@]}" mgr demo --lab "$PREFIX" || mgr_rc=$?
[ "$rc" = 0 ] && rc=$mgr_rc
exit "$rc"
