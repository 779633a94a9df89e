#!/usr/bin/env bash
# Seeds the fuzz corpora from the runbooks in the repository (not committed: fuzz/corpus is ignored).
#   validate: every golden case, shipped runbook and doc example, as whole files;
#   template: every template string and condition found in them, one per file.
# Run from anywhere; re-running only adds files. Usage: fuzz/seed.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/fuzz/corpus"
mkdir -p "$out/validate" "$out/template"

# libFuzzer names corpus entries by their SHA-1; doing the same de-duplicates.
add() { # add DIR < content
    local tmp; tmp=$(mktemp)
    cat >"$tmp"
    mv "$tmp" "$1/$(sha1sum "$tmp" | cut -d' ' -f1)"
}

mapfile -t files < <(find "$root/tests/golden" "$root/runbooks" "$root/docs/examples" -name '*.yaml' | sort)
for f in "${files[@]}"; do
    add "$out/validate" <"$f"
    # Quoted strings that are templates, and the values of condition keys.
    {
        grep -oE "\"[^\"]*(\{\{|\{%)[^\"]*\"|'[^']*(\{\{|\{%)[^']*'" "$f" | sed -E "s/^[\"'](.*)[\"']$/\1/" || true
        grep -oE "(when|that|until): .*" "$f" | sed -E "s/^(when|that|until): //; s/^[\"'](.*)[\"']$/\1/" || true
    } | while IFS= read -r line; do
        [ -n "$line" ] && printf '%s' "$line" | add "$out/template"
    done
done
echo "validate: $(ls "$out/validate" | wc -l) seeds, template: $(ls "$out/template" | wc -l) seeds in $out"
