#!/usr/bin/env bash
# Sets a testbed host up the way the seed article's team sets up a server
# (their Ansible playbook, by hand): run as root on the host, over SSH.
# Usage: provision.sh BASE_PORT COUNT
# The first release must already be staged in /srv/releases/v1 (see
# release.go); it is activated and COUNT instances are enabled and started.
set -euo pipefail
base=$1 count=$2

# An unprivileged, non-login user runs the app and can read, never write.
id nodeuser >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin --user-group nodeuser
usermod -aG www-data nodeuser

install -d -m 0755 -o nodeuser -g nodeuser /var/log/my-app
install -d -m 0750 -o root -g root /etc/my-app
cat >/etc/my-app/.env <<'ENV'
DATABASE_URL=postgres://my-app:testbed-secret@127.0.0.1:5432/my-app
ENV
chmod 0600 /etc/my-app/.env

install -d -m 2750 -o root -g www-data /var/www/my-app
cp -a /srv/releases/v1/. /var/www/my-app/
chown -R root:www-data /var/www/my-app
find /var/www/my-app -type f -exec chmod 0640 {} +
find /var/www/my-app -type d -exec chmod 2750 {} +

cat >/etc/systemd/system/my-app@.service <<'UNIT'
[Unit]
Description=my-app instance on port %i
After=network.target
StartLimitIntervalSec=60s
StartLimitBurst=3

[Service]
Type=simple
User=nodeuser
Group=nodeuser
Environment=NODE_ENV=production PORT=%i
EnvironmentFile=/etc/my-app/.env
WorkingDirectory=/var/www/my-app
ExecStart=/usr/bin/node /var/www/my-app/server.js
Restart=on-failure
RestartSec=2s
MemoryMax=256M
StandardOutput=append:/var/log/my-app/stdout-%i.log
StandardError=append:/var/log/my-app/stderr-%i.log

[Install]
WantedBy=multi-user.target
UNIT

ports=()
for ((i = 0; i < count; i++)); do ports+=($((base + i))); done

{
  echo "# Upstream for my-app: one line per instance."
  echo "upstream my_app {"
  for p in "${ports[@]}"; do echo "    server 127.0.0.1:$p;"; done
  echo "}"
} >/etc/nginx/conf.d/my-app-upstream.conf

cat >/etc/nginx/sites-available/my-app <<'SITE'
server {
    listen 80 default_server;
    location / {
        proxy_pass http://my_app;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
}
SITE
ln -sf /etc/nginx/sites-available/my-app /etc/nginx/sites-enabled/my-app

systemctl daemon-reload
units=()
for p in "${ports[@]}"; do units+=("my-app@$p"); done
systemctl enable --now "${units[@]}" 2>/dev/null
nginx -t -q
systemctl reload nginx

# How a release goes live: releases are staged in /srv/releases/VERSION
# (by CI, scp, or the testbed); this swaps one into the app directory.
# Instances keep running the code they loaded until they are restarted.
cat >/usr/local/sbin/my-app-activate <<'ACTIVATE'
#!/usr/bin/env bash
set -euo pipefail
v=${1:?usage: my-app-activate VERSION}
[[ $v =~ ^[A-Za-z0-9._-]+$ ]] || { echo "my-app-activate: bad version: $v" >&2; exit 2; }
src=/srv/releases/$v
[[ -d $src ]] || { echo "my-app-activate: release $v is not staged in $src" >&2; exit 1; }
rm -rf /var/www/my-app.next /var/www/my-app.prev
cp -a "$src" /var/www/my-app.next
mv /var/www/my-app /var/www/my-app.prev
mv /var/www/my-app.next /var/www/my-app
rm -rf /var/www/my-app.prev
echo "my-app-activate: $v is live in /var/www/my-app"
ACTIVATE
chmod 0755 /usr/local/sbin/my-app-activate
