#!/usr/bin/env bash
# CI check of the Debian package (as root, on Debian 12): build it with cargo-deb, list it,
# install it, run the service's ExecStart line by hand as systemd would (user pgwarden,
# STATE_DIRECTORY/CONFIGURATION_DIRECTORY set), reach the server, stop it,
# take a backup with the backup service's ExecStart line (as root, as its unit runs it), remove the
# package and check the data dir is kept; then purge and check again. The scheduled-backup units
# (pgwarden-backup.service + .timer) must be in the package, pass systemd-analyze verify like
# the main unit, and be left disabled.
#
# Two deviations from the service, both to run offline and beside other servers:
# PGWARDEN_ARCHIVE (the test cache's PostgreSQL package instead of a download) and
# PGWARDEN_PORT (a free port instead of 5433).
#
# The machine is left as it was: everything from `dpkg -i` on runs in a private mount namespace
# where /etc, /usr and /var are overlays whose writes land in a scratch directory that is deleted
# afterwards (the package, its system user, the dpkg database, /var/lib/pgwarden, /etc/pgwarden).
# The machine's own /var/lib/pgwarden and /etc/pgwarden are never moved or written; a listing of
# them taken before and after must match.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

archive=${1:?usage: check.sh NPM_ARCHIVE}
port=${PGWARDEN_DEB_CHECK_PORT:-25433}
fail() { echo "deb check FAILED: $*" >&2; exit 1; }

if [[ -z ${PGWARDEN_DEB_CHECK_SCRATCH:-} ]]; then
    # Outside the namespace: a listing of the real directories, the namespace, the same listing.
    listing() { { find /var/lib/pgwarden /etc/pgwarden -printf '%p %U:%G %m %s %T@\n' 2>/dev/null || true; } | sort | sha256sum; }
    before=$(listing)
    scratch=$(mktemp -d /tmp/pgwarden-deb-check.XXXXXX)
    status=0
    PGWARDEN_DEB_CHECK_SCRATCH=$scratch unshare --mount --propagation private --fork \
        bash "${BASH_SOURCE[0]}" "$@" || status=$?
    rm -rf "$scratch"
    [[ $(listing) == "$before" ]] || fail "the machine's /var/lib/pgwarden or /etc/pgwarden changed"
    exit "$status"
fi

# Inside the namespace: /etc, /usr and /var as overlays on the scratch directory.
for d in etc usr var; do
    mkdir -p "$PGWARDEN_DEB_CHECK_SCRATCH/$d/upper" "$PGWARDEN_DEB_CHECK_SCRATCH/$d/work"
    mount -t overlay "overlay-$d" \
        -o "lowerdir=/$d,upperdir=$PGWARDEN_DEB_CHECK_SCRATCH/$d/upper,workdir=$PGWARDEN_DEB_CHECK_SCRATCH/$d/work" "/$d"
done
dpkg -s pgwarden >/dev/null 2>&1 && fail "a pgwarden package is already installed here"
# A fresh machine as the package sees it (this hides the real directories, it does not touch them).
rm -rf /var/lib/pgwarden /etc/pgwarden
server_pid=
cleanup() {
    [[ -n $server_pid ]] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
}
trap cleanup EXIT

# A dev build: the package's layout and scripts are what is checked, not the optimiser
# (cargo-deb warns that it prefers release builds).
cargo deb --profile dev 2>&1 | grep -v "^warning: dev profile\|To enable debug symbols" || true
deb=$(ls -t target/debian/pgwarden_*.deb | head -1)
echo "built $deb"

contents=$(dpkg-deb --contents "$deb")
echo "$contents"
for path in ./usr/bin/pgwarden ./usr/lib/systemd/system/pgwarden.service \
    ./usr/lib/systemd/system/pgwarden-backup.service ./usr/lib/systemd/system/pgwarden-backup.timer \
    ./usr/lib/systemd/user/pgwarden.service ./etc/pgwarden/config.toml \
    ./usr/share/doc/pgwarden/config.example.toml ./usr/share/doc/pgwarden/README.md; do
    grep -q " $path\$" <<<"$contents" || fail "$path is not in the package"
done
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
grep -qx /etc/pgwarden/config.toml <<<"$conffiles" || fail "/etc/pgwarden/config.toml is not a conffile"

# Let postinst create the system user: remove the one the test suite used (nothing runs as it
# any more; userdel refuses otherwise, and then the existing user is kept).
if getent passwd pgwarden >/dev/null && userdel pgwarden 2>/dev/null; then
    echo "removed user pgwarden, for postinst to create"
fi
install_log=$(dpkg -i "$deb" 2>&1) || { echo "$install_log"; fail "dpkg -i failed"; }
echo "$install_log"
# A maintainer script that stumbles (a command not found, an unbound word) need not fail dpkg.
! grep -q ': not found\|: [0-9]*: .*: \(Syntax error\|parameter not set\)' <<<"$install_log" \
    || fail "a maintainer script failed during install (above)"
getent passwd pgwarden >/dev/null || fail "postinst made no user pgwarden"
[[ $(stat -c %U:%a /var/lib/pgwarden) == pgwarden:750 ]] || fail "/var/lib/pgwarden: $(stat -c %U:%a /var/lib/pgwarden)"
[[ $(stat -c %G:%a /etc/pgwarden/config.toml) == pgwarden:640 ]] || fail "config.toml: $(stat -c %G:%a /etc/pgwarden/config.toml)"
unit=/usr/lib/systemd/system/pgwarden.service
backup_unit=/usr/lib/systemd/system/pgwarden-backup.service
timer=/usr/lib/systemd/system/pgwarden-backup.timer
if command -v systemd-analyze >/dev/null; then
    for u in "$unit" "$backup_unit" "$timer"; do
        complaints=$(systemd-analyze verify "$u" 2>&1 || true)
        [[ -z $complaints ]] || fail "systemd-analyze verify $u: $complaints"
        echo "systemd-analyze verify $u: ok"
    done
fi
# Installed, not enabled: no symlink in a .wants directory.
for wants in /etc/systemd/system/multi-user.target.wants/pgwarden.service \
    /etc/systemd/system/timers.target.wants/pgwarden-backup.timer; do
    [[ ! -e $wants && ! -L $wants ]] || fail "$wants: the package enabled a unit"
done
grep -qx 'OnCalendar=\*-\*-\* 03:00:00 UTC' "$timer" || fail "$timer: $(grep OnCalendar "$timer")"
grep -qx 'Persistent=true' "$timer" || fail "$timer has no Persistent=true"
backup_exec=$(sed -n 's/^ExecStart=//p' "$backup_unit")
[[ $backup_exec == "/usr/bin/pgwarden backup --scheduled --config /etc/pgwarden/config.toml" ]] || fail "$backup_unit: ExecStart=$backup_exec"

# ExecStart as the service runs it.
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
[[ $exec_start == "/usr/bin/pgwarden run --config /etc/pgwarden/config.toml" ]] || fail "ExecStart=$exec_start"
log=$(mktemp)
# shellcheck disable=SC2086 # ExecStart is split on spaces, as systemd does.
(cd / && exec setpriv --reuid=pgwarden --regid=pgwarden --init-groups --no-new-privs \
    env -i PATH=/usr/bin:/bin STATE_DIRECTORY=/var/lib/pgwarden \
    CONFIGURATION_DIRECTORY=/etc/pgwarden \
    PGWARDEN_ARCHIVE="$archive" PGWARDEN_PORT="$port" $exec_start) >"$log" 2>&1 &
server_pid=$!
for _ in $(seq 1 600); do
    grep -q '^ready: ' "$log" && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$log"; fail "pgwarden exited"; }
    sleep 0.5
done
grep '^ready: ' "$log" || { cat "$log"; fail "not ready after 300 s"; }
pg_isready -h 127.0.0.1 -p "$port"
[[ $(PGPASSWORD=trader psql -h 127.0.0.1 -p "$port" -U trader -d trader -Atc 'SELECT current_user') == trader ]] \
    || fail "cannot query the server"
[[ -f /var/lib/pgwarden/16/data/PG_VERSION ]] || fail "no cluster in /var/lib/pgwarden/16/data"
[[ $(stat -c %U /var/lib/pgwarden/16/data) == pgwarden ]] || fail "data dir not owned by pgwarden"

# What the timer starts: pgwarden-backup.service's ExecStart, as root (the unit sets no User=),
# with systemd's bare environment. It must find the service's cluster and back it up.
# shellcheck disable=SC2086 # ExecStart is split on spaces, as systemd does.
(cd / && env -i PATH=/usr/bin:/bin $backup_exec) || fail "the backup service's command failed"
backups=(/var/lib/pgwarden/16/data.backups/backup-*.tar.zst)
[[ ${#backups[@]} == 1 && -f ${backups[0]} && -f ${backups[0]}.manifest.json ]] \
    || fail "no backup and manifest in /var/lib/pgwarden/16/data.backups: $(ls -la /var/lib/pgwarden/16/data.backups 2>&1)"
# --scheduled: the drill verified the new backup (backup_verify is on by default).
verify_record=/var/lib/pgwarden/16/data.pgwarden/verify.json
grep -q '"ok": *true' "$verify_record" || fail "no passed verification in $verify_record: $(cat "$verify_record" 2>&1)"
echo "backup service command: ok (${backups[0]}, verified)"
kill -TERM "$server_pid"
wait "$server_pid" || fail "pgwarden did not exit 0 on SIGTERM"
server_pid=

dpkg -r pgwarden
[[ ! -e /usr/bin/pgwarden ]] || fail "/usr/bin/pgwarden still there after remove"
[[ -f /var/lib/pgwarden/16/data/PG_VERSION ]] || fail "remove deleted the data dir"
dpkg -P pgwarden
[[ -f /var/lib/pgwarden/16/data/PG_VERSION ]] || fail "purge deleted the data dir"
[[ -f ${backups[0]} ]] || fail "purge deleted the backups"
for u in pgwarden.service pgwarden-backup.service pgwarden-backup.timer; do
    [[ ! -e /usr/lib/systemd/system/$u ]] || fail "/usr/lib/systemd/system/$u still there after purge"
    [[ ! -L /etc/systemd/system/$u ]] || fail "/etc/systemd/system/$u left behind (a mask?) after purge"
done
echo "deb check: ok"
