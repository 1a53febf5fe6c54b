#!/usr/bin/env bash
# Builds the testbed's Debian rootfs of release $2 (bullseye, bookworm or
# trixie; bookworm if not given) into $1 (a new directory).
# The recipe is this file: the testbed hashes it and rebuilds the cached
# rootfs whenever it changes. Hosts boot the rootfs read-only with a
# volatile overlay, so everything here is shared and nothing per host
# (addresses, SSH keys) lives in it.
set -euo pipefail

dest=$1
suite=${2:-bookworm}
packages=systemd,systemd-sysv,dbus,libnss-myhostname,openssh-server,nginx,sudo,iproute2,procps,nodejs,ca-certificates,curl,haproxy,socat,logrotate
# Caddy is packaged from Debian 12 on (2.6.2); bullseye has none.
[[ $suite == bullseye ]] || packages+=,caddy

# Use the mirror this machine's apt already uses, so the build needs no
# network access apt itself doesn't have.
mirror=${ROLLOUT_DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
fi
if [[ -z $mirror ]]; then
  mirror=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
[[ -n $mirror ]] || { echo "rootfs.sh: no Debian mirror found; set ROLLOUT_DEBIAN_MIRROR" >&2; exit 1; }

debootstrap --variant=minbase --include="$packages" "$suite" "$dest" "$mirror"

in_root() { chroot "$dest" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

# The login user the controller uses, with passwordless sudo. Everything the
# app needs (its user, unit, Nginx site) is provisioned after boot, so a host
# can also be left bare.
in_root useradd --create-home --shell /bin/bash --user-group deploy
in_root passwd -l deploy >/dev/null
install -d -m 0700 -o "$(in_root id -u deploy)" -g "$(in_root id -g deploy)" "$dest/home/deploy/.ssh"
echo 'deploy ALL=(ALL) NOPASSWD: ALL' >"$dest/etc/sudoers.d/deploy"
chmod 0440 "$dest/etc/sudoers.d/deploy"
# A login user without sudo rights, to prove rollout fails fast without them.
in_root useradd --create-home --shell /bin/bash --user-group nosudo
in_root passwd -l nosudo >/dev/null
install -d -m 0700 -o "$(in_root id -u nosudo)" -g "$(in_root id -g nosudo)" "$dest/home/nosudo/.ssh"

# sshd: keys only. Host keys are bound in per host at boot, never baked.
rm -f "$dest"/etc/ssh/ssh_host_*
cat >"$dest/etc/ssh/sshd_config.d/testbed.conf" <<'CONF'
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UseDNS no
MaxSessions 64
MaxStartups 64:30:128
CONF

# No console gettys, no timers that wake up during a benchmark.
for u in getty@tty1.service console-getty.service apt-daily.timer apt-daily-upgrade.timer \
  dpkg-db-backup.timer e2scrub_all.timer fstrim.timer systemd-tmpfiles-clean.timer; do
  ln -sf /dev/null "$dest/etc/systemd/system/$u"
done
in_root systemctl enable ssh.service nginx.service >/dev/null
# HAProxy runs only on the balancer hosts of the load balancer tests, and
# Caddy only where a test puts it in Nginx's place.
in_root systemctl disable haproxy.service >/dev/null 2>&1
[[ $suite == bullseye ]] || in_root systemctl disable caddy.service >/dev/null 2>&1
# systemd-user-sessions removes /run/nologin, without which PAM refuses
# every SSH login. Booted right after another testbed went down, it has
# failed with 219/CGROUP (seen twice): it tries again instead.
install -d "$dest/etc/systemd/system/systemd-user-sessions.service.d"
printf '[Unit]\nStartLimitIntervalSec=0\n\n[Service]\nRestart=on-failure\nRestartSec=1s\n' >"$dest/etc/systemd/system/systemd-user-sessions.service.d/testbed-retry.conf"
rm -f "$dest/etc/nginx/sites-enabled/default"
echo testbed >"$dest/etc/hostname"
# The host's own name resolves locally, before DNS: the testbed has no DNS,
# and bullseye's nsswitch asks it first, so every sudo waited 10s on it.
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$dest/etc/hosts"
sed -i 's/^hosts:.*/hosts:          files myhostname dns/' "$dest/etc/nsswitch.conf"
in_root apt-get clean
