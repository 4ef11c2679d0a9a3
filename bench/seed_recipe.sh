#!/usr/bin/env bash
# The seed article's recipe for a Colab local runtime, as a plain script run over SSH on a fresh
# host (the baseline the project's roles are timed against):
#   python venv -> pip install jupyter + jupyter_http_over_ws -> enable the extension -> start
#   Jupyter with the article's flags -> wait until it answers.
# SEED_PACKAGES overrides what pip installs: as written (unpinned) the extension no longer loads
# on today's packages, so the benchmark times the pinned variant that still works.
set -euo pipefail

VENV=$HOME/${SEED_VENV:-colab-venv}
PACKAGES=${SEED_PACKAGES:-jupyter jupyter_http_over_ws}

# A fresh Debian image lacks the venv module.
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi

python3 -m venv "$VENV"
# shellcheck disable=SC2086 # word splitting of the package list is intended
"$VENV/bin/pip" install -q --disable-pip-version-check $PACKAGES
# Notebook 7 dropped `jupyter serverextension`: the recipe's enable step fails there, as it would
# for a user; the script goes on so the resulting 404 can be observed.
"$VENV/bin/jupyter" serverextension enable --py jupyter_http_over_ws >"$VENV/enable.log" 2>&1 \
  || echo "seed-recipe: 'jupyter serverextension enable' failed: $(tail -1 "$VENV/enable.log")" >&2

# The article's start command, detached from the SSH session.
nohup "$VENV/bin/jupyter" notebook \
  --NotebookApp.allow_origin='https://colab.research.google.com' \
  --port=8888 \
  --NotebookApp.port_retries=0 \
  --no-browser >"$VENV/jupyter.log" 2>&1 </dev/null &
echo $! >"$VENV/jupyter.pid"

# Wait until it answers HTTP (any status), then print the URL line the user would copy.
if ! python3 - <<'PY'
import time, urllib.error, urllib.request

deadline = time.monotonic() + 120
while True:
    try:
        urllib.request.urlopen("http://127.0.0.1:8888/api/status", timeout=1)
        break
    except urllib.error.HTTPError:
        break
    except OSError:
        if time.monotonic() > deadline:
            raise SystemExit(1)
        time.sleep(0.05)
PY
then
  echo "seed-recipe: Jupyter did not answer on 127.0.0.1:8888" >&2
  tail -20 "$VENV/jupyter.log" >&2
  exit 1
fi
grep -o 'http://[^ ]*token=[0-9a-f]*' "$VENV/jupyter.log" | head -1 || true
