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
REDIS_ONLY=0
UNINSTALL=0
# The Redis that --with-redis sets up: the one this file configures, on the
# port it names (read from it, 6379 if it names none).
PACKAGE_REDIS_CONF=/etc/redis/redis.conf
REDIS_CONF=$PACKAGE_REDIS_CONF
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

The command is lockrun's own launcher, not pip's console script: it runs the
virtualenv's python with -I -S, so no PYTHON* variable of a cron environment
reaches lockrun, and a fire does not pay for Python's site start-up.

Options:
  --prefix DIR    install under DIR; the virtualenv is DIR/venv
                  [default: /opt/lockrun]
  --bin-dir DIR   put the lockrun symlink in DIR  [default: /usr/local/bin]
  --man-dir DIR   put lockrun.1 in DIR  [default: /usr/local/share/man/man1]
  --python PATH   interpreter (>= 3.10) that creates the virtualenv
                  [default: /usr/bin/python3, installed with apt-get if
                  missing; else python3 on PATH]
  --with-redis    also install redis-server with apt-get if it is missing,
                  make sure it runs, and set it up the way "lockrun doctor"
                  wants (for a single-machine trial; a fleet needs one shared
                  Redis): see "Redis" below
  --redis-only    do only what --with-redis does; leave lockrun itself alone
  --redis-conf PATH
                  the redis.conf to set up; the Redis it configures is the one
                  on 127.0.0.1 at the port it names  [default: $PACKAGE_REDIS_CONF]
  --uninstall     remove the symlink (only if it points into the prefix), the
                  man page and the prefix; never removes redis-server
  -h, --help      show this help and exit

The default paths need root. python3-venv, redis-server and redis-tools are
installed with apt-get when needed; everything else comes from pip.

Redis (--with-redis, --redis-only):
  - starts Redis from the redis.conf if nothing answers on its port
    (systemctl or service for $PACKAGE_REDIS_CONF, else redis-server
    directly, as the user owning the file, with umask 007)
  - appendonly yes: set on the running server first (CONFIG SET, which
    copies its data into the append-only file), then in redis.conf; an
    "appendonly no" line there is replaced, the old line kept as a comment
  - maxmemory-policy noeviction: added when redis.conf sets none; a
    different policy already set there is left alone, with a warning
  - aclfile (DIR/users.acl next to redis.conf, unless it names one), so
    that ACL SAVE keeps lockrun's Redis user over restarts: created mode
    0640, owned by the user Redis runs as, holding the server's current
    users (ACL LIST); Redis is restarted once to load it. Not added when
    redis.conf defines users with "user" lines (Redis refuses both).
  - redis.conf is saved to redis.conf.before-lockrun before its first change
  - prints each change, and the ACL SETUSER and ACL SAVE to run next
  Running it again changes nothing. If Redis wants a password, set
  REDISCLI_AUTH=PASSWORD in the environment (redis-cli reads it).
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
    if [ -n "${CONF_TMP:-}" ]; then
        rm -f -- "$CONF_TMP"
    fi
    if [ -n "${LAUNCHER_TMP:-}" ]; then
        rm -f -- "$LAUNCHER_TMP"
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
        --redis-only) WITH_REDIS=1; REDIS_ONLY=1; shift ;;
        --redis-conf) need_arg "$@"; REDIS_CONF=$2; shift 2 ;;
        --redis-conf=*) REDIS_CONF=${1#*=}; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

if [ "$UNINSTALL" -eq 1 ] && [ "$WITH_REDIS" -eq 1 ]; then
    die "--with-redis and --redis-only cannot be combined with --uninstall (redis-server is never removed)"
fi
[ -n "$REDIS_CONF" ] || die "--redis-conf needs a file name"
case $REDIS_CONF in
    /*) ;;
    *) REDIS_CONF=$PWD/$REDIS_CONF ;;
esac

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
    # --compile (pip's default, made explicit against a PIP_NO_COMPILE in the environment
    # or pip.conf): every module gets its .pyc now, so no fire ever compiles one.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --compile --upgrade \
        "$STAGE_DIR" ||
        die "pip install of $SRC_DIR into $VENV failed (see pip's messages above)"
    [ -x "$VENV/bin/lockrun" ] || die "pip did not create $VENV/bin/lockrun"
    # pip has just (re)written its console script: replace it, on every install and upgrade.
    write_launcher
}

# $VENV/bin/lockrun: lockrun's own launcher in place of pip's console script. pip's runs
# "$VENV/bin/python" with site, whose start-up (site-packages scan, .pth files) is most
# of what a skipped fire costs; the launcher runs the venv's python with -I -S and puts
# the site-packages directories on sys.path itself. They are taken from sysconfig here,
# by the venv's python with site, because under -S its sys.prefix is the base
# interpreter's, not the venv's. The new file is renamed over the old one, so a fire
# that starts during an upgrade runs either launcher whole.
LAUNCHER_TMP=
write_launcher() {
    local python3=$VENV/bin/python3 launcher=$VENV/bin/lockrun
    [ -x "$python3" ] || die "$python3 is missing: the virtualenv $VENV is incomplete"
    LAUNCHER_TMP=$(mktemp "$VENV/bin/.lockrun.XXXXXX") || die "could not create a file in $VENV/bin"
    if ! "$VENV/bin/python" -I - "$python3" >"$LAUNCHER_TMP" <<'EOF'; then
import os
import sys
import sysconfig

python3 = sys.argv[1]
paths = sysconfig.get_paths()
dirs: list[str] = []
for d in (paths["purelib"], paths["platlib"]):
    if os.path.isdir(d) and os.path.realpath(d) not in map(os.path.realpath, dirs):
        dirs.append(d)
if not any(os.path.isfile(os.path.join(d, "lockrun", "entry.py")) for d in dirs):
    sys.exit(f"lockrun is not in {' or '.join(dirs) or 'site-packages'}")
# Linux passes everything after the interpreter on a #! line as ONE argument, so the
# flags are one word, -IS; a path with blanks, or a line longer than the 127 bytes old
# kernels read, goes through /bin/sh instead, as pip's own console scripts do.
shebang = f"#!{python3} -IS"
if len(shebang.encode()) <= 127 and not any(c.isspace() for c in python3):
    print(shebang)
else:
    if any(c in python3 for c in "\"$`'\\\n"):
        sys.exit(f"{python3}: a path with quotes, $, ` or \\ cannot go through /bin/sh")
    print("#!/bin/sh")
    print(f"'''exec' \"{python3}\" -IS \"$0\" \"$@\"")  # sh runs this line,
    print("' '''")  # Python reads it and the line above as a string
print(f"""\
# lockrun's launcher, written by install.sh in place of pip's console script (and again
# after every pip install, which writes that script back).
# -I: the PYTHON* variables of a cron environment (PYTHONPATH, PYTHONHOME,
#     PYTHONWARNINGS, PYTHONINSPECT, PYTHONPYCACHEPREFIX, PYTHONSTARTUP...) can neither
#     change nor break lockrun; no user site-packages either.
# -S: no "import site" (site-packages scan, .pth files), which is most of what a skipped
#     fire costs to start; so this file puts the virtualenv's site-packages on sys.path,
#     after the standard library, where site would have put it.
import sys

sys.path += {dirs!r}
from lockrun.entry import main

main()""")
EOF
        die "could not write lockrun's launcher $launcher"
    fi
    chmod 0755 -- "$LAUNCHER_TMP" && mv -f -- "$LAUNCHER_TMP" "$launcher" ||
        die "could not install lockrun's launcher $launcher"
    LAUNCHER_TMP=
    echo "Wrote lockrun's launcher $launcher ($(head -n 1 -- "$launcher"))"
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

# lockrun's Redis user: the line README's "Redis ACL" section gives, read from the
# README beside this script so the two cannot drift (tests/test_acl.py checks that line
# against a real Redis).
readme_acl_line() {
    grep -m 1 '^ACL SETUSER lockrun on ' "$SRC_DIR/README.md" 2>/dev/null || true
}

REDIS_HOW=
REDIS_CONF_REAL=
REDIS_ACLFILE=
REDIS_CHANGES=()

# redis-cli against the Redis this run sets up. redis-cli exits 0 on an error
# reply, so callers compare the reply itself.
rcli() {
    timeout 10 redis-cli --no-auth-warning -h 127.0.0.1 -p "$REDIS_PORT" "$@" 2>&1 | tr -d '\r'
}

# "up"; "auth" when a server answers but wants a password; else "down".
redis_state() {
    local reply
    reply=$(rcli ping) || true
    case $reply in
        PONG) echo up ;;
        *NOAUTH* | *WRONGPASS* | *"invalid password"* | *"invalid username-password"*) echo auth ;;
        *) echo down ;;
    esac
}

redis_answers() {
    [ "$(redis_state)" = up ]
}

# poll SECONDS COMMAND...: succeed as soon as COMMAND does, fail after SECONDS.
poll() {
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.1
    done
}

info_field() {
    rcli info "$1" | sed -n "s/^$2://p"
}

config_get() {
    rcli config get "$1" | sed -n 2p
}

config_set() {
    local reply
    reply=$(rcli config set "$1" "$2") || true
    [ "$reply" = OK ] || die "CONFIG SET $1 $2 on the Redis at 127.0.0.1:$REDIS_PORT failed: $reply"
    REDIS_CHANGES+=("running Redis: CONFIG SET $1 $2")
}

# Gone, or a zombie: a daemonized redis-server's parent may be an init that never reaps.
pid_gone() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    [ "${stat%% *}" = Z ]
}

# The last active "NAME value" line of redis.conf, the one Redis obeys, as
# "LINENO VALUE" with the value unquoted ("0 " when there is none). Redis ignores
# leading blanks and matches names case-insensitively; so does this.
conf_last() {
    awk -v want="$1" -v q="'" '
        { line = $0; sub(/^[ \t]+/, "", line); sub(/[ \t\r]+$/, "", line) }
        line == "" || line ~ /^#/ { next }
        {
            name = line; sub(/[ \t].*/, "", name)
            if (tolower(name) != want) next
            value = line; sub(/^[^ \t]+[ \t]*/, "", value)
            if (value ~ /^".*"$/ || value ~ ("^" q ".*" q "$")) value = substr(value, 2, length(value) - 2)
            found = NR; last = value
        }
        END { printf "%d %s\n", found, last }' "$REDIS_CONF_REAL"
}

conf_value() {
    local last
    last=$(conf_last "$1")
    printf '%s\n' "${last#* }"
}

conf_line() {
    local last
    last=$(conf_last "$1")
    printf '%s\n' "${last%% *}"
}

conf_count() {
    awk -v want="$1" '{ sub(/^[ \t]+/, "") } $0 !~ /^#/ && tolower($1) == want { n++ } END { print n + 0 }' \
        "$REDIS_CONF_REAL"
}

lower() {
    printf '%s\n' "$1" | tr '[:upper:]' '[:lower:]'
}

CONF_TMP=
# Replace line $1 of redis.conf (0: none) by the text $2, and append the text $3.
# Written beside it and renamed over it, so a reader never sees half a file; cp -p
# keeps its mode and owner. The version before the first change is kept as
# redis.conf.before-lockrun, later ones with a date.
conf_edit() {
    local backup=$REDIS_CONF_REAL.before-lockrun
    [ ! -e "$backup" ] || backup=$backup.$(date +%Y%m%d-%H%M%S)
    cp -p -- "$REDIS_CONF_REAL" "$backup" || die "could not save $REDIS_CONF_REAL as $backup"
    CONF_TMP=$REDIS_CONF_REAL.lockrun-tmp.$$
    cp -p -- "$REDIS_CONF_REAL" "$CONF_TMP" || die "could not write next to $REDIS_CONF_REAL"
    LINE=$1 REPLACEMENT=$2 APPENDIX=$3 awk '
        NR == ENVIRON["LINE"] + 0 { print ENVIRON["REPLACEMENT"]; next }
        { print }
        END { if (ENVIRON["APPENDIX"] != "") print ENVIRON["APPENDIX"] }' \
        "$REDIS_CONF_REAL" >"$CONF_TMP" || die "could not write $CONF_TMP"
    mv -f -- "$CONF_TMP" "$REDIS_CONF_REAL" || die "could not replace $REDIS_CONF_REAL"
    CONF_TMP=
    REDIS_CHANGES+=("$REDIS_CONF: the version before this change is saved as $backup")
}

# A new aclfile: mode 0640, owned by the user Redis runs as, holding $4 (ACL LIST
# lines, or nothing). Redis refuses to start when its aclfile does not exist.
create_aclfile() {
    local path=$1 user=$2 group=$3 content=$4 tmp
    [ -d "$(dirname -- "$path")" ] || die "cannot create the aclfile $path: its directory does not exist"
    tmp=$(mktemp "$path.XXXXXX") || die "cannot create a file next to $path"
    { printf '%s' "$content" >"$tmp" && chmod 0640 -- "$tmp"; } || die "could not write $tmp"
    if is_root; then
        chown -- "$user:$group" "$tmp" || die "could not give $tmp to $user:$group"
    fi
    mv -f -- "$tmp" "$path" || die "could not create $path"
    if [ -n "$content" ]; then
        REDIS_CHANGES+=("created $path (mode 0640, owner $user:$group) with the running server's users (ACL LIST)")
    else
        REDIS_CHANGES+=("created $path (mode 0640, owner $user:$group), empty: $REDIS_CONF names it and Redis refuses to start without it")
    fi
}

ensure_redis_packages() {
    local pkgs=()
    command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || pkgs+=(redis-tools)
    if [ "${#pkgs[@]}" -gt 0 ]; then
        apt_install "${pkgs[@]}"
    fi
    command -v redis-server >/dev/null 2>&1 || die "redis-server is still missing after apt-get install"
    command -v redis-cli >/dev/null 2>&1 || die "redis-cli is still missing after apt-get install"
}

# redis-server from the configuration file, daemonized (whatever the file says: a
# foreground server would hold install.sh), as USER, with the umask Debian's unit
# and init script use (007), so files Redis creates (ACL SAVE's) are not world-readable.
start_redis_direct() {
    local user=$1 group=$2 out pidfile logfile run=()
    if is_root && [ "$user" != root ]; then
        run=(runuser -u "$user" --)
    fi
    pidfile=$(conf_value pidfile)
    if [ -n "$pidfile" ] && [ ! -d "$(dirname -- "$pidfile")" ] && is_root; then
        install -d -o "$user" -g "$group" -m 0755 -- "$(dirname -- "$pidfile")" ||
            die "could not create $(dirname -- "$pidfile") for Redis's pid file"
    fi
    out=$( (umask 007 && cd / && exec "${run[@]}" redis-server "$REDIS_CONF_REAL" --daemonize yes) 2>&1) ||
        die "redis-server $REDIS_CONF_REAL did not start: $out"
    if ! poll 30 redis_answers; then
        logfile=$(conf_value logfile)
        die "redis-server $REDIS_CONF_REAL started but nothing answers on 127.0.0.1:$REDIS_PORT within 30s (see ${logfile:-its log})"
    fi
}

# Nothing answers: start Redis from the configuration file, by the package's own
# means when it is the package's file.
start_redis() {
    local user group aclfile
    user=$(stat -c %U -- "$REDIS_CONF_REAL") group=$(stat -c %G -- "$REDIS_CONF_REAL")
    aclfile=$(conf_value aclfile)
    if [ -n "$aclfile" ] && [ ! -e "$aclfile" ] && [ "$(conf_count user)" -eq 0 ]; then
        if [ -n "$(conf_value requirepass)" ]; then
            warn "$REDIS_CONF sets requirepass and aclfile: with users loaded from the (new, empty) aclfile the default user has no password; give it one with ACL SETUSER default and ACL SAVE"
        fi
        create_aclfile "$aclfile" "$user" "$group" ""
    fi
    if [ "$REDIS_CONF_REAL" = "$(realpath -m -- "$PACKAGE_REDIS_CONF")" ]; then
        if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
            echo "Starting redis-server with systemctl ..."
            if systemctl start redis-server >/dev/null 2>&1 && poll 30 redis_answers; then
                REDIS_HOW="started with systemctl start redis-server"
                return 0
            fi
        elif command -v service >/dev/null 2>&1; then
            echo "Starting redis-server with service ..."
            if service redis-server start >/dev/null 2>&1 && poll 30 redis_answers; then
                REDIS_HOW="started with service redis-server start"
                return 0
            fi
        fi
    fi
    echo "Starting redis-server $REDIS_CONF directly, as $user ..."
    start_redis_direct "$user" "$group"
    REDIS_HOW="started directly: redis-server $REDIS_CONF --daemonize yes, as $user (not restarted on boot)"
}

# The server has to read a new aclfile, which CONFIG SET cannot change: restart it the
# way it runs (systemd's unit, else SHUTDOWN and start again as the same user).
restart_redis() {
    local pid=$1 user=$2 group=$3 main reply
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        main=$(systemctl show -p MainPID --value redis-server 2>/dev/null) || main=
        if [ "$main" = "$pid" ]; then
            echo "Restarting Redis to load its aclfile: systemctl restart redis-server ..."
            systemctl restart redis-server || die "systemctl restart redis-server failed"
            poll 30 redis_answers || die "Redis does not answer on 127.0.0.1:$REDIS_PORT after systemctl restart redis-server"
            REDIS_CHANGES+=("restarted Redis (systemctl restart redis-server) to load the aclfile")
            return 0
        fi
    fi
    echo "Restarting Redis to load its aclfile: SHUTDOWN, then redis-server $REDIS_CONF as $user ..."
    reply=$(rcli shutdown) || true
    [ -z "$reply" ] || die "Redis refused to shut down ($reply); see its log"
    poll 60 pid_gone "$pid" || die "redis-server (pid $pid) has not exited 60s after SHUTDOWN"
    start_redis_direct "$user" "$group"
    REDIS_CHANGES+=("restarted Redis (SHUTDOWN, redis-server $REDIS_CONF --daemonize yes as $user) to load the aclfile")
}

aof_written() {
    [ "$(info_field persistence aof_rewrite_in_progress)" = 0 ] &&
        [ "$(info_field persistence aof_rewrite_scheduled)" = 0 ]
}

# Users the running server has that the aclfile it is about to load lacks: a
# restart would drop them. The default user counts only with a password, since
# without one in the file it comes back as "on nopass +@all".
users_missing_from() {
    local file=$1 name list
    list=$(rcli acl list)
    while read -r name; do
        [ -n "$name" ] || continue
        if ! awk -v n="$name" '$1 == "user" && $2 == n { found = 1 } END { exit !found }' "$file"; then
            if [ "$name" = default ] && grep -q '^user default on nopass ' <<<"$list"; then
                continue
            fi
            printf '%s ' "$name"
        fi
    done < <(rcli acl users)
}

# --with-redis: the Redis that REDIS_CONF configures runs, and is set up as lockrun
# doctor wants it, in its configuration file and in the running server. Checks come
# before changes; each change is said; a second run changes nothing.
setup_redis() {
    local state running pid user group appendonly policy aclfile users includes
    local line replacement appendix missing seed policy_conflict=0
    ensure_redis_packages
    [ -f "$REDIS_CONF" ] || die "$REDIS_CONF does not exist: pass your Redis's configuration file with --redis-conf"
    REDIS_CONF_REAL=$(realpath -- "$REDIS_CONF")
    { [ -r "$REDIS_CONF_REAL" ] && [ -w "$REDIS_CONF_REAL" ]; } ||
        die "cannot read and write $REDIS_CONF_REAL: run as root"
    REDIS_PORT=$(conf_value port)
    REDIS_PORT=${REDIS_PORT:-6379}
    case $REDIS_PORT in
        0) die "$REDIS_CONF sets port 0 (no TCP); install.sh talks to Redis over TCP on 127.0.0.1" ;;
        *[!0-9]*) die "$REDIS_CONF sets port '$REDIS_PORT', which is not a number" ;;
    esac

    state=$(redis_state)
    if [ "$state" = down ]; then
        start_redis
        state=$(redis_state)
    else
        REDIS_HOW="already running"
    fi
    [ "$state" != auth ] ||
        die "the Redis on 127.0.0.1:$REDIS_PORT wants a password${REDISCLI_AUTH:+ (not the one in REDISCLI_AUTH)}: run again with REDISCLI_AUTH=PASSWORD in the environment"
    [ "$state" = up ] || die "no Redis answers PING on 127.0.0.1:$REDIS_PORT"

    running=$(info_field server config_file)
    if [ -z "$running" ] || [ "$(realpath -m -- "$running")" != "$REDIS_CONF_REAL" ]; then
        [ -n "$running" ] ||
            warn "an earlier install.sh --with-redis started Redis without a configuration file and without persistence: stopping it loses nothing a restart would have kept"
        die "the Redis on 127.0.0.1:$REDIS_PORT was started from ${running:-no configuration file}, not $REDIS_CONF, so changing that file would not last: pass its file with --redis-conf, or stop it (redis-cli -p $REDIS_PORT shutdown) and run install.sh again to start it from $REDIS_CONF"
    fi
    pid=$(info_field server process_id)
    [ -d "/proc/$pid" ] || die "cannot see the Redis process (pid $pid) answering on 127.0.0.1:$REDIS_PORT (in a container?)"
    user=$(stat -c %U "/proc/$pid") group=$(stat -c %G "/proc/$pid")

    appendonly=$(lower "$(conf_value appendonly)")
    policy=$(lower "$(conf_value maxmemory-policy)")
    users=$(conf_count user)
    includes=$(conf_count include)
    aclfile=$(conf_value aclfile)
    if [ "$users" -eq 0 ]; then
        REDIS_ACLFILE=${aclfile:-$(dirname -- "$REDIS_CONF_REAL")/users.acl}
        if [ -e "$REDIS_ACLFILE" ] && [ "$(config_get aclfile)" != "$REDIS_ACLFILE" ]; then
            missing=$(users_missing_from "$REDIS_ACLFILE")
            [ -z "$missing" ] ||
                die "$REDIS_ACLFILE exists, and restarting Redis to load it would drop users it lacks: ${missing% }. Add them to it (ACL LIST shows them) or move it away, then run install.sh again; nothing was changed"
        fi
        if ! is_root && [ "$user" != "$(id -un)" ]; then
            die "Redis runs as $user: run as root so the aclfile can be given to it and Redis restarted"
        fi
    fi

    # The running server first: "appendonly yes" in the file alone would make the
    # next start read an empty append-only file and drop the data in dump.rdb.
    if [ "$(config_get appendonly)" != yes ]; then
        config_set appendonly yes
        echo "Waiting for Redis to write its append-only file ..."
        poll 600 aof_written || die "Redis has not finished writing its append-only file after 10 minutes; see its log"
        [ "$(info_field persistence aof_last_bgrewrite_status)" = ok ] ||
            die "Redis could not write its append-only file; see its log"
    fi
    case $policy in
        "" | noeviction)
            [ "$(config_get maxmemory-policy)" = noeviction ] || config_set maxmemory-policy noeviction ;;
        *)
            policy_conflict=1
            warn "$REDIS_CONF sets maxmemory-policy $policy; left as it is, because another application of this Redis may rely on it. Lock keys can be evicted under it (lockrun doctor warns or fails): set noeviction there, or give lockrun a Redis of its own" ;;
    esac

    line=0 replacement='' appendix=''
    if [ "$appendonly" != yes ]; then
        if [ -n "$appendonly" ]; then
            line=$(conf_line appendonly)
            replacement="# lockrun's install.sh --with-redis: was \"appendonly $appendonly\"
appendonly yes"
            REDIS_CHANGES+=("$REDIS_CONF: appendonly $appendonly -> appendonly yes (line $line; the old line is kept as a comment)")
        else
            appendix+=$'\nappendonly yes'
            REDIS_CHANGES+=("$REDIS_CONF: added appendonly yes")
        fi
    fi
    if [ -z "$policy" ]; then
        appendix+=$'\nmaxmemory-policy noeviction'
        REDIS_CHANGES+=("$REDIS_CONF: added maxmemory-policy noeviction")
    fi
    if [ "$users" -gt 0 ]; then
        warn "$REDIS_CONF defines users with 'user' lines, and Redis refuses an aclfile next to them, so none was added: after ACL SETUSER, persist lockrun's user with CONFIG REWRITE (or a 'user lockrun ...' line there) instead of ACL SAVE"
    elif [ -z "$aclfile" ]; then
        appendix+=$'\naclfile '"$REDIS_ACLFILE"
        REDIS_CHANGES+=("$REDIS_CONF: added aclfile $REDIS_ACLFILE")
    fi
    if [ "$line" != 0 ] || [ -n "$appendix" ]; then
        [ -z "$appendix" ] ||
            appendix=$'\n'"# Added by lockrun's install.sh --with-redis (lockrun doctor checks these):$appendix"
        conf_edit "$line" "$replacement" "$appendix"
    fi
    if [ "$includes" -gt 0 ]; then
        warn "$REDIS_CONF has include lines: a setting in an included file can override these; lockrun doctor checks what the server uses"
    fi

    if [ "$users" -eq 0 ]; then
        if [ ! -e "$REDIS_ACLFILE" ]; then
            seed=$(rcli acl list) || true
            case $seed in
                "user "*) ;;
                *) die "ACL LIST on the Redis at 127.0.0.1:$REDIS_PORT failed: $seed" ;;
            esac
            create_aclfile "$REDIS_ACLFILE" "$user" "$group" "$seed"$'\n'
        fi
        if [ "$(config_get aclfile)" != "$REDIS_ACLFILE" ]; then
            restart_redis "$pid" "$user" "$group"
        fi
    fi

    # What the server uses now, whatever the file says.
    [ "$(config_get appendonly)" = yes ] || warn "the running Redis still has appendonly $(config_get appendonly)"
    [ "$policy_conflict" -eq 1 ] || [ "$(config_get maxmemory-policy)" = noeviction ] ||
        warn "the running Redis has maxmemory-policy $(config_get maxmemory-policy)"
    [ -z "$REDIS_ACLFILE" ] || [ "$(config_get aclfile)" = "$REDIS_ACLFILE" ] ||
        warn "the running Redis has aclfile '$(config_get aclfile)', not $REDIS_ACLFILE"
}

print_redis_summary() {
    local change acl
    echo
    if [ "${#REDIS_CHANGES[@]}" -eq 0 ]; then
        echo "Redis on 127.0.0.1:$REDIS_PORT ($REDIS_CONF) was already set up for lockrun; nothing changed."
    else
        echo "Redis on 127.0.0.1:$REDIS_PORT ($REDIS_CONF), what install.sh changed:"
        for change in "${REDIS_CHANGES[@]}"; do
            echo "  - $change"
        done
    fi
    echo "  redis:     127.0.0.1:$REDIS_PORT answers PING ($REDIS_HOW)"
    echo "             appendonly $(config_get appendonly), maxmemory-policy $(config_get maxmemory-policy), aclfile $(config_get aclfile)"
    echo
    acl=$(readme_acl_line)
    echo "Next: create lockrun's Redis user (README, \"Redis ACL\"). In redis-cli -p $REDIS_PORT:"
    if [ -n "$acl" ]; then
        echo "  $acl"
    else
        echo "  ACL SETUSER lockrun on >PASSWORD ~lockrun:* (and the commands README lists)"
    fi
    if [ -n "$REDIS_ACLFILE" ]; then
        echo "  ACL SAVE"
        echo "ACL SAVE writes the user to $REDIS_ACLFILE; without it the user is gone after the"
        echo "next Redis restart, and every lockrun line then exits 75."
    else
        echo "  CONFIG REWRITE"
    fi
    echo "Then check: LOCKRUN_REDIS_PASSWORD=PASSWORD lockrun doctor --redis-url redis://lockrun@127.0.0.1:$REDIS_PORT/0"
}

# ---------------------------------------------------------------- main

if [ "$UNINSTALL" -eq 1 ]; then
    do_uninstall
    exit 0
fi
if [ "$REDIS_ONLY" -eq 1 ]; then
    setup_redis
    print_redis_summary
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
    setup_redis
fi

VERSION=$("$LINK" --version 2>&1) || die "$LINK --version failed: $VERSION"
echo
echo "Done: $VERSION"
echo "  command:   $LINK -> $VENV/bin/lockrun (launcher: python3 -IS)"
echo "  python:    $("$VENV/bin/python" -c 'import os, sys; print(os.path.realpath(sys.executable), sys.version.split()[0])')"
if [ -n "$MAN_PAGE" ]; then
    echo "  man page:  $MAN_PAGE"
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
if [ "$WITH_REDIS" -eq 1 ]; then
    print_redis_summary
fi
