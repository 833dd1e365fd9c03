#!/usr/bin/env bash
# lab.sh: a real Apache laid out like a cPanel EA4 host under a directory, with its own test CA
# and an `openssl ocsp` responder, all on 127.0.0.1. The Go end-to-end tests use it; so can you.
#
#   scripts/lab.sh up DIR            build the tree, start the responder and Apache
#   scripts/lab.sh down DIR          stop Apache and the responder
#   scripts/lab.sh responder start|stop DIR
#   scripts/lab.sh handshake DIR [SERVERNAME]
#                                    one TLS handshake asking for a staple (default shop.test);
#                                    prints the status
#   scripts/lab.sh nginx reload DIR  (FRONT=nginx) reload nginx: new workers, no staples cached
#
# Ports: HTTPS_PORT and OCSP_PORT from the environment, else free ones picked at random;
# written to DIR/lab.env. Needs Debian's apache2 and openssl.
#
# The tree is true for Apache (`apache2 -d DIR/etc/apache2`, every path ServerRoot-relative)
# and for stapling-agent (`--root DIR`): etc/cpanel/ea4/is_ea4, paths.conf, httpd.conf with
# cPanel's global SSL block, the pre-VirtualHost include, an SSL vhost whose certificate's OCSP
# URL is the local responder, and etc/apache2/logs -> ../../var/log/apache2. With MUSTSTAPLE=1,
# a second vhost (conf.d/mustaple.conf) serves a Must-Staple certificate (TLS Feature
# status_request).
#
# With SHAPES=1, the vhost shapes cPanel writes besides shop.test (FACTS.md section 4;
# ssl_vhost.default and ea4_main.default in CpanelInc/ea-apache2-config), each with its own
# certificate:
#   v6.test        an account with a dedicated IPv6 address: one vhost on both addresses,
#                  <VirtualHost [::1]:HTTPS_PORT 127.0.0.1:HTTPS_PORT> (and Listen [::1]).
#                  Left out, with a message, where this machine has no ::1 or with IPV6=0
#                  (lab.env says IPV6=0 or 1).
#   _wildcard_.wild.test  a wildcard subdomain as cPanel writes it: ServerName through
#                  cPanel's wildcard_safe() (`*.` becomes `_wildcard_.`), ServerAlias
#                  *.wild.test, a *.wild.test certificate, the userdata include under the
#                  legacy `wildcard_safe.wild.test` name.
#   noocsp.test    a certificate without an OCSP URL (as Let's Encrypt's since 2025-05-07), so
#                  cPanel's own `SSLUseStapling off` in the vhost.
#   host.test      cPanel's proxy-subdomain vhost: every address in use, ServerAlias cpanel.*
#                  whm.* webmail.* webdisk.*, SSL in <IfModule mod_ssl.c>, the service
#                  certificate without an OCSP URL and cPanel's `SSLUseStapling Off`.
#   any.test, star.test  two <VirtualHost *:ANY_PORT> on a second port (lab.env), listened
#                  on 127.0.0.1 (and ::1): address wildcards, the second with an admin's
#                  `ServerAlias *.star.test`. (A pattern as ServerName is no shape: Apache
#                  refuses `ServerName *.star.test`, "Invalid ServerName ... use ServerAlias".)
# and mod_info, so `apache2 -t -D DUMP_CONFIG` answers.
#
# With VHOSTS=N, N more SSL vhosts on the HTTPS port as cPanel writes an account's (one
# <VirtualHost 127.0.0.1:HTTPS_PORT> each, ServerName siteI.test, its own certificate file):
# site1.test .. siteN.test, each certificate issued by the lab CA with the lab's responder as
# its OCSP URL (so each staples "good"), all on one RSA key (generating N keys would take
# minutes). For the probe at scale (scripts/bench-probe.sh). STAPLING_CACHE=BYTES sizes the
# SSLStaplingCache (default cPanel's 256000): an `openssl ocsp` response here is ~1.6 KB, so
# cPanel's cache holds about 150 of them and with more stapled vhosts mod_ssl keeps evicting
# and fetching again from the responder, one at a time under its mutex.
#
# With FRONT=nginx, Debian's nginx in front of Apache as cPanel's ea-nginx puts it (FACTS.md
# section 12; CpanelInc/ea-nginx: nginx.conf, ea-nginx.conf.tt, server.conf.tt, cpanel-proxy.conf):
#   HTTPS_PORT      nginx (the public port: what clients and `handshake` use); it proxies each
#                   request to Apache over TLS with the client's name as SNI and Host.
#   APACHE_SSL_PORT Apache (lab.env), where ea-nginx moves it (444 on a real host, with
#                   `whmapi1 set_tweaksetting`): Apache's Listen and SSL vhosts are on it, and
#                   var/cpanel/cpanel.config says apache_ssl_port=0.0.0.0:APACHE_SSL_PORT.
#   etc/nginx/nginx.conf                     ea-nginx's, read as `nginx -p DIR/ -c` it; includes
#                                            relative to etc/nginx (nginx's conf prefix), pid and
#                                            logs relative to DIR, so nginx and --root DIR agree
#   etc/nginx/conf.d/ea-nginx.conf           ea-nginx's globals (Apache's address) and its marker
#   etc/nginx/conf.d/users.conf, users/shop.conf  one file per cPanel user, a server{} per
#                                            site (shop.test; mustaple.test with MUSTSTAPLE=1) on
#                                            Apache's certificates, with server.conf.tt's includes
#   etc/nginx/conf.d/server-includes/ocsp-stapling.conf  an admin's stapling for every site
#                                            (ea-nginx's templates set none): ssl_stapling on,
#                                            ssl_stapling_verify on, resolver 127.0.0.1 (the
#                                            responder URL is an address: nothing is resolved)
#   var/log/nginx/error.log (level warn, as ea-nginx), var/run/nginx.pid
#   proc/   who listens where, for stapling-agent --root DIR (the agent reads ROOT/proc; see
#           agent/frontend's package comment, the shape frontend.WriteFakeListener writes):
#           nginx's master pid with exe /usr/sbin/nginx on HTTPS_PORT and Apache's parent pid
#           with exe /usr/sbin/httpd (cPanel's binary) on APACHE_SSL_PORT. Written by `up` and
#           `nginx reload`: a snapshot, not the live /proc.
# Only the sites above go through nginx; SHAPES' and TENANTS' vhosts stay on Apache's port.
# nginx runs as root (workers as www-data) and `down` stops it by its pids. Needs the nginx
# package.
#
# With TENANTS=1, two customer accounts as cPanel writes them into httpd.conf (DocumentRoot
# under the account's home, SuexecUserGroup, ScriptAlias /cgi-bin/), on the same HTTPS port
# with SNI, and the code a customer can run there, to test what a tenant can put in error_log
# (FACTS.md section 10):
#   alice.test    certificate whose OCSP URL is the lab's responder: staples fine.
#   mallory.test  certificate whose OCSP URL is 127.0.0.1:DEAD_OCSP_PORT (lab.env), where
#                 nothing listens: each staple request makes mod_ssl log a genuine AH01974
#                 (connection refused) and AH01941 for it.
#     https://mallory.test/cgi-bin/forge.cgi?LINE  writes LINE, URL-decoded, raw to stderr
#     https://mallory.test/forge.php?line=LINE     writes LINE raw to php://stderr (mod_php)
# The CGI runs under mod_cgid (TENANT_CGI=cgi loads mod_cgi instead, to compare): under
# prefork on Debian's 2.4.71, mod_cgid hands the script the server's error_log as stderr (raw
# lines), mod_cgi reads the script's stderr itself and logs each line as AH01215 with a prefix.
# Needs libapache2-mod-php8.2 as well.
#
# Stand-ins for cPanel's scripts (FACTS.md section 5) behave like the real ones:
#   usr/sbin/apachectl, usr/sbin/httpd  run the real apache2 with this tree's config
#   usr/local/cpanel/scripts/restartsrv_httpd  graceful restart (start when not running),
#       hard restart as fallback, exit 1 when Apache does not come back; refuses while
#       var/cpanel/mgmt_queue/apache_update_no_restart exists, as the real one does. One knob
#       the real script does not have: DIR/fail-next-restart makes the next call fail once
#       before touching Apache (a restart that times out), for the rollback tests.
#   usr/local/cpanel/scripts/rebuildhttpdconf  does nothing: this httpd.conf already
#       includes every include file.
set -euo pipefail

cmd=${1:?usage: lab.sh up|down|responder|nginx|handshake DIR}
if [ "$cmd" = responder ]; then
  action=${2:?usage: lab.sh responder start|stop DIR}
  dir=${3:?usage: lab.sh responder start|stop DIR}
elif [ "$cmd" = nginx ]; then
  action=${2:?usage: lab.sh nginx reload DIR}
  dir=${3:?usage: lab.sh nginx reload DIR}
else
  dir=${2:?usage: lab.sh $cmd DIR}
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# apache_pids: every live (not zombie) process running this tree's Apache, found by its
# arguments in /proc, so a missing or stale pid file does not hide one.
apache_pids() {
  local p args state
  for p in /proc/[0-9]*; do
    args=$({ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null) || continue
    case "$args" in
      *"apache2 -d $dir/etc/apache2 "*)
        state=$(awk '{ sub(/.*\) /, ""); print $1 }' "$p/stat" 2>/dev/null)
        [ "$state" = Z ] || echo "${p#/proc/}"
        ;;
    esac
  done
}

# nginx_pids (FRONT=nginx): every live process of this tree's nginx: the master, found by its
# arguments (nginx keeps them in its title, "nginx: master process /usr/sbin/nginx -p DIR/ ..."),
# and its children (workers, whose title names no directory) by their parent pid.
nginx_pids() {
  local p masters=""
  # grep's own arguments hold the pattern too: keep the processes whose title is nginx's.
  for p in $(grep -alF -- "/usr/sbin/nginx -p $dir/ " /proc/[0-9]*/cmdline 2>/dev/null); do
    p=${p#/proc/}
    p=${p%/cmdline}
    case "$({ head -c 40 "/proc/$p/cmdline" | tr '\0' ' '; } 2>/dev/null)" in
      "nginx: master process "* | "/usr/sbin/nginx "*) masters+=" $p" ;;
    esac
  done
  # shellcheck disable=SC2086
  masters=$(alive $masters)
  [ -n "$masters" ] || return 0
  # shellcheck disable=SC2086
  echo $masters
  # Field 4 of /proc/PID/stat (the second after the parenthesised name) is the parent's pid.
  # shellcheck disable=SC2086
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v m=" $(echo $masters) " \
    '{ pid = $1; sub(/.*\) /, ""); if ($1 != "Z" && index(m, " " $2 " ")) print pid }'
}

# alive PID...: prints those that still run (not zombies).
alive() {
  local p state
  for p in "$@"; do
    state=$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$p/stat" 2>/dev/null) || continue
    [ -n "$state" ] && [ "$state" != Z ] && echo "$p"
  done
  return 0
}

# free_port picks below Linux's ephemeral range (32768-60999 by default): a port there can be
# taken at any moment by a client socket of a concurrently running test, and then the lab's
# responder port cannot be bound again after a stop (seen in CI: "the responder's port to be free").
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    if ! listening "$p"; then echo "$p"; return; fi
  done
  echo "lab: no free port" >&2
  exit 1
}

# listening PORT: a socket listens on PORT. Read from /proc rather than by connecting: OpenSSL
# 3.0's `ocsp` server spins forever on a connection closed before it sends a request.
listening() {
  local hex
  hex=$(printf '%04X' "$1")
  awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

responder_start() {
  # shellcheck disable=SC1091
  . "$dir/lab.env"
  responder_stop
  # OpenSSL 3.0's -port takes a number only (it listens on every address); clients here only
  # ever connect to 127.0.0.1.
  openssl ocsp -index "$dir/ca/index.txt" -port "$OCSP_PORT" -rsigner "$dir/ca/ca.crt" \
    -rkey "$dir/ca/ca.key" -CA "$dir/ca/ca.crt" -nmin 60 -ignore_err </dev/null >>"$dir/var/log/ocsp.log" 2>&1 &

  local pid=$!
  echo "$pid" >"$dir/run/ocsp.pid"
  # Up to 15 s: on a loaded 2-core machine openssl's start can take seconds.
  for _ in $(seq 300); do
    listening "$OCSP_PORT" && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "lab: OCSP responder did not start on port $OCSP_PORT: $(tail -n 3 "$dir/var/log/ocsp.log" 2>/dev/null)" >&2
  exit 1
}

responder_stop() {
  if [ -f "$dir/run/ocsp.pid" ]; then
    local pid
    pid=$(cat "$dir/run/ocsp.pid")
    kill "$pid" 2>/dev/null || true
    # Return only once the port is free: a test binds it next.
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
      if kill -0 "$pid" 2>/dev/null; then
        echo "lab: the OCSP responder ($pid) of $dir is still running" >&2
        return 1
      fi
    fi
    rm -f "$dir/run/ocsp.pid"
  fi
  if [ -f "$dir/lab.env" ]; then
    . "$dir/lab.env"
    for _ in $(seq 100); do
      listening "$OCSP_PORT" || break
      sleep 0.05
    done
  fi
}

# cgid_sock_dir: where mod_cgid's socket goes. Not in the tree: a socket path must fit in
# sun_path (107 bytes), and a test's lab tree is longer than that with run/cgisock.PID added
# (mod_cgid then truncates the path, AH01254, and binds somewhere else or nowhere). A short
# directory of its own per tree, removed by `down`.
cgid_sock_dir() {
  echo "/run/stapling-lab-$(printf %s "$dir" | cksum | cut -d' ' -f1)"
}

# shapes_config (SHAPES=1, called by build): picks ANY_PORT, decides IPV6, and sets
# shapes_modules and shapes_vhosts, the lines build adds to httpd.conf.
shapes_config() {
  any=${ANY_PORT:-$(free_port)}
  while [ "$any" = "$https" ] || [ "$any" = "$public" ] || [ "$any" = "$ocsp" ] || [ "$any" = "${dead:-}" ] || [ "$any" = "${http:-}" ] || listening "$any"; do any=$(free_port); done
  printf 'ANY_PORT=%s\n' "$any" >>"$dir/lab.env"
  # ::1 must exist to bind it; a container without IPv6 has none (checked in /proc, which
  # needs no tool). IPV6=0 leaves it out anyway, to see the lab as such a machine has it.
  v6=0
  if [ "${IPV6:-}" = 0 ]; then
    echo "lab: IPV6=0: the IPv6 vhost v6.test is left out" >&2
  elif grep -q '^00000000000000000000000000000001 ' /proc/net/if_inet6 2>/dev/null; then
    v6=1
  else
    echo "lab: no IPv6 loopback (::1) on this machine: the IPv6 vhost v6.test is left out" >&2
  fi
  printf 'IPV6=%s\n' "$v6" >>"$dir/lab.env"
  shapes_modules="
LoadModule info_module /usr/lib/apache2/modules/mod_info.so"
  local any_v6="" proxy_addrs="127.0.0.1:$https"
  if [ "$v6" = 1 ]; then
    any_v6="
Listen [::1]:$any"
    proxy_addrs="127.0.0.1:$https [::1]:$https"
    shapes_vhosts="
Listen [::1]:$https
<VirtualHost [::1]:$https 127.0.0.1:$https>
    ServerName v6.test
    ServerAlias www.v6.test
    DocumentRoot htdocs
    UseCanonicalName Off
    ## User sixer # Needed for Cpanel::ApacheConf
    <IfModule suexec_module>
        <IfModule !mod_ruid2.c>
            SuexecUserGroup sixer sixer
        </IfModule>
    </IfModule>
    <IfModule ssl_module>
        SSLEngine on
        SSLCertificateFile ssl/v6.test.combined
    </IfModule>
    IncludeOptional \"conf.d/userdata/ssl/2_4/sixer/v6.test/*.conf\"
</VirtualHost>
"
  fi
  shapes_vhosts+="
<VirtualHost 127.0.0.1:$https>
    ServerName _wildcard_.wild.test
    ServerAlias *.wild.test
    DocumentRoot htdocs
    UseCanonicalName Off
    ## User wild # Needed for Cpanel::ApacheConf
    <IfModule suexec_module>
        <IfModule !mod_ruid2.c>
            SuexecUserGroup wild wild
        </IfModule>
    </IfModule>
    <IfModule ssl_module>
        SSLEngine on
        SSLCertificateFile ssl/_wildcard_.wild.test.combined
    </IfModule>
    IncludeOptional \"conf.d/userdata/ssl/2_4/wild/wildcard_safe.wild.test/*.conf\"
</VirtualHost>

<VirtualHost 127.0.0.1:$https>
    ServerName noocsp.test
    DocumentRoot htdocs
    UseCanonicalName Off
    ## User shop # Needed for Cpanel::ApacheConf
    <IfModule suexec_module>
        <IfModule !mod_ruid2.c>
            SuexecUserGroup shop shop
        </IfModule>
    </IfModule>
    <IfModule ssl_module>
        SSLEngine on
        SSLCertificateFile ssl/noocsp.test.combined
        SSLUseStapling off
    </IfModule>
    IncludeOptional \"conf.d/userdata/ssl/2_4/shop/noocsp.test/*.conf\"
</VirtualHost>

Listen 127.0.0.1:$any$any_v6
<VirtualHost *:$any>
    ServerName any.test
    DocumentRoot htdocs
    <IfModule ssl_module>
        SSLEngine on
        SSLCertificateFile ssl/any.test.combined
    </IfModule>
</VirtualHost>

<VirtualHost *:$any>
    ServerName star.test
    ServerAlias *.star.test
    DocumentRoot htdocs
    <IfModule ssl_module>
        SSLEngine on
        SSLCertificateFile ssl/star.test.combined
    </IfModule>
</VirtualHost>
"
  # Last, as ea4_main.default writes it after the accounts' vhosts.
  shapes_proxy="
# CPANEL/WHM/WEBMAIL/WEBDISK PROXY SUBDOMAINS
<VirtualHost $proxy_addrs>
    ServerName host.test
    ServerAlias cpanel.* whm.* webmail.* webdisk.*
    DocumentRoot htdocs
    <IfModule mod_ssl.c>
        SSLEngine on
        SSLCertificateFile ssl/host.test.combined
        SSLCertificateKeyFile ssl/host.test.combined
        SSLCertificateChainFile ssl/host.test.combined
        SSLUseStapling Off
    </IfModule>
    UseCanonicalName Off
</VirtualHost>
"
}

# front_config (FRONT=nginx, called by build before the other options): moves Apache off the
# public port, as ea-nginx does: sets https, the port Apache's Listen and SSL vhosts use, to
# APACHE_SSL_PORT, and adds FRONT and APACHE_SSL_PORT to lab.env. HTTPS_PORT stays public.
front_config() {
  if [ ! -x /usr/sbin/nginx ]; then
    echo "lab: FRONT=nginx needs Debian's nginx: apt-get install nginx" >&2
    exit 1
  fi
  https=${APACHE_SSL_PORT:-$(free_port)}
  while [ "$https" = "$public" ] || [ "$https" = "$ocsp" ] || listening "$https"; do https=$(free_port); done
  printf 'FRONT=nginx\nAPACHE_SSL_PORT=%s\n' "$https" >>"$dir/lab.env"
}

# front_files (FRONT=nginx, called by build once the certificates exist): nginx's tree as
# ea-nginx writes it (see the header), and cPanel's record of Apache's ports.
front_files() {
  local n=$dir/etc/nginx
  mkdir -p "$n/conf.d/users/shop/shop.test" "$n/conf.d/server-includes" "$n/conf.d/includes-optional" \
    "$dir/var/log/nginx" "$dir/var/run" "$dir/var/lib/nginx" "$dir/var/cpanel"
  cat >"$n/nginx.conf" <<'EOF'
# ea-nginx's nginx.conf (CpanelInc/ea-nginx SOURCES/nginx.conf) for the stapling-agent lab,
# started as nginx -p ROOT/ -c ROOT/etc/nginx/nginx.conf. ea-nginx writes absolute paths
# (/etc/nginx/conf.d/*.conf, /var/log/nginx/error.log, /var/run/nginx.pid); here includes are
# relative to this file's directory (nginx's conf prefix) and pid, logs and temp paths to the
# prefix ROOT, so the real nginx and stapling-agent --root ROOT read the same files.
user  www-data;
worker_processes  1;

error_log  var/log/nginx/error.log warn;
pid        var/run/nginx.pid;

events {
    worker_connections  1024;
}

http {
    default_type  application/octet-stream;
    access_log  var/log/nginx/access.log;
    # Debian's built-in temp paths are the host's /var/lib/nginx.
    client_body_temp_path var/lib/nginx/body;
    proxy_temp_path var/lib/nginx/proxy;
    fastcgi_temp_path var/lib/nginx/fastcgi;
    uwsgi_temp_path var/lib/nginx/uwsgi;
    scgi_temp_path var/lib/nginx/scgi;
    keepalive_timeout  65;

    include conf.d/*.conf;
}
EOF
  cat >"$n/conf.d/ea-nginx.conf" <<EOF
# ea-nginx's globals (ea-nginx.conf.tt): where Apache is, from cPanel's tweak settings
# (apache_port_ip, apache_ssl_port), and Apache's SSLProtocol. No port 80 in the lab, so no
# CPANEL_APACHE_PROXY_PORT.
map \$host \$CPANEL_APACHE_PROXY_SSL_IP {
    default 127.0.0.1;
}

map \$host \$CPANEL_APACHE_PROXY_SSL_PORT {
    default $https;
}

ssl_protocols TLSv1.2 TLSv1.3;
proxy_ssl_protocols TLSv1.2 TLSv1.3;
EOF
  printf 'include conf.d/users/*.conf;\n' >"$n/conf.d/users.conf"
  cat >"$n/conf.d/includes-optional/cpanel-proxy.conf" <<'EOF'
# ea-nginx's cpanel-proxy.conf, the parts that matter here: HTTP/1.0 (a fresh TLS connection per
# request, whose SNI matches Host: Apache 2.4.64+ answers 421 otherwise) and the client's name
# as SNI. nginx's upstream TLS asks for no staple: proxied requests make Apache fetch none.
proxy_http_version 1.0;
proxy_set_header Connection "";
proxy_set_header Host $host;
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
proxy_set_header X-Forwarded-Port $server_port;
proxy_set_header X-Forwarded-Proto $scheme;
proxy_set_header X-Real-IP $remote_addr;
proxy_connect_timeout 300s;
proxy_read_timeout 300s;
proxy_send_timeout 300s;
proxy_ssl_server_name on;
proxy_ssl_name $host;
proxy_ssl_session_reuse off;
EOF
  # site NAME: one server{} as server.conf.tt writes it for a site with a certificate, in
  # reverse-proxy mode; the certificate is Apache's combined file (certificate, key, chain).
  site() {
    cat <<EOF

server {
    server_name $1 www.$1;
    listen 127.0.0.1:$public ssl;

    set \$CPANEL_APACHE_PROXY_REQ_IP \$CPANEL_APACHE_PROXY_SSL_IP;
    set \$CPANEL_APACHE_PROXY_REQ_PORT \$CPANEL_APACHE_PROXY_SSL_PORT;

    ssl_certificate ../apache2/ssl/$1.combined;
    ssl_certificate_key ../apache2/ssl/$1.combined;

    location / {
        include conf.d/includes-optional/cpanel-proxy.conf;
        proxy_pass \$scheme://\$CPANEL_APACHE_PROXY_REQ_IP:\$CPANEL_APACHE_PROXY_REQ_PORT;
    }

    include conf.d/server-includes/*.conf;
    include conf.d/users/shop/*.conf;
    include conf.d/users/shop/$1/*.conf;
}
EOF
  }
  {
    echo "# ea-nginx's file for the cPanel user shop (server.conf.tt, one server{} per site)."
    site shop.test
    if [ "${MUSTSTAPLE:-0}" = 1 ]; then site mustaple.test; fi
  } >"$n/conf.d/users/shop.conf"
  if [ "${MUSTSTAPLE:-0}" = 1 ]; then mkdir -p "$n/conf.d/users/shop/mustaple.test"; fi
  cat >"$n/conf.d/server-includes/ocsp-stapling.conf" <<'EOF'
# An admin's OCSP stapling for every site (ea-nginx's templates set none). The responder URL in
# the lab's certificates is an address, so the resolver is never asked.
ssl_stapling on;
ssl_stapling_verify on;
resolver 127.0.0.1;
EOF
  # cPanel's tweak settings after ea-nginx moved Apache (whmapi1 set_tweaksetting). A real
  # host also has apache_port=0.0.0.0:81; the lab's Apache has no plain-HTTP port of its own.
  printf 'apache_ssl_port=0.0.0.0:%s\n' "$https" >"$dir/var/cpanel/cpanel.config"
}

# front_start (FRONT=nginx): starts nginx (it daemonizes; stdout and stderr to a file, so no
# caller's pipe stays open) and waits for it to listen, then writes proc/.
front_start() {
  # shellcheck disable=SC1091
  . "$dir/lab.env"
  if ! /usr/sbin/nginx -p "$dir/" -c "$dir/etc/nginx/nginx.conf" -e "$dir/var/log/nginx/error.log" \
    </dev/null >"$dir/run/nginx-start.log" 2>&1; then
    echo "lab: nginx did not start: $(tail -n 5 "$dir/run/nginx-start.log" "$dir/var/log/nginx/error.log" 2>/dev/null)" >&2
    exit 1
  fi
  for _ in $(seq 300); do
    if listening "$HTTPS_PORT" && [ -s "$dir/var/run/nginx.pid" ]; then
      front_proc
      return 0
    fi
    sleep 0.05
  done
  echo "lab: nginx does not listen on $HTTPS_PORT: $(tail -n 5 "$dir/var/log/nginx/error.log" 2>/dev/null)" >&2
  exit 1
}

# front_reload (FRONT=nginx): SIGHUP to the master, as `nginx -s reload`; returns once the old
# workers are gone and a new one runs: its staples are not fetched yet.
front_reload() {
  local master old p fresh
  master=$(cat "$dir/var/run/nginx.pid")
  old=$(nginx_pids | tr ' ' '\n' | grep -vx "$master" || true)
  kill -HUP "$master"
  for _ in $(seq 200); do
    fresh=0
    for p in $(nginx_pids | tr ' ' '\n' | grep -vx "$master"); do
      case " $(echo $old) " in *" $p "*) ;; *) fresh=1 ;; esac
    done
    # shellcheck disable=SC2086
    if [ "$fresh" = 1 ] && [ -z "$(alive $old)" ]; then
      front_proc
      return 0
    fi
    sleep 0.05
  done
  echo "lab: nginx did not reload: $(tail -n 5 "$dir/var/log/nginx/error.log" 2>/dev/null)" >&2
  exit 1
}

# front_proc (FRONT=nginx): DIR/proc as frontend.Detect reads it (agent/frontend/fakeproc.go
# writes the same shape): nginx's master on HTTPS_PORT, Apache's parent on APACHE_SSL_PORT.
front_proc() {
  # shellcheck disable=SC1091
  . "$dir/lab.env"
  rm -rf "$dir/proc"
  mkdir -p "$dir/proc/net"
  printf '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n' >"$dir/proc/net/tcp"
  fake_listener "$(cat "$dir/var/run/nginx.pid")" "$HTTPS_PORT" /usr/sbin/nginx
  fake_listener "$(cat "$dir/etc/apache2/run/httpd.pid")" "$APACHE_SSL_PORT" /usr/sbin/httpd
}

# fake_listener PID PORT EXE: one LISTEN socket on 127.0.0.1:PORT (address and port in hex,
# host byte order), owned by PID through fd/N -> socket:[INODE], PID running EXE.
fake_listener() {
  local pid=$1 port=$2 exe=$3 tcp=$dir/proc/net/tcp n inode fds comm
  n=$(($(wc -l <"$tcp") - 1))
  inode=$((40000 + n))
  printf '%4d: 0100007F:%04X 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 %d 1 0000000000000000 100 0 0 10 0\n' \
    "$n" "$port" "$inode" >>"$tcp"
  mkdir -p "$dir/proc/$pid/fd"
  fds=$(find "$dir/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
  ln -s "socket:[$inode]" "$dir/proc/$pid/fd/$((3 + fds))"
  if [ ! -L "$dir/proc/$pid/exe" ]; then
    ln -s "$exe" "$dir/proc/$pid/exe"
    comm=$(basename "$exe")
    printf '%s\n' "${comm:0:15}" >"$dir/proc/$pid/comm"
  fi
}

# front_stop: stops this tree's nginx by its pids (TERM to the master, its fast shutdown; KILL
# after 10 s to all of them); fails when any survives.
front_stop() {
  local pids masters
  pids=$(nginx_pids)
  [ -n "$pids" ] || return 0
  masters=$(echo "$pids" | head -n 1)
  # shellcheck disable=SC2086
  kill -TERM $masters 2>/dev/null || true
  for _ in $(seq 100); do
    # shellcheck disable=SC2086
    [ -z "$(alive $pids)" ] && break
    sleep 0.1
  done
  # shellcheck disable=SC2046,SC2086
  if [ -n "$(alive $pids)" ]; then
    kill -KILL $(alive $pids) 2>/dev/null || true
    sleep 0.5
  fi
  # shellcheck disable=SC2086
  if [ -n "$(alive $pids)" ]; then
    echo "lab: nginx of $dir still running after SIGKILL: $(alive $pids)" >&2
    return 1
  fi
  rm -f "$dir/var/run/nginx.pid"
}

# tenant_config (TENANTS=1, called by build): picks DEAD_OCSP_PORT, and sets tenant_modules
# and tenant_vhosts, the lines build adds to httpd.conf.
tenant_config() {
  local mod=/usr/lib/apache2/modules cgi=${TENANT_CGI:-cgid} user
  if [ ! -f "$mod/libphp8.2.so" ]; then
    echo "lab: TENANTS=1 needs mod_php: apt-get install libapache2-mod-php8.2" >&2
    exit 1
  fi
  case "$cgi" in
    cgid | cgi) ;;
    *) echo "lab: TENANT_CGI is cgid or cgi" >&2; exit 2 ;;
  esac
  # Nothing may listen on mallory's responder port: mod_ssl must get "connection refused".
  # Picked like the other ports, never one of them; the lab itself never binds it.
  dead=${DEAD_OCSP_PORT:-$(free_port)}
  while [ "$dead" = "$https" ] || [ "$dead" = "$public" ] || [ "$dead" = "$ocsp" ] || listening "$dead"; do dead=$(free_port); done
  printf 'DEAD_OCSP_PORT=%s\n' "$dead" >>"$dir/lab.env"
  # mallory's site over plain HTTP too, as every cPanel site is on port 80: a request for the
  # scripts there involves no TLS handshake, so it makes mod_ssl log nothing of its own.
  http=${HTTP_PORT:-$(free_port)}
  while [ "$http" = "$https" ] || [ "$http" = "$public" ] || [ "$http" = "$ocsp" ] || [ "$http" = "$dead" ] || listening "$http"; do http=$(free_port); done
  printf 'HTTP_PORT=%s\n' "$http" >>"$dir/lab.env"
  mkdir -p "$(cgid_sock_dir)"
  # mod_php needs prefork, which the lab runs. The CGI module is mod_cgid by default (see the
  # header for what mod_cgi does instead). The CGI and PHP code runs as www-data: there is no
  # suexec here (mod_suexec is not loaded), so the vhosts' SuexecUserGroup is skipped by its
  # <IfModule>, as on a cPanel host without suexec; a real host would run the CGI as the
  # account's user, which changes nothing about where its stderr goes.
  tenant_modules="
LoadModule alias_module $mod/mod_alias.so
LoadModule ${cgi}_module $mod/mod_$cgi.so
LoadModule php_module $mod/libphp8.2.so
<IfModule cgid_module>
    # mod_cgid binds ScriptSock.PID; see cgid_sock_dir.
    ScriptSock $(cgid_sock_dir)/cgisock
</IfModule>
<IfModule php_module>
    # As Debian's php8.2.conf. PHP's error_log setting stays unset (PHP's own messages go to
    # Apache's logger, with a prefix); php://stderr is file descriptor 2 whatever it says.
    <FilesMatch \"\\.php\$\">
        SetHandler application/x-httpd-php
    </FilesMatch>
</IfModule>"
  # The SSL vhosts as cPanel's ssl_vhost.default template writes them, minus logging and the
  # ruid2/userdata parts. On a cPanel host DocumentRoot is /home/USER/public_html; here it is
  # ServerRoot-relative, so Apache (-d DIR/etc/apache2) and stapling-agent (--root DIR) both
  # find DIR/etc/apache2/home/USER/public_html.
  tenant_vhosts="
Listen 127.0.0.1:$http
<VirtualHost 127.0.0.1:$http>
    ServerName mallory.test
    DocumentRoot home/mallory/public_html
    <IfModule suexec_module>
        <IfModule !mod_ruid2.c>
            SuexecUserGroup mallory mallory
        </IfModule>
    </IfModule>
    ScriptAlias /cgi-bin/ home/mallory/public_html/cgi-bin/
</VirtualHost>
"
  for user in alice mallory; do
    tenant_vhosts+="
<VirtualHost 127.0.0.1:$https>
    ServerName $user.test
    ServerAlias www.$user.test
    DocumentRoot home/$user/public_html
    ServerAdmin webmaster@$user.test
    UseCanonicalName Off
    <IfModule suexec_module>
        <IfModule !mod_ruid2.c>
            SuexecUserGroup $user $user
        </IfModule>
    </IfModule>
    ScriptAlias /cgi-bin/ home/$user/public_html/cgi-bin/
    <IfModule ssl_module>
        SSLEngine on
        SSLCertificateFile ssl/$user.test.combined
    </IfModule>
</VirtualHost>
"
  done
}

# tenant_files (TENANTS=1, called by build): the accounts' docroots and mallory's scripts.
tenant_files() {
  local home=$dir/etc/apache2/home user
  for user in alice mallory; do
    mkdir -p "$home/$user/public_html/cgi-bin"
    echo "$user" >"$home/$user/public_html/index.html"
  done
  # Perl (perl-base is Essential on Debian): a shell script cannot write the decoded bytes
  # (NUL aside) in one write(2). One write keeps the line whole next to Apache's own.
  cat >"$home/mallory/public_html/cgi-bin/forge.cgi" <<'EOF'
#!/usr/bin/perl
# A customer's CGI script: writes its query string, form-decoded, raw to stderr.
my $q = $ENV{QUERY_STRING} // '';
$q =~ tr/+/ /;
$q =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ge;
syswrite(STDERR, "$q\n");
print "Content-Type: text/plain\n\nok\n";
EOF
  cat >"$home/mallory/public_html/forge.php" <<'EOF'
<?php
// A customer's PHP script: writes the "line" parameter raw to php://stderr.
file_put_contents('php://stderr', ($_GET['line'] ?? '') . "\n");
echo "ok\n";
EOF
  chmod 0755 "$home/mallory/public_html/cgi-bin/forge.cgi"
  chmod -R a+rX "$home"
  # Apache's children run the scripts as www-data: every directory above them must let it in.
  if ! runuser -u www-data -- test -r "$home/mallory/public_html/forge.php"; then
    echo "lab: www-data cannot reach $home: make $dir and its parent directories searchable (chmod o+x)" >&2
    exit 1
  fi
}

build() {
  # public: the port clients use (HTTPS_PORT); https: the one Apache's SSL vhosts listen on,
  # the same one unless FRONT=nginx moves Apache to a backend port.
  local public=${HTTPS_PORT:-$(free_port)} ocsp=${OCSP_PORT:-$(free_port)}
  local https=$public front=${FRONT:-}
  local tenants=${TENANTS:-0} dead="" http="" tenant_modules="" tenant_vhosts=""
  local shapes=${SHAPES:-0} any="" v6=0 shapes_modules="" shapes_vhosts="" shapes_proxy=""
  local vhosts=${VHOSTS:-0} many_vhosts="" i
  printf 'HTTPS_PORT=%s\nOCSP_PORT=%s\n' "$public" "$ocsp" >"$dir/lab.env"
  case "$front" in
    "") ;;
    nginx) front_config ;; # sets https to APACHE_SSL_PORT; adds FRONT and APACHE_SSL_PORT to lab.env
    *) echo "lab: FRONT is nginx or unset" >&2; exit 2 ;;
  esac
  if [ "$tenants" = 1 ]; then
    tenant_config # sets dead, tenant_modules, tenant_vhosts; adds DEAD_OCSP_PORT to lab.env
  fi
  if [ "$shapes" = 1 ]; then
    shapes_config # sets any, v6, shapes_*; adds ANY_PORT and IPV6 to lab.env
  fi
  mkdir -p "$dir/etc/cpanel/ea4" "$dir/etc/apache2/conf" "$dir/etc/apache2/conf.d/includes" \
    "$dir/etc/apache2/ssl" "$dir/etc/apache2/run" "$dir/var/log/apache2" "$dir/usr/sbin" \
    "$dir/usr/local/cpanel/scripts" "$dir/var/cpanel/mgmt_queue" "$dir/ca" "$dir/run"
  : >"$dir/etc/cpanel/ea4/is_ea4"
  cat >"$dir/etc/cpanel/ea4/paths.conf" <<'EOF'
dir_base = /etc/apache2
dir_conf = /etc/apache2/conf.d
dir_conf_includes = /etc/apache2/conf.d/includes
file_conf = /etc/apache2/conf/httpd.conf
file_error_log = /etc/apache2/logs/error_log
bin_httpd = /usr/sbin/httpd
bin_apachectl = /usr/sbin/apachectl
dir_run = /etc/apache2/run
EOF
  ln -sfn ../../var/log/apache2 "$dir/etc/apache2/logs"

  # The CA, an OCSP-enabled server certificate, and a Must-Staple one (TLS Feature
  # status_request), each in a cPanel-style combined file: certificate, key, CA bundle.
  (
    cd "$dir/ca"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
      -subj "/CN=stapling-agent lab CA" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    : >index.txt
    # leaf FILE SERIAL EXTRA-EXTENSIONS [OCSP-PORT, default the lab's responder; "none": no
    # OCSP URL] [NAMES, default FILE: the DNS SANs, space-separated, the first also the CN]
    leaf() {
      local names=${5:-$1} aia="" san="" n
      if [ "${4:-}" != none ]; then aia="authorityInfoAccess=OCSP;URI:http://127.0.0.1:${4:-$ocsp}/"; fi
      for n in $names; do san+="DNS:$n,"; done
      local name=${names%% *}
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$name" 2>/dev/null
      printf 'subjectAltName=%sIP:127.0.0.1\n%s\nextendedKeyUsage=serverAuth\n%s\n' \
        "$san" "$aia" "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -set_serial "0x$2" -days 20 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      local end
      end=$(date -u -d "$(openssl x509 -in "$1.crt" -noout -enddate | cut -d= -f2)" +%y%m%d%H%M%SZ)
      printf 'V\t%s\t\t%s\tunknown\t/CN=%s\n' "$end" "$(echo "$2" | tr a-f A-F)" "$name" >>index.txt
      cat "$1.crt" "$1.key" ca.crt >"$dir/etc/apache2/ssl/$1.combined"
    }
    leaf shop.test 5a01 ""
    leaf mustaple.test 5a02 "tlsfeature=status_request"
    if [ "$tenants" = 1 ]; then
      leaf alice.test 5a03 ""
      leaf mallory.test 5a04 "" "$dead"
    fi
    if [ "$shapes" = 1 ]; then
      leaf v6.test 5a05 ""
      leaf _wildcard_.wild.test 5a06 "" "" "*.wild.test"
      leaf noocsp.test 5a07 "" none
      leaf host.test 5a08 "" none
      leaf any.test 5a09 ""
      leaf star.test 5a0a "" "" "star.test *.star.test"
    fi
    if [ "$vhosts" -gt 0 ]; then
      # One process a certificate: `req -x509 -CA` (OpenSSL 3.0) signs with the lab CA, and
      # a config of its own keeps req's default v3_ca extensions (CA:TRUE) off the leaves.
      openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out many.key 2>/dev/null
      printf '[req]\ndistinguished_name=dn\n[dn]\n' >many.cnf
      local n serial end=""
      for i in $(seq "$vhosts"); do
        n=site$i.test serial=$(printf '6%05X' "$i")
        openssl req -config many.cnf -new -key many.key -subj "/CN=$n" -x509 -CA ca.crt -CAkey ca.key \
          -set_serial "0x$serial" -days 20 -addext "subjectAltName=DNS:$n" \
          -addext "authorityInfoAccess=OCSP;URI:http://127.0.0.1:$ocsp/" \
          -addext "extendedKeyUsage=serverAuth" -out "$n.crt" 2>/dev/null
        [ -n "$end" ] || end=$(date -u -d "$(openssl x509 -in "$n.crt" -noout -enddate | cut -d= -f2)" +%y%m%d%H%M%SZ)
        printf 'V\t%s\t\t%s\tunknown\t/CN=%s\n' "$end" "$serial" "$n" >>index.txt
        cat "$n.crt" many.key ca.crt >"$dir/etc/apache2/ssl/$n.combined"
      done
    fi
  )
  for i in $(seq "$vhosts"); do
    many_vhosts+="
<VirtualHost 127.0.0.1:$https>
    ServerName site$i.test
    DocumentRoot htdocs
    <IfModule ssl_module>
        SSLEngine on
        SSLCertificateFile ssl/site$i.test.combined
    </IfModule>
    IncludeOptional \"conf.d/userdata/ssl/2_4/site$i/site$i.test/*.conf\"
</VirtualHost>"
  done

  # EA4 loads its modules from conf.modules.d, one file per package (ea-apache24-mod_ssl ...).
  mkdir -p "$dir/etc/apache2/conf.modules.d"
  local m
  for m in mpm_prefork authz_core socache_shmcb ssl; do
    printf 'LoadModule %s_module /usr/lib/apache2/modules/mod_%s.so\n' "$m" "$m" >"$dir/etc/apache2/conf.modules.d/000_mod_$m.conf"
  done
  if [ -n "$shapes_modules" ]; then
    printf '%s\n' "${shapes_modules#$'\n'}" >"$dir/etc/apache2/conf.modules.d/000_mod_info.conf"
  fi
  cat >"$dir/etc/apache2/conf/httpd.conf" <<EOF
# cPanel EA4 layout, ServerRoot-relative (stapling-agent lab). Started as apache2 -d ROOT/etc/apache2.
# The order is the EA4 template's (FACTS.md section 4): modules, pre_main, the global SSL block
# (stapling inside <IfModule socache_shmcb_module>, as WHM's setting is written), conf.d, the
# pre-VirtualHost include, the vhosts (each with cPanel's userdata include), post_virtualhost.
Include conf.modules.d/*.conf${tenant_modules}
User www-data
Group www-data
DefaultRuntimeDir run
PidFile run/httpd.pid
Mutex file:run default
ErrorLog logs/error_log
LogLevel warn
ServerName localhost
Listen 127.0.0.1:$https
StartServers 2
MinSpareServers 1
MaxSpareServers 3
Include conf.d/includes/pre_main_global.conf

<IfModule ssl_module>
    <IfModule socache_shmcb_module>
        SSLUseStapling On
        SSLStaplingCache shmcb:stapling_cache_shmcb(${STAPLING_CACHE:-256000})
    </IfModule>
    SSLStaplingReturnResponderErrors off
    SSLStaplingErrorCacheTimeout 60
    SSLStaplingFakeTryLater off
    SSLStaplingResponderTimeout 3
    SSLProtocol -all +TLSv1.2 +TLSv1.3
    SSLSessionCache none
</IfModule>

IncludeOptional conf.d/*.conf
Include conf.d/includes/pre_virtualhost_global.conf

<VirtualHost 127.0.0.1:$https>
    ServerName shop.test
    DocumentRoot htdocs
    <IfModule ssl_module>
        SSLEngine on
        SSLCertificateFile ssl/shop.test.combined
    </IfModule>
    IncludeOptional "conf.d/userdata/ssl/2_4/shop/shop.test/*.conf"
</VirtualHost>
${many_vhosts}${shapes_vhosts}${tenant_vhosts}${shapes_proxy}
Include conf.d/includes/post_virtualhost_global.conf
EOF
  rm -f "$dir/etc/apache2/conf.d/mustaple.conf"
  if [ "${MUSTSTAPLE:-0}" = 1 ]; then
    cat >"$dir/etc/apache2/conf.d/mustaple.conf" <<EOF
<VirtualHost 127.0.0.1:$https>
    ServerName mustaple.test
    DocumentRoot htdocs
    <IfModule ssl_module>
        SSLEngine on
        SSLCertificateFile ssl/mustaple.test.combined
    </IfModule>
</VirtualHost>
EOF
  fi
  mkdir -p "$dir/etc/apache2/htdocs"
  echo ok >"$dir/etc/apache2/htdocs/index.html"
  : >"$dir/etc/apache2/conf.d/includes/pre_main_global.conf"
  : >"$dir/etc/apache2/conf.d/includes/post_virtualhost_global.conf"
  printf '# Pre VirtualHost Include (All Versions)\nKeepAliveTimeout 5\n' >"$dir/etc/apache2/conf.d/includes/pre_virtualhost_global.conf"

  cat >"$dir/usr/sbin/apachectl" <<EOF
#!/bin/sh
# Stand-in for EA4's apachectl: the real apache2 on this tree's config.
exec /usr/sbin/apache2 -d "$dir/etc/apache2" -f conf/httpd.conf "\$@"
EOF
  cp "$dir/usr/sbin/apachectl" "$dir/usr/sbin/httpd"
  cat >"$dir/usr/local/cpanel/scripts/restartsrv_httpd" <<EOF
#!/bin/bash
# Stand-in for cPanel's restartsrv_httpd (see lab.sh).
dir="$dir"
echo "restartsrv_httpd \$*" >>"\$dir/var/log/restarts.log"
ctl() { /usr/sbin/apache2 -d "\$dir/etc/apache2" -f conf/httpd.conf "\$@"; }
if [ -e "\$dir/var/cpanel/mgmt_queue/apache_update_no_restart" ]; then
  echo "httpd restarts are blocked while Apache is being updated" >&2; exit 1
fi
if [ -e "\$dir/fail-next-restart" ]; then
  rm -f "\$dir/fail-next-restart"; echo "httpd restart timed out" >&2; exit 1
fi
running() { [ -f "\$dir/etc/apache2/run/httpd.pid" ] && kill -0 "\$(cat "\$dir/etc/apache2/run/httpd.pid")" 2>/dev/null; }
serving() { (exec 3<>"/dev/tcp/127.0.0.1/$https") 2>/dev/null; }
# Up and serving, and still up a moment later (a bad graceful restart kills the parent).
healthy() {
  for _ in \$(seq 60); do
    if running && serving; then sleep 0.3; running && serving && return 0; fi
    sleep 0.1
  done
  return 1
}
case "\${1:-}" in
  --stop) ctl -k stop; exit 0 ;;
  --status) running && echo "httpd is running" && exit 0; echo "httpd is not running" >&2; exit 1 ;;
esac
if running; then
  gen=\$(stat -c %Y "\$dir/etc/apache2/run/httpd.pid")
  ctl -k graceful 2>&1 && healthy && { echo "httpd restarted successfully."; exit 0; }
  echo "graceful restart failed; trying a hard restart" >&2
  ctl -k stop >/dev/null 2>&1; sleep 0.5
fi
ctl -k start 2>&1 && healthy && { echo "httpd started successfully."; exit 0; }
echo "httpd has failed, please check the logs: \$dir/var/log/apache2/error_log" >&2
tail -n 5 "\$dir/var/log/apache2/error_log" >&2 2>/dev/null
exit 1
EOF
  printf '#!/bin/sh\necho "Built /etc/apache2/conf/httpd.conf OK (lab stand-in: nothing to do)"\n' \
    >"$dir/usr/local/cpanel/scripts/rebuildhttpdconf"
  chmod 0755 "$dir/usr/sbin/apachectl" "$dir/usr/sbin/httpd" "$dir/usr/local/cpanel/scripts/"*
  chmod -R a+rX "$dir/etc/apache2/htdocs"
  if [ "$tenants" = 1 ]; then
    tenant_files
  fi
  if [ "$front" = nginx ]; then
    front_files
  fi
}

case "$cmd" in
  up)
    build
    responder_start
    "$dir/usr/local/cpanel/scripts/restartsrv_httpd" >/dev/null
    if [ "${FRONT:-}" = nginx ]; then
      front_start
    fi
    . "$dir/lab.env"
    echo "lab up in $dir: https://127.0.0.1:$HTTPS_PORT (shop.test; mustaple.test with MUSTSTAPLE=1), OCSP responder 127.0.0.1:$OCSP_PORT"
    if [ "${FRONT:-}" = nginx ]; then
      echo "front: nginx on 127.0.0.1:$HTTPS_PORT (error log $dir/var/log/nginx/error.log), Apache moved to 127.0.0.1:$APACHE_SSL_PORT"
    fi
    if [ "${SHAPES:-0}" = 1 ]; then
      six="v6.test on [::1] and 127.0.0.1"
      [ "$IPV6" = 1 ] || six="v6.test left out (no IPv6)"
      echo "shapes: $six, _wildcard_.wild.test (*.wild.test), noocsp.test and host.test (cPanel's SSLUseStapling off), any.test and star.test (*.star.test) on *:$ANY_PORT"
    fi
    if [ "${VHOSTS:-0}" -gt 0 ]; then
      echo "vhosts: site1.test .. site$VHOSTS.test on 127.0.0.1:$HTTPS_PORT"
    fi
    if [ "${TENANTS:-0}" = 1 ]; then
      echo "tenants: alice.test, mallory.test (OCSP URL 127.0.0.1:$DEAD_OCSP_PORT, nothing listens; forge.php, cgi-bin/forge.cgi)"
    fi
    ;;
  down)
    # Stop Apache by its pid, not with `apache2 -k stop`: that parses the config first and
    # does nothing when a test left a broken directive in it. TERM, then KILL after 10 s, for
    # every process of this tree (the parent and its children); fail loudly if any survives.
    rc=0
    front_stop || rc=1
    pids=$(apache_pids)
    if [ -n "$pids" ]; then
      # shellcheck disable=SC2086
      kill -TERM $pids 2>/dev/null || true
      for _ in $(seq 100); do
        [ -z "$(apache_pids)" ] && break
        sleep 0.1
      done
      if [ -n "$(apache_pids)" ]; then
        # shellcheck disable=SC2046
        kill -KILL $(apache_pids) 2>/dev/null || true
        sleep 0.5
      fi
      if [ -n "$(apache_pids)" ]; then
        echo "lab: Apache of $dir still running after SIGKILL: $(apache_pids)" >&2
        rc=1
      fi
    fi
    rm -f "$dir/etc/apache2/run/httpd.pid"
    rm -rf "$(cgid_sock_dir)"
    responder_stop || rc=1
    exit $rc
    ;;
  responder)
    case "$action" in
      start) responder_start ;;
      stop) responder_stop ;;
      *) echo "usage: lab.sh responder start|stop DIR" >&2; exit 2 ;;
    esac
    ;;
  nginx)
    case "$action" in
      reload) front_reload ;;
      *) echo "usage: lab.sh nginx reload DIR" >&2; exit 2 ;;
    esac
    ;;
  handshake)
    . "$dir/lab.env"
    echo | openssl s_client -connect "127.0.0.1:$HTTPS_PORT" -servername "${3:-shop.test}" -status 2>/dev/null |
      grep -E "OCSP Response Status|Cert Status|OCSP response: no response sent" || true
    ;;
  *) echo "usage: lab.sh up|down|responder|nginx|handshake DIR" >&2; exit 2 ;;
esac
