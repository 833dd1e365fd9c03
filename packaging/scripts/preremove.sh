#!/bin/sh
# What %systemd_preun does: on erase (not upgrade), disable and stop. EL7's systemctl (219)
# has no `disable --now`, so two calls.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
  systemctl --no-reload disable stapling-agent.service stapling-agent-audit.timer >/dev/null 2>&1 || :
  systemctl stop stapling-agent.service stapling-agent-audit.timer >/dev/null 2>&1 || :
fi
exit 0
