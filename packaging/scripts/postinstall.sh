#!/bin/sh
# What %systemd_post does: on first install, apply the preset (EL's default preset leaves
# third-party units disabled, so nothing starts). EL7 needs the daemon-reload to see the unit.
if command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload >/dev/null 2>&1 || :
  if [ "$1" -eq 1 ]; then
    systemctl preset stapling-agent.service stapling-agent-audit.timer >/dev/null 2>&1 || :
  fi
fi
exit 0
