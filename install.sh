#!/usr/bin/env bash
# install.sh - install lockrun from this source tree into its own virtualenv.
# Run "bash install.sh --help" for usage.
if [ -z "${BASH_VERSION:-}" ]; then
    echo "install.sh: run me with bash, not sh" >&2
    exit 1
fi
set -euo pipefail

PROG=install.sh
SRC_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)

PREFIX=/opt/lockrun
BIN_DIR=/usr/local/bin
MAN_DIR=/usr/local/share/man/man1
# The system interpreter by default: cron runs jobs as many users, and a
# per-user Python (pyenv, under a 0700 home) would be out of their reach.
PYTHON=
WITH_REDIS=0
UNINSTALL=0
REDIS_PORT=6379
APT_UPDATED=0
STAGE_DIR=

usage() {
    cat <<EOF
Usage: bash install.sh [OPTIONS]

Install lockrun from the source tree this script sits in ($SRC_DIR)
into its own virtualenv, link the lockrun command onto PATH and install
the lockrun(1) man page. Safe to run again: it reuses the virtualenv,
upgrades the package and re-creates the link.

Options:
  --prefix DIR    install under DIR; the virtualenv is DIR/venv
                  [default: /opt/lockrun]
  --bin-dir DIR   put the lockrun symlink in DIR  [default: /usr/local/bin]
  --man-dir DIR   put lockrun.1 in DIR  [default: /usr/local/share/man/man1]
  --python PATH   interpreter (>= 3.10) that creates the virtualenv
                  [default: /usr/bin/python3, installed with apt-get if
                  missing; else python3 on PATH]
  --with-redis    also install redis-server with apt-get if it is missing and
                  make sure one answers on localhost:$REDIS_PORT (for a
                  single-machine trial; a fleet needs one shared Redis)
  --uninstall     remove the symlink (only if it points into the prefix), the
                  man page and the prefix; never removes redis-server
  -h, --help      show this help and exit

The default paths need root. python3-venv, redis-server and redis-tools are
installed with apt-get when needed; everything else comes from pip.
EOF
}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

warn() {
    echo "$PROG: warning: $*" >&2
}

cleanup() {
    if [ -n "$STAGE_DIR" ] && [ -d "$STAGE_DIR" ]; then
        rm -rf -- "$STAGE_DIR"
    fi
}
trap cleanup EXIT

# Make DIR absolute and drop trailing slashes (the symlink target must be absolute).
abs_dir() {
    local dir=$1
    case $dir in
        "") die "empty directory name" ;;
        /*) ;;
        *) dir=$PWD/$dir ;;
    esac
    while [ "${#dir}" -gt 1 ] && [ "${dir%/}" != "$dir" ]; do
        dir=${dir%/}
    done
    printf '%s\n' "$dir"
}

need_arg() {
    if [ "$#" -lt 2 ] || [ -z "$2" ]; then
        die "option $1 needs an argument (see --help)"
    fi
}

while [ "$#" -gt 0 ]; do
    case $1 in
        --prefix) need_arg "$@"; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --bin-dir) need_arg "$@"; BIN_DIR=$2; shift 2 ;;
        --bin-dir=*) BIN_DIR=${1#*=}; shift ;;
        --man-dir) need_arg "$@"; MAN_DIR=$2; shift 2 ;;
        --man-dir=*) MAN_DIR=${1#*=}; shift ;;
        --python) need_arg "$@"; PYTHON=$2; shift 2 ;;
        --python=*) PYTHON=${1#*=}; shift ;;
        --with-redis) WITH_REDIS=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

if [ "$UNINSTALL" -eq 1 ] && [ "$WITH_REDIS" -eq 1 ]; then
    die "--with-redis cannot be combined with --uninstall (redis-server is never removed)"
fi

PREFIX=$(abs_dir "$PREFIX")
BIN_DIR=$(abs_dir "$BIN_DIR")
MAN_DIR=$(abs_dir "$MAN_DIR")
VENV=$PREFIX/venv
LINK=$BIN_DIR/lockrun
MAN_PAGE=$MAN_DIR/lockrun.1
[ "$PREFIX" != / ] || die "refusing to use / as the prefix"

is_root() {
    [ "$(id -u)" -eq 0 ]
}

# The directory itself if it exists, else its nearest existing ancestor.
existing_ancestor() {
    local dir=$1
    while [ ! -e "$dir" ]; do
        dir=$(dirname -- "$dir")
    done
    printf '%s\n' "$dir"
}

# Without root, every target directory (or the ancestor it would be created in)
# must be writable; fail early with one line instead of halfway through.
check_writable() {
    local dir where
    is_root && return 0
    for dir in "$PREFIX" "$BIN_DIR" "$MAN_DIR"; do
        where=$(existing_ancestor "$dir")
        if [ ! -d "$where" ] || [ ! -w "$where" ]; then
            die "cannot write to $where (for $dir): run as root, or pass --prefix, --bin-dir and --man-dir you can write to"
        fi
    done
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "need to install $* but apt-get is not available; install it by hand and re-run"
    is_root || die "need to install $* with apt-get: run as root"
    if [ "$APT_UPDATED" -eq 0 ]; then
        echo "Running apt-get update ..."
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null ||
            die "apt-get update failed"
        APT_UPDATED=1
    fi
    echo "Installing $* with apt-get ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null ||
        die "apt-get install $* failed"
}

# ---------------------------------------------------------------- uninstall

do_uninstall() {
    local target
    check_writable
    if [ -L "$LINK" ]; then
        target=$(readlink -- "$LINK")
        case $target in
            "$PREFIX"/*)
                rm -f -- "$LINK"
                echo "Removed $LINK"
                ;;
            *) warn "left $LINK alone: it points to $target, not into $PREFIX" ;;
        esac
    elif [ -e "$LINK" ]; then
        warn "left $LINK alone: it is not a symlink made by install.sh"
    fi

    if [ -e "$MAN_PAGE" ] || [ -L "$MAN_PAGE" ]; then
        rm -f -- "$MAN_PAGE"
        echo "Removed $MAN_PAGE"
        if command -v mandb >/dev/null 2>&1; then
            mandb -q >/dev/null 2>&1 || true
        fi
    fi

    # Remove only what install.sh made: the venv, then the prefix if that leaves it empty.
    if [ -d "$VENV" ]; then
        [ -f "$VENV/pyvenv.cfg" ] ||
            die "refusing to remove $VENV: it does not look like a virtualenv"
        rm -rf -- "$VENV"
        echo "Removed $VENV"
    fi
    if [ -d "$PREFIX" ]; then
        if rmdir -- "$PREFIX" 2>/dev/null; then
            echo "Removed $PREFIX"
        else
            warn "left $PREFIX in place: it holds files install.sh did not create"
        fi
    fi
    echo "lockrun is uninstalled (redis-server, if any, was left alone)."
}

# ---------------------------------------------------------------- install

find_python() {
    local py
    if [ -z "$PYTHON" ]; then
        if [ ! -x /usr/bin/python3 ] && command -v apt-get >/dev/null 2>&1; then
            apt_install python3 python3-venv
        fi
        if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
    fi
    py=$(command -v -- "$PYTHON" 2>/dev/null) || die "no Python interpreter '$PYTHON' found (use --python PATH)"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null ||
        die "$py is not Python >= 3.10, which lockrun needs (use --python PATH)"
    if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        apt_install python3-venv
        "$py" -c 'import venv, ensurepip' >/dev/null 2>&1 ||
            die "$py still has no working venv/ensurepip module after installing python3-venv (use --python /usr/bin/python3)"
    fi
    PYTHON=$py
}

# cron runs jobs as many users: warn if they cannot reach the venv's interpreter
# (e.g. a pyenv Python under /root, which is mode 0700).
check_interpreter_reachable() {
    local real dir
    real=$("$VENV/bin/python" -c 'import os, sys; print(os.path.realpath(sys.executable))') || return 0
    dir=$(dirname -- "$real")
    while [ "$dir" != / ]; do
        if [ "$(( 0$(stat -c '%a' -- "$dir") & 1 ))" -eq 0 ]; then
            warn "$real is inside $dir, which other users cannot enter: lockrun will only work for $(id -un); re-run with --python /usr/bin/python3 to fix"
            return 0
        fi
        dir=$(dirname -- "$dir")
    done
}

# pip builds a source tree in place (build/, *.egg-info); build from a clean
# copy so the checkout is never written to and stale build output never ships.
stage_source() {
    STAGE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/lockrun-install.XXXXXX")
    tar -C "$SRC_DIR" -cf - \
        --exclude=./.git --exclude=./build --exclude=./dist --exclude='*.egg-info' \
        --exclude=.venv --exclude=__pycache__ --exclude=.mypy_cache \
        --exclude=.ruff_cache --exclude=.pytest_cache --exclude=.tox . |
        tar -C "$STAGE_DIR" -xf - || die "could not copy $SRC_DIR to $STAGE_DIR"
}

install_package() {
    local want have
    want=$("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.executable))')
    have=
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import pip' >/dev/null 2>&1; then
        have=$(realpath -- "$VENV/bin/python")
    fi
    if [ -n "$have" ] && [ "$have" = "$want" ]; then
        echo "Reusing virtualenv $VENV"
    else
        if [ -e "$VENV" ]; then
            [ -f "$VENV/pyvenv.cfg" ] ||
                die "$VENV exists and is not a virtualenv; move it away or pick another --prefix"
            if [ -n "$have" ]; then
                echo "Re-creating virtualenv $VENV with $PYTHON (it was built on $have)"
            else
                echo "Re-creating broken virtualenv $VENV"
            fi
            "$PYTHON" -m venv --clear "$VENV" || die "could not re-create the virtualenv $VENV"
        else
            echo "Creating virtualenv $VENV with $PYTHON"
            mkdir -p -- "$PREFIX" || die "could not create $PREFIX"
            "$PYTHON" -m venv "$VENV" || die "could not create the virtualenv $VENV"
        fi
    fi
    stage_source
    echo "Installing lockrun from $SRC_DIR with pip ..."
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$STAGE_DIR" ||
        die "pip install of $SRC_DIR into $VENV failed (see pip's messages above)"
    [ -x "$VENV/bin/lockrun" ] || die "pip did not create $VENV/bin/lockrun"
}

link_command() {
    mkdir -p -- "$BIN_DIR" || die "could not create $BIN_DIR"
    ln -sfn -- "$VENV/bin/lockrun" "$LINK" || die "could not create the symlink $LINK"
    echo "Linked $LINK -> $VENV/bin/lockrun"
}

install_man_page() {
    local page=$SRC_DIR/man/lockrun.1
    if [ ! -f "$page" ]; then
        warn "$page not found: man page not installed"
        MAN_PAGE=
        return 0
    fi
    mkdir -p -- "$MAN_DIR" || die "could not create $MAN_DIR"
    install -m 0644 -- "$page" "$MAN_PAGE" || die "could not install $MAN_PAGE"
    echo "Installed $MAN_PAGE"
    if command -v mandb >/dev/null 2>&1; then
        mandb -q >/dev/null 2>&1 || true
    fi
}

# ---------------------------------------------------------------- redis

redis_answers() {
    local reply
    reply=$(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) || return 1
    [ "$reply" = PONG ]
}

wait_for_redis() {
    local _
    for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
        redis_answers && return 0
        sleep 0.25
    done
    return 1
}

REDIS_HOW=

ensure_redis() {
    local pkgs=()
    command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || pkgs+=(redis-tools)
    if [ "${#pkgs[@]}" -gt 0 ]; then
        apt_install "${pkgs[@]}"
    fi
    command -v redis-server >/dev/null 2>&1 || die "redis-server is still missing after apt-get install"
    command -v redis-cli >/dev/null 2>&1 || die "redis-cli is still missing after apt-get install"

    if redis_answers; then
        REDIS_HOW="already running"
        return 0
    fi
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        echo "Starting redis-server with systemctl ..."
        if systemctl start redis-server >/dev/null 2>&1 && wait_for_redis; then
            REDIS_HOW="started with systemctl start redis-server"
            return 0
        fi
    elif command -v service >/dev/null 2>&1; then
        echo "Starting redis-server with service ..."
        if service redis-server start >/dev/null 2>&1 && wait_for_redis; then
            REDIS_HOW="started with service redis-server start"
            return 0
        fi
    fi
    echo "Starting redis-server directly on 127.0.0.1:$REDIS_PORT ..."
    if (cd / && redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --protected-mode yes \
        --daemonize yes --save '' --appendonly no) >/dev/null 2>&1 && wait_for_redis; then
        REDIS_HOW="started directly: redis-server --port $REDIS_PORT --bind 127.0.0.1 --daemonize yes (no persistence, not restarted on boot)"
        return 0
    fi
    die "no Redis answers PING on localhost:$REDIS_PORT, and starting redis-server failed (is the port taken by something else?)"
}

# ---------------------------------------------------------------- main

if [ "$UNINSTALL" -eq 1 ]; then
    do_uninstall
    exit 0
fi

if [ ! -f "$SRC_DIR/pyproject.toml" ] || [ ! -d "$SRC_DIR/lockrun" ]; then
    die "$SRC_DIR is not a lockrun source tree (no pyproject.toml and lockrun/)"
fi
check_writable
if [ -e "$LINK" ] && [ ! -L "$LINK" ]; then
    die "$LINK exists and is not a symlink (another lockrun?); remove it and re-run"
fi
find_python
install_package
check_interpreter_reachable
link_command
install_man_page
if [ "$WITH_REDIS" -eq 1 ]; then
    ensure_redis
fi

VERSION=$("$LINK" --version 2>&1) || die "$LINK --version failed: $VERSION"
echo
echo "Done: $VERSION"
echo "  command:   $LINK -> $VENV/bin/lockrun"
echo "  python:    $("$VENV/bin/python" -c 'import os, sys; print(os.path.realpath(sys.executable), sys.version.split()[0])')"
if [ -n "$MAN_PAGE" ]; then
    echo "  man page:  $MAN_PAGE"
fi
if [ -n "$REDIS_HOW" ]; then
    echo "  redis:     localhost:$REDIS_PORT answers PING ($REDIS_HOW)"
fi
case ":$PATH:" in
    *":$BIN_DIR:"*) ;;
    *) warn "$BIN_DIR is not on PATH; cron jobs must call $LINK by its full path" ;;
esac
case "$BIN_DIR" in
    /usr/bin|/bin) ;;
    *) echo "  cron:      Debian's cron runs jobs with PATH=/usr/bin:/bin; put"
       echo "             PATH=$BIN_DIR:/usr/bin:/bin at the top of each crontab (README)" ;;
esac
