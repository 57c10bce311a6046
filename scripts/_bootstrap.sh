# Sourced by scripts/serve and scripts/test: make sure .venv exists and matches pyproject.toml.
# Needs only Python 3.11+ on PATH (or PYTHON=/path/to/python3.11).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "Patron needs Python 3.11 or newer (tried: $PYTHON). Set PYTHON=/path/to/python3.11." >&2
  exit 1
fi
VENV="$ROOT/.venv"
STAMP="$VENV/.patron-installed"
WANT="$("$PYTHON" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$ROOT/pyproject.toml")"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  echo "Installing Patron and its dependencies into $VENV …" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]"
  echo "$WANT" > "$STAMP"
fi
