#!/bin/sh
# What %systemd_postun_with_restart does: reload unit files; on upgrade, restart the daemon
# only if it was running (try-restart), so an upgrade never starts it.
if command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload >/dev/null 2>&1 || :
  if [ "$1" -ge 1 ]; then
    systemctl try-restart stapling-agent.service >/dev/null 2>&1 || :
  fi
fi
exit 0
