#!/usr/bin/env bash
# systemd-bed.sh: a booted systemd for the tests (issue 14). A Debian 12 root file system built
# with debootstrap from Debian's packages, booted with systemd-nspawn (systemd as PID 1, a
# private network), laid out as a cPanel EA4 host, with stapling-agent installed from the
# project's own .deb by dpkg, so the real unit files and maintainer scripts run under a live
# manager.
#
#   scripts/systemd-bed.sh build          build the cached root file system (only when missing
#                                         or when BED_STAMP below changed)
#   scripts/systemd-bed.sh up DIR         copy-on-write DIR/root over the cache, lay out the
#                                         host, boot it, install the package; prints timings
#   scripts/systemd-bed.sh exec DIR CMD...  run CMD inside the booted host (all its namespaces,
#                                         a clean environment): exit code, stdout and stderr
#                                         come back
#   scripts/systemd-bed.sh down DIR       power off, stop nspawn, unmount; fails loudly if a
#                                         process or the mount survives
#
# Needs root, debootstrap, systemd-nspawn (Debian: systemd-container) and nsenter; the host
# needs no systemd of its own (--register=no --keep-unit: nothing asks the host's manager).
#
# The cache lives outside the repository: BED_CACHE, default
# ${XDG_CACHE_HOME:-$HOME/.cache}/stapling-agent/bookworm-rootfs (the root file system; its
# stamp is BED_CACHE/etc/stapling-bed-stamp). `up` never writes into it: DIR/root is an overlay
# (lower: the cache, upper: DIR/upper), or, where overlayfs cannot be mounted, a copy
# (cp -a --reflink=auto; BED_OVERLAY=0 forces it). BED_MIRROR picks the Debian mirror (default
# deb.debian.org).
#
# The package: BED_DEB=path/to/stapling-agent_*.deb, else `up` builds one with
# `scripts/package.sh deb` into DIR/dist.
#
# Per host (the fleet test boots ten of them):
#   BED_LAYOUT=ea4|ea3|none  cPanel EA4 (default), EasyApache 3 (/usr/local/apache), or no
#                         cPanel at all (Apache still runs)
#   BED_MUSTSTAPLE=1      shop.test's certificate demands a staple
#   BED_BRIDGE, BED_ADDR  a veth on that bridge (it must exist in the caller's network
#                         namespace) with BED_ADDR (address/prefix) instead of a private network
#   BED_SSH_KEY           a public key root logs in with (sshd runs in every host)
#   BED_NAME              the hostname
#
# Inside, after `up` (FACTS.md sections 5 and 8; the lab's shapes, at the real paths):
#   /etc/cpanel/ea4/is_ea4, paths.conf; /etc/apache2/conf/httpd.conf (cPanel's global SSL
#   block, the pre-VirtualHost include, one SSL vhost shop.test on 127.0.0.1:443);
#   /etc/apache2/logs -> /var/log/apache2 (error_log)
#   /usr/sbin/apachectl, /usr/sbin/httpd   Debian's apache2 on that config; httpd first sleeps
#                         the seconds in /etc/stapling-bed/httpd-delay (a hung httpd for the
#                         audit's timeout)
#   /var/lib/node_exporter/textfile_collector  the audit timer's metrics go there
#   httpd.service         as cPanel's: Type=forking, PIDFile, started and reloaded by apachectl;
#                         Debian's apache2.service is masked
#   /usr/local/cpanel/scripts/restartsrv_httpd  as cPanel's under systemd: `systemctl restart
#                         httpd`, then checks Apache serves; exit 1 when it does not. Knob:
#                         /etc/stapling-bed/restart-delay (seconds to sleep first: a slow
#                         restart, for the watchdog test). Each call is appended to
#                         /var/log/restarts.log with its cgroup and NoNewPrivs.
#   /usr/local/cpanel/scripts/rebuildhttpdconf  does nothing (httpd.conf has every include)
#   ocsp-responder.service  `openssl ocsp` for the bed's CA on 127.0.0.1:8080 (enabled)
#   ocsp-blackhole.socket   listens on 8080 and never answers (Conflicts= the responder): a
#                         black-holed responder, every staple attempt waits the timeout (3 s)
#   /etc/stapling-bed/ca/ca.crt  the CA a client verifies shop.test with
#   stapling-agent        installed by `dpkg -i` after boot: disabled, dry-run, as shipped
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

# Bump when the package list or the cached layout changes: `build` then rebuilds.
BED_STAMP="bookworm minbase 2: systemd systemd-sysv dbus apache2 openssl procps openssh-server python3 python3-apt"
# openssh-server and python3 (python3-apt for Ansible's apt module): the fleet test drives
# booted hosts with Ansible over SSH.
BED_PACKAGES=systemd,systemd-sysv,dbus,apache2,openssl,procps,openssh-server,python3,python3-apt
cache=${BED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stapling-agent/bookworm-rootfs}
mirror=${BED_MIRROR:-http://deb.debian.org/debian}

die() { echo "systemd-bed: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

need_tools() {
  [ "$(id -u)" = 0 ] || die "needs root"
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null || die "$t missing (apt-get install debootstrap systemd-container util-linux)"
  done
}

build() {
  need_tools debootstrap
  if [ -f "$cache/etc/stapling-bed-stamp" ] && [ "$(cat "$cache/etc/stapling-bed-stamp")" = "$BED_STAMP" ]; then
    echo "systemd-bed: cached root file system $cache is current"
    return 0
  fi
  local start tmp
  start=$(now)
  mkdir -p "$(dirname "$cache")"
  tmp="$cache.new.$$"
  rm -rf "$tmp"
  echo "systemd-bed: building $cache (debootstrap bookworm from $mirror)" >&2
  if ! debootstrap --variant=minbase --include="$BED_PACKAGES" bookworm "$tmp" "$mirror" >"$tmp.log" 2>&1; then
    tail -n 20 "$tmp.log" >&2
    rm -rf "$tmp"
    die "debootstrap failed (log $tmp.log)"
  fi
  rm -f "$tmp.log"
  # What every boot needs and never changes: Debian's own Apache units masked (httpd.service
  # takes their place, as on cPanel), no login prompts, apt caches emptied.
  local u
  for u in apache2.service apache-htcacheclean.service getty@.service console-getty.service \
    systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer; do
    ln -sfn /dev/null "$tmp/etc/systemd/system/$u"
  done
  echo stapling-bed >"$tmp/etc/hostname"
  # No SSH host keys in the shared image: `up` makes each host its own.
  rm -f "$tmp/etc/ssh/ssh_host_"*
  rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"*
  # An empty machine-id: systemd makes up one at every boot (each bed its own).
  : >"$tmp/etc/machine-id"
  printf '%s\n' "$BED_STAMP" >"$tmp/etc/stapling-bed-stamp"
  rm -rf "$cache"
  mv "$tmp" "$cache"
  echo "systemd-bed: built $cache in $(since "$start")"
}

# leader DIR: the pid, on this machine, of the container's PID 1 (recorded by up).
leader() {
  local pid
  pid=$(cat "$1/leader.pid" 2>/dev/null) || die "$1 is not up (no leader.pid)"
  [ -d "/proc/$pid" ] || die "$1: the container's PID 1 ($pid) is gone"
  echo "$pid"
}

# find_leader NSPAWN-PID: the descendant of nspawn that is PID 1 in its own pid namespace.
find_leader() {
  local p
  for p in $(descendants "$1"); do
    if awk '/^NSpid:/ { exit !($NF == 1 && NF > 2) }' "/proc/$p/status" 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# descendants PID: every live process below PID.
descendants() {
  local kids k
  kids=$(cat /proc/[0-9]*/stat 2>/dev/null | awk -v p="$1" '{ pid = $1; sub(/.*\) /, ""); if ($2 == p) print pid }')
  for k in $kids; do
    echo "$k"
    descendants "$k"
  done
}

# inside DIR CMD...: run CMD in every namespace of the container, with a clean environment
# (the caller's TMPDIR and test marks mean nothing in there), from /.
inside() {
  local dir=$1
  shift
  local pid
  pid=$(leader "$dir")
  exec nsenter --target "$pid" --all --root --wd -- /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}

run_inside() { ( inside "$@" ); }

# cgroup_make DIR: a cgroup of the bed's own in each hierarchy systemd uses (name=systemd and
# the unified one; whichever this host mounts), below the one this script runs in; their paths
# go to DIR/cgroups. nspawn --keep-unit runs the container in the cgroup it is started in, and
# the container's systemd names its units' cgroups from there: with every bed in the same
# cgroup, ten booting at once create and remove each other's system.slice/X.service and a unit
# now and then fails to start (status 219/CGROUP).
cgroup_make() {
  local dir=$1 mnt rel base
  : >"$dir/cgroups"
  while read -r mnt rel; do
    base="$mnt$rel/stapling-bed-$$-$(basename "$dir")"
    mkdir "$base" 2>/dev/null && echo "$base" >>"$dir/cgroups"
  done < <(awk -F: 'NR == FNR { if ($1 == 0) v2 = $3; else if ($2 == "name=systemd") v1 = $3; next }
    $3 == "cgroup2" && v2 != "" { print $2, (v2 == "/" ? "" : v2) }
    $3 == "cgroup" && $4 ~ /(^|,)name=systemd(,|$)/ && v1 != "" { print $2, (v1 == "/" ? "" : v1) }' \
    FS=: /proc/self/cgroup FS=' ' /proc/self/mounts)
  [ -s "$dir/cgroups" ] || echo "systemd-bed: no cgroup of its own for $dir (beds booting at once may collide)" >&2
}

# cgroup_enter DIR: move this (sub)shell into DIR's cgroups.
cgroup_enter() {
  local cg
  while read -r cg; do
    echo "$BASHPID" >"$cg/cgroup.procs" || echo "systemd-bed: could not enter $cg" >&2
  done <"$1/cgroups"
}

# cgroup_remove DIR: remove DIR's cgroups, deepest first (the container's systemd leaves some).
cgroup_remove() {
  local cg rc=0
  [ -f "$1/cgroups" ] || return 0
  while read -r cg; do
    [ -d "$cg" ] || continue
    find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
    if [ -d "$cg" ]; then
      echo "systemd-bed: cgroup $cg survives" >&2
      rc=1
    fi
  done <"$1/cgroups"
  [ $rc -ne 0 ] || rm -f "$1/cgroups"
  return $rc
}

# procs_in ROOT: live processes whose root directory is ROOT (the container's, from here).
procs_in() {
  local p r
  for p in /proc/[0-9]*; do
    r=$(readlink "$p/root" 2>/dev/null) || continue
    [ "$r" = "$1" ] && echo "${p#/proc/}"
  done
  return 0
}

# layout ROOT: the EA4 host and the bed's units, written before boot.
layout() {
  local root=$1 ocsp=8080 https=443
  mkdir -p "$root/etc/cpanel/ea4" "$root/etc/apache2/conf" "$root/etc/apache2/conf.d/includes" \
    "$root/etc/apache2/conf.modules.d" "$root/etc/apache2/ssl" "$root/etc/apache2/run" \
    "$root/etc/apache2/htdocs" "$root/usr/local/cpanel/scripts" "$root/var/cpanel/mgmt_queue" \
    "$root/etc/stapling-bed/ca"
  : >"$root/etc/cpanel/ea4/is_ea4"
  cat >"$root/etc/cpanel/ea4/paths.conf" <<'EOF'
dir_base = /etc/apache2
dir_conf = /etc/apache2/conf.d
dir_conf_includes = /etc/apache2/conf.d/includes
file_conf = /etc/apache2/conf/httpd.conf
file_error_log = /etc/apache2/logs/error_log
bin_httpd = /usr/sbin/httpd
bin_apachectl = /usr/sbin/apachectl
dir_run = /etc/apache2/run
EOF
  ln -sfn /var/log/apache2 "$root/etc/apache2/logs"

  # The CA and shop.test's certificate (OCSP URL: the responder), as lab.sh makes them; made
  # with this machine's openssl, before boot.
  (
    cd "$root/etc/stapling-bed/ca"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
      -subj "/CN=stapling-agent bed CA" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout shop.key -out shop.csr -subj "/CN=shop.test" 2>/dev/null
    printf 'subjectAltName=DNS:shop.test,IP:127.0.0.1\nauthorityInfoAccess=OCSP;URI:http://127.0.0.1:%s/\nextendedKeyUsage=serverAuth\n' \
      "$ocsp" >shop.ext
    # BED_MUSTSTAPLE=1: the certificate demands a staple (TLS Feature status_request).
    if [ "${BED_MUSTSTAPLE:-0}" = 1 ]; then echo "tlsfeature=status_request" >>shop.ext; fi
    openssl x509 -req -in shop.csr -CA ca.crt -CAkey ca.key -set_serial 0x5a01 -days 20 \
      -extfile shop.ext -out shop.crt 2>/dev/null
    local end
    end=$(date -u -d "$(openssl x509 -in shop.crt -noout -enddate | cut -d= -f2)" +%y%m%d%H%M%SZ)
    printf 'V\t%s\t\t5A01\tunknown\t/CN=shop.test\n' "$end" >index.txt
    cat shop.crt shop.key ca.crt >"$root/etc/apache2/ssl/shop.test.combined"
    chmod 0600 "$root/etc/apache2/ssl/shop.test.combined"
  )

  local m
  for m in mpm_prefork authz_core socache_shmcb ssl; do
    printf 'LoadModule %s_module /usr/lib/apache2/modules/mod_%s.so\n' "$m" "$m" >"$root/etc/apache2/conf.modules.d/000_mod_$m.conf"
  done
  cat >"$root/etc/apache2/conf/httpd.conf" <<EOF
# cPanel EA4 layout (stapling-agent systemd bed; scripts/lab.sh has the same shapes).
ServerRoot /etc/apache2
Include conf.modules.d/*.conf
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
        SSLStaplingCache shmcb:stapling_cache_shmcb(256000)
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

Include conf.d/includes/post_virtualhost_global.conf
EOF
  echo ok >"$root/etc/apache2/htdocs/index.html"
  : >"$root/etc/apache2/conf.d/includes/pre_main_global.conf"
  : >"$root/etc/apache2/conf.d/includes/post_virtualhost_global.conf"
  printf '# Pre VirtualHost Include (All Versions)\nKeepAliveTimeout 5\n' >"$root/etc/apache2/conf.d/includes/pre_virtualhost_global.conf"

  # EA4's apachectl and httpd, as Debian's apache2 on this config (replacing Debian's
  # apachectl, which reads apache2.conf).
  printf '#!/bin/sh\n# Stand-in for EA4'"'"'s apachectl (systemd bed).\nexec /usr/sbin/apache2 -d /etc/apache2 -f conf/httpd.conf "$@"\n' \
    >"$root/usr/sbin/apachectl"
  # httpd, asked by the audit (-v, -l, -M, -S): the knob /etc/stapling-bed/httpd-delay makes it
  # hang first (the audit timer's timeout test).
  cat >"$root/usr/sbin/httpd" <<'EOF2'
#!/bin/sh
# Stand-in for EA4's httpd (systemd bed).
sleep "$(cat /etc/stapling-bed/httpd-delay 2>/dev/null || echo 0)"
exec /usr/sbin/apache2 -d /etc/apache2 -f conf/httpd.conf "$@"
EOF2
  # node_exporter's textfile directory, where the audit timer writes its metrics.
  mkdir -p "$root/var/lib/node_exporter/textfile_collector"

  cat >"$root/usr/local/cpanel/scripts/restartsrv_httpd" <<EOF
#!/bin/bash
# Stand-in for cPanel's restartsrv_httpd under systemd: the restart goes through the manager
# (systemctl restart httpd), then it checks that Apache serves; exit 1 when it does not.
{
  echo "restartsrv_httpd \$* cgroup=\$(cut -d: -f3 /proc/self/cgroup | sort -u | tr '\n' ' ')\$(grep NoNewPrivs /proc/self/status | tr -d '\t')"
} >>/var/log/restarts.log
if [ -e /var/cpanel/mgmt_queue/apache_update_no_restart ]; then
  echo "httpd restarts are blocked while Apache is being updated" >&2; exit 1
fi
delay=\$(cat /etc/stapling-bed/restart-delay 2>/dev/null || echo 0)
sleep "\$delay"
case "\${1:-}" in
  --stop) systemctl stop httpd.service; exit ;;
  --status) systemctl is-active --quiet httpd.service && echo "httpd is running" && exit 0
    echo "httpd is not running" >&2; exit 1 ;;
esac
serving() { (exec 3<>/dev/tcp/127.0.0.1/$https) 2>/dev/null; }
if systemctl restart httpd.service; then
  for _ in \$(seq 50); do
    if serving; then echo "httpd restarted successfully."; exit 0; fi
    sleep 0.1
  done
fi
echo "httpd has failed, please check the logs: /etc/apache2/logs/error_log" >&2
systemctl --no-pager status httpd.service >&2
exit 1
EOF
  printf '#!/bin/sh\necho "Built /etc/apache2/conf/httpd.conf OK (bed stand-in: nothing to do)"\n' \
    >"$root/usr/local/cpanel/scripts/rebuildhttpdconf"
  mkdir -p "$root/usr/local/sbin"
  cat >"$root/usr/local/sbin/bed-listening" <<'EOF'
#!/bin/sh
# bed-listening PORT: wait up to 10 s for a socket listening on PORT (from /proc/net/tcp).
hex=$(printf '%04X' "$1")
for _ in $(seq 100); do
  awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null && exit 0
  sleep 0.1
done
echo "nothing listens on port $1" >&2
exit 1
EOF
  chmod 0755 "$root/usr/sbin/apachectl" "$root/usr/sbin/httpd" "$root/usr/local/cpanel/scripts/"* \
    "$root/usr/local/sbin/bed-listening"

  local sd=$root/etc/systemd/system
  # cPanel's httpd.service (ea-apache24) is Type=forking with a PIDFile; its Exec lines go
  # through restartsrv_httpd, which under systemd hands the work to apachectl. Here apachectl
  # directly: the stand-in's `systemctl restart httpd` would otherwise call itself.
  cat >"$sd/httpd.service" <<'EOF'
[Unit]
Description=Apache web server managed by cPanel EasyApache (stapling-agent bed)
After=network.target remote-fs.target nss-lookup.target ocsp-responder.service

[Service]
Type=forking
PIDFile=/etc/apache2/run/httpd.pid
ExecStart=/usr/sbin/apachectl -k start
ExecReload=/usr/sbin/apachectl -k graceful
ExecStop=/usr/sbin/apachectl -k stop
PrivateTmp=false

[Install]
WantedBy=multi-user.target
EOF
  cat >"$sd/ocsp-responder.service" <<EOF
[Unit]
Description=openssl ocsp responder for the bed's CA
Conflicts=ocsp-blackhole.socket ocsp-blackhole.service

[Service]
ExecStart=/usr/bin/openssl ocsp -index /etc/stapling-bed/ca/index.txt -port $ocsp -rsigner /etc/stapling-bed/ca/ca.crt -rkey /etc/stapling-bed/ca/ca.key -CA /etc/stapling-bed/ca/ca.crt -nmin 60 -ignore_err
# Ready once it listens (read from /proc, not by connecting: OpenSSL 3.0's ocsp server spins
# forever on a connection closed before it sends a request; see lab.sh).
ExecStartPost=/usr/local/sbin/bed-listening $ocsp

[Install]
WantedBy=multi-user.target
EOF
  cat >"$sd/ocsp-blackhole.socket" <<EOF
[Unit]
Description=a black-holed OCSP responder: accepts connections, never answers
Conflicts=ocsp-responder.service
# Ordered, so the responder has let go of the port before this binds it.
After=ocsp-responder.service

[Socket]
ListenStream=127.0.0.1:$ocsp
EOF
  cat >"$sd/ocsp-blackhole.service" <<'EOF'
[Unit]
Description=a black-holed OCSP responder (never reads its socket)
Conflicts=ocsp-responder.service
# Ordered, so the responder has let go of the port before this binds it.
After=ocsp-responder.service

[Service]
ExecStart=/bin/sleep infinity
EOF
  # nspawn mounts the root; remounting it per /etc/fstab does nothing here, and failed now and
  # then with ten hosts booting at once (the fleet test): a degraded boot.
  ln -sfn /dev/null "$sd/systemd-remount-fs.service"
  mkdir -p "$sd/multi-user.target.wants"
  ln -sfn ../httpd.service "$sd/multi-user.target.wants/httpd.service"
  ln -sfn ../ocsp-responder.service "$sd/multi-user.target.wants/ocsp-responder.service"
}

# ea3 ROOT: turn the EA4 layout into EasyApache 3's: everything under /usr/local/apache
# (conf/httpd.conf, conf/includes/, bin/httpd, bin/apachectl, logs/), no /etc/cpanel/ea4.
ea3() {
  local root=$1 a=$1/usr/local/apache
  mkdir -p "$a/bin"
  local d
  for d in conf conf.d conf.modules.d ssl run htdocs; do mv "$root/etc/apache2/$d" "$a/$d"; done
  mv "$a/conf.d/includes" "$a/conf/includes"
  rm -f "$root/etc/apache2/logs"
  ln -sfn /var/log/apache2 "$a/logs"
  rm -rf "$root/etc/cpanel/ea4"
  sed -i -e 's|^ServerRoot /etc/apache2|ServerRoot /usr/local/apache|' -e 's|conf\.d/includes/|conf/includes/|g' \
    -e 's|conf\.d/userdata/|conf/userdata/|g' -e 's|EA4 layout|EA3 layout|' "$a/conf/httpd.conf"
  printf '#!/bin/sh\n# Stand-in for EA3'"'"'s apachectl (systemd bed).\nexec /usr/sbin/apache2 -d /usr/local/apache -f conf/httpd.conf "$@"\n' \
    >"$a/bin/apachectl"
  sed -e 's|-d /etc/apache2|-d /usr/local/apache|' -e 's|EA4|EA3|' "$root/usr/sbin/httpd" >"$a/bin/httpd"
  rm -f "$root/usr/sbin/httpd" "$root/usr/sbin/apachectl"
  chmod 0755 "$a/bin/apachectl" "$a/bin/httpd"
  sed -i -e 's|/etc/apache2/run/httpd.pid|/usr/local/apache/run/httpd.pid|' \
    -e 's|/usr/sbin/apachectl|/usr/local/apache/bin/apachectl|g' -e 's|EasyApache|EasyApache 3|' \
    "$root/etc/systemd/system/httpd.service"
  sed -i 's|/etc/apache2/logs/error_log|/usr/local/apache/logs/error_log|' "$root/usr/local/cpanel/scripts/restartsrv_httpd"
}

# remote_access ROOT: the host's own SSH host keys (the image has none); with BED_SSH_KEY (a
# public key file) root may log in with it; with BED_BRIDGE and BED_ADDR (an address/prefix)
# the host's interface host0 gets BED_ADDR from systemd-networkd.
remote_access() {
  local root=$1
  ssh-keygen -q -A -f "$root"
  if [ -n "${BED_SSH_KEY:-}" ]; then
    install -d -m 0700 "$root/root/.ssh"
    install -m 0600 "$BED_SSH_KEY" "$root/root/.ssh/authorized_keys"
  fi
  if [ -n "${BED_BRIDGE:-}" ]; then
    [ -n "${BED_ADDR:-}" ] || die "BED_BRIDGE needs BED_ADDR (address/prefix)"
    mkdir -p "$root/etc/systemd/network"
    printf '[Match]\nName=host0\n\n[Network]\nAddress=%s\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n' \
      "$BED_ADDR" >"$root/etc/systemd/network/80-bed.network"
    systemctl --root="$root" --quiet enable systemd-networkd.service 2>/dev/null
  fi
  if [ -n "${BED_NAME:-}" ]; then echo "$BED_NAME" >"$root/etc/hostname"; fi
}

up() {
  local dir=$1 t0 t
  need_tools systemd-nspawn nsenter
  [ -f "$cache/etc/stapling-bed-stamp" ] || die "no cached root file system at $cache: run $0 build"
  [ "$(cat "$cache/etc/stapling-bed-stamp")" = "$BED_STAMP" ] || die "the cached root file system is stale: run $0 build"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ ! -e "$dir/nspawn.pid" ] || die "$dir is already up (down it first)"
  t0=$(now)

  local deb=${BED_DEB:-}
  if [ -z "$deb" ]; then
    t=$(now)
    deb=$(DIST="$dir/dist" scripts/package.sh deb | tail -n 1)
    echo "systemd-bed: built $deb in $(since "$t")"
  fi
  [ -f "$deb" ] || die "no package at $deb"

  t=$(now)
  mkdir -p "$dir/root" "$dir/upper" "$dir/work"
  if [ "${BED_OVERLAY:-1}" != 0 ] &&
    mount -t overlay overlay -o "lowerdir=$cache,upperdir=$dir/upper,workdir=$dir/work" "$dir/root" 2>/dev/null; then
    echo overlay >"$dir/rootfs.kind"
  else
    cp -a --reflink=auto "$cache/." "$dir/root/"
    echo copy >"$dir/rootfs.kind"
  fi
  layout "$dir/root"
  case "${BED_LAYOUT:-ea4}" in
    ea4) ;;
    ea3) ea3 "$dir/root" ;;
    none) rm -rf "$dir/root/etc/cpanel" ;;
    *) die "BED_LAYOUT: ea4, ea3 or none, not ${BED_LAYOUT}" ;;
  esac
  remote_access "$dir/root"
  mkdir -p "$dir/root/root/pkg"
  cp "$deb" "$dir/root/root/pkg/"
  echo "systemd-bed: root file system ($(cat "$dir/rootfs.kind")) and layout in $(since "$t")"

  t=$(now)
  # setsid: nspawn gets a session of its own; it forwards SIGTERM to the container as a
  # poweroff request (--boot). The console (boot messages) goes to DIR/console.log.
  local net=--private-network
  if [ -n "${BED_BRIDGE:-}" ]; then net=--network-bridge=$BED_BRIDGE; fi
  cgroup_make "$dir"
  (
    cgroup_enter "$dir"
    exec setsid systemd-nspawn -D "$dir/root" --boot --register=no --keep-unit "$net" \
      --console=read-only --machine="bed$$"
  ) </dev/null >"$dir/console.log" 2>&1 &
  local ns=$!
  echo "$ns" >"$dir/nspawn.pid"
  local pid=""
  for _ in $(seq 200); do
    pid=$(find_leader "$ns") && break
    kill -0 "$ns" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$pid" ]; then
    tail -n 20 "$dir/console.log" >&2
    down "$dir" || true
    die "systemd-nspawn did not start a container (console above)"
  fi
  echo "$pid" >"$dir/leader.pid"
  # The manager answers once /run/systemd/private exists; then wait for the boot to finish.
  local state=""
  for _ in $(seq 600); do
    state=$(run_inside "$dir" systemctl is-system-running --wait 2>/dev/null) && break
    case "$state" in running | degraded) break ;; esac
    kill -0 "$ns" 2>/dev/null || break
    sleep 0.1
  done
  if [ "$state" != running ]; then
    echo "systemd-bed: the booted host is '$state'; failed units:" >&2
    run_inside "$dir" systemctl --no-pager --failed >&2 || true
    # Why they failed, from the journal (the console shows only that they did).
    # shellcheck disable=SC2016 # expanded inside the container
    run_inside "$dir" sh -c 'for u in $(systemctl --failed --plain --no-legend | cut -d" " -f1); do
      journalctl --no-pager -b -o cat -n 15 -u "$u"; done' >&2 || true
    tail -n 30 "$dir/console.log" >&2
    down "$dir" || true
    die "boot did not reach running"
  fi
  echo "systemd-bed: booted (systemd $state) in $(since "$t")"

  t=$(now)
  # The package manager installs the package while the manager runs: the maintainer
  # scripts talk to it as on a real host.
  if ! out=$(run_inside "$dir" dpkg -i "/root/pkg/$(basename "$deb")" 2>&1); then
    echo "$out" >&2
    down "$dir" || true
    die "dpkg -i failed"
  fi
  echo "systemd-bed: dpkg -i in $(since "$t")"
  echo "systemd-bed: up $dir in $(since "$t0")"
}

down() {
  local dir=$1 rc=0 t0
  dir=$(cd "$dir" 2>/dev/null && pwd) || return 0
  t0=$(now)
  local ns
  ns=$(cat "$dir/nspawn.pid" 2>/dev/null || true)
  if [ -n "$ns" ] && kill -0 "$ns" 2>/dev/null; then
    # A clean poweroff through the manager; nspawn exits when the container's PID 1 does.
    if [ -f "$dir/leader.pid" ] && [ -d "/proc/$(cat "$dir/leader.pid")" ]; then
      run_inside "$dir" systemctl --no-block poweroff >/dev/null 2>&1 || true
    fi
    for _ in $(seq 300); do
      kill -0 "$ns" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$ns" 2>/dev/null; then
      echo "systemd-bed: the container did not power off in 30 s; SIGTERM to nspawn" >&2
      rc=1
      kill -TERM "$ns" 2>/dev/null || true
      for _ in $(seq 100); do
        kill -0 "$ns" 2>/dev/null || break
        sleep 0.1
      done
    fi
    if kill -0 "$ns" 2>/dev/null; then
      echo "systemd-bed: SIGKILL to nspawn $ns and the container" >&2
      rc=1
      # shellcheck disable=SC2046
      kill -KILL "$ns" $(procs_in "$dir/root") 2>/dev/null || true
      sleep 0.5
    fi
  fi
  # nspawn's pid may be reaped already while the container's processes linger: look by root.
  local left
  left=$(procs_in "$dir/root")
  if [ -n "$left" ]; then
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
    sleep 0.5
    left=$(procs_in "$dir/root")
    if [ -n "$left" ]; then
      echo "systemd-bed: processes of $dir survive SIGKILL: $left" >&2
      rc=1
    fi
  fi
  if [ -n "$ns" ] && kill -0 "$ns" 2>/dev/null; then
    echo "systemd-bed: systemd-nspawn ($ns) survives" >&2
    rc=1
  fi
  if mountpoint -q "$dir/root" 2>/dev/null; then
    umount "$dir/root" 2>/dev/null || umount -l "$dir/root" || rc=1
  fi
  if grep -qF " $dir/" /proc/self/mounts; then
    echo "systemd-bed: mounts under $dir survive:" >&2
    grep -F " $dir/" /proc/self/mounts >&2
    rc=1
  fi
  cgroup_remove "$dir" || rc=1
  rm -f "$dir/nspawn.pid" "$dir/leader.pid"
  # The copy or the overlay's upper and work directories: root-owned, some mode 000.
  [ $rc -ne 0 ] || rm -rf "$dir/root" "$dir/upper" "$dir/work"
  echo "systemd-bed: down $dir in $(since "$t0")"
  return $rc
}

cmd=${1:-}
case "$cmd" in
  build) build ;;
  up) up "${2:?usage: systemd-bed.sh up DIR}" ;;
  down) need_tools nsenter; down "${2:?usage: systemd-bed.sh down DIR}" ;;
  exec)
    dir=${2:?usage: systemd-bed.sh exec DIR CMD...}
    shift 2
    [ "${1:-}" != -- ] || shift
    [ $# -gt 0 ] || die "usage: systemd-bed.sh exec DIR CMD..."
    inside "$dir" "$@"
    ;;
  *) echo "usage: systemd-bed.sh build | up DIR | exec DIR CMD... | down DIR" >&2; exit 2 ;;
esac
