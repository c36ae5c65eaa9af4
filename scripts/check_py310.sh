#!/usr/bin/env bash
# Users of ModelScope's Sambert frontend (ttsfrd) run Python 3.10: the code must at least
# compile there and use nothing newer. Skipped, saying so, when no python3.10 is on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY310=""
for candidate in python3.10 "$HOME/.pyenv/versions/3.10.13/bin/python3.10"; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import sys; assert sys.version_info[:2] == (3, 10)" 2>/dev/null; then
        PY310="$candidate"; break
    fi
done
if [ -z "$PY310" ]; then
    echo "[py310] SKIPPED: no python3.10 interpreter on this machine"
    exit 0
fi
files=$(git ls-files '*.py' 2>/dev/null || find . -name '*.py' -not -path './.venv/*')
"$PY310" - $files <<'PYEOF'
import ast, sys
bad = []
for path in sys.argv[1:]:
    source = open(path, encoding="utf-8").read()
    try:
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        bad.append(f"{path}:{exc.lineno}: {exc.msg}")
        continue
    tree = ast.parse(source)
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name in ("tomllib", "typing.Self", "typing.override", "typing.TypeVarTuple", "typing.Unpack",
                        "datetime.UTC", "enum.StrEnum", "asyncio.TaskGroup", "typing.LiteralString",
                        "typing.reveal_type", "typing.assert_never", "typing.Never"):
                bad.append(f"{path}:{node.lineno}: uses {name} (Python 3.11+)")
if bad:
    print("\n".join(bad))
    sys.exit(1)
print(f"[py310] {len(sys.argv) - 1} files compile under Python 3.10 and use no 3.11+ stdlib names")
PYEOF
