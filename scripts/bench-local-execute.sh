#!/usr/bin/env bash
# Benchmark (d) of issue 3: time from starting `gyre local execute` to the first output
# of its first step, against a bare `docker run --rm IMAGE true`, interleaved in rounds.
# Needs the test environment (scripts/test-env.sh) and release builds of gyre and the helper:
#   cargo build --release -p gyre && scripts/build-helper.sh target/release
#   scripts/bench-local-execute.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-7}
gyre=$PWD/target/release/gyre
helper=$PWD/target/release/circleci
image=gyre-test/busybox:latest
repo=$(mktemp -d)
data=$(mktemp -d)
trap 'rm -rf "$repo" "$data"' EXIT
mkdir -p "$repo/.circleci"
cat >"$repo/.circleci/config.yml" <<YAML
version: 2.1
jobs:
  build:
    docker: [{image: $image}]
    steps:
      - run: echo first-output
workflows:
  main: {jobs: [build]}
YAML
git -C "$repo" init -q && git -C "$repo" add -A
git -C "$repo" -c user.email=b@example.invalid -c user.name=bench commit -qm bench

now_ms() { date +%s%3N; }
first_output_ms() {
  local start line
  start=$(now_ms)
  # Read until the step's first line of output, then stop timing (the run continues).
  while IFS= read -r line; do
    if [ "$line" = "first-output" ]; then
      echo $(($(now_ms) - start))
      break
    fi
  done < <(cd "$repo" && "$gyre" local execute --job build --data-dir "$data" --helper "$helper" 2>&1)
}
docker_run_ms() {
  local start
  start=$(now_ms)
  docker run --rm --network none "$image" true
  echo $(($(now_ms) - start))
}

g=() d=()
for _ in $(seq "$rounds"); do
  g+=("$(first_output_ms)")
  d+=("$(docker_run_ms)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mg=$(median "${g[@]}")
md=$(median "${d[@]}")
echo "gyre local execute, first step output: ${g[*]} ms (median $mg)"
echo "docker run --rm $image true:          ${d[*]} ms (median $md)"
awk -v a="$mg" -v b="$md" 'BEGIN { printf "ratio: %.2fx (target <= 1.5x)\n", a / b }'
