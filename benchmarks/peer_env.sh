#!/usr/bin/env bash
# Create benchmarks/.peer-venv: the peer library (torch-rechub 0.9.0) in its own venv, so its
# dependencies can never disturb the project's pins. Idempotent: an existing, complete venv is kept.
#
# Safety: pip first resolves with --dry-run and the script refuses to go on unless torch resolves to
# the local CPU wheel (2.13.0+cpu); no CUDA torch is ever fetched. All versions are pinned in
# benchmarks/peer-constraints.txt.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.peer-venv"
PY="${PYTHON:-python3.11}"
CONSTRAINTS="$HERE/peer-constraints.txt"
REQS=(torch==2.13.0+cpu torch-rechub==0.9.0)

if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "import torch_rechub, torch; assert torch.__version__ == '2.13.0+cpu'" 2>/dev/null; then
  echo "peer venv ready: $VENV"
  exit 0
fi

"$PY" -m venv "$VENV"
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
"$VENV/bin/pip" install -q --dry-run --report "$report" -c "$CONSTRAINTS" "${REQS[@]}"
"$VENV/bin/python" - "$report" <<'PY'
import json, sys
plan = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.load(open(sys.argv[1]))["install"]}
bad = [f"{n}=={v}" for n, v in plan.items() if n.startswith("nvidia") or n == "triton" or (n == "torch" and v != "2.13.0+cpu")]
if bad:
    sys.exit(f"refusing to install: the plan would pull {bad} (a CUDA torch); fix peer-constraints.txt")
print("pip plan:", " ".join(f"{n}=={v}" for n, v in sorted(plan.items())))
PY
"$VENV/bin/pip" install -q -c "$CONSTRAINTS" "${REQS[@]}"
"$VENV/bin/pip" check
"$VENV/bin/python" -c "import torch, torch_rechub; print('peer venv ready:', torch.__version__, 'torch-rechub', __import__('importlib.metadata').metadata.version('torch-rechub'))"
