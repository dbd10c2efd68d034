#!/usr/bin/env bash
# Checks that every tracked C/C++ file matches .clang-format (no file is changed). Exits non-zero
# and lists the differences if one does not; `clang-format -i FILE` fixes it.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.c' '*.cc' '*.h' '*.cpp' '*.hpp')
((${#files[@]})) || exit 0
clang-format --dry-run -Werror "${files[@]}"
echo "check-format: ${#files[@]} files match .clang-format"
