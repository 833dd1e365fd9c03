package agent

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// writeManPages writes a section 8 page for root and each of its commands into dir, their .TH
// line naming "stapling-agent VERSION" (agent.Version, stamped by scripts/package.sh). The
// commands' own help makes the pages; the main page also gets what help cannot say (manSections:
// files, configuration, environment, exit status, signals), which every command's page points
// to through SEE ALSO. The date is SOURCE_DATE_EPOCH's when set (cobra reads it), for
// reproducible packages.
func writeManPages(root *cobra.Command, dir string) error {
	var walk func(c *cobra.Command) error
	walk = func(c *cobra.Command) error {
		for _, sub := range c.Commands() {
			if !sub.IsAvailableCommand() || sub.IsAdditionalHelpTopicCommand() {
				continue
			}
			if err := walk(sub); err != nil {
				return err
			}
		}
		// Title empty: cobra names each page after its command (STAPLING-AGENT-AUDIT).
		hdr := &doc.GenManHeader{Section: "8", Source: "stapling-agent " + AgentVersion(), Manual: "System Administration"}
		var page bytes.Buffer
		if err := doc.GenMan(c, hdr, &page); err != nil {
			return err
		}
		b := page.Bytes()
		if c == root {
			const seeAlso = "\n.SH SEE ALSO\n"
			i := bytes.Index(b, []byte(seeAlso))
			if i < 0 {
				return fmt.Errorf("man: no SEE ALSO section in the page of %s", c.CommandPath())
			}
			b = append(append(append([]byte{}, b[:i+1]...), manSections...), b[i+1:]...)
		}
		name := strings.ReplaceAll(c.CommandPath(), " ", "-") + ".8"
		return os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	return walk(root)
}

// manSections are the main page's sections beyond the commands' help. Keep them true to the
// code: the exit codes are exitCode's and the commands', the signals Main's and the daemon's,
// the files the packages' (packaging/nfpm.yaml) and config's defaults.
var manSections = []byte(`.SH "FILES"
.TP
\fI/etc/stapling-agent/config.yaml\fP
The configuration (see \fBCONFIGURATION\fP). The package installs it 0600 root:root, in
dry-run mode.
.TP
\fI/etc/stapling-agent/pause\fP
The fleet pause file (\fBpolicy.pause_file\fP): while it exists the daemon decides and reports
(decision "paused") but changes nothing, and the audit says so.
.TP
\fI/etc/sysconfig/stapling-agent\fP (RPM), \fI/etc/default/stapling-agent\fP (.deb)
Per-host environment of the systemd units, both files read by both units when present: extra
arguments (\fBSTAPLING_AGENT_ARGS\fP, \fBSTAPLING_AGENT_AUDIT_ARGS\fP) and \fBSTAPLING_AGENT_*\fP
settings (see \fBENVIRONMENT\fP). Read when a unit starts: restart the daemon after editing it.
.TP
\fI/var/lib/stapling-agent\fP
The state directory (\fBstate_dir\fP, 0700): the lock, the journal of every change made to
Apache's configuration, the byte-for-byte backups that undo it, and \fIlast-audit.json\fP
(the audit timer's, read by the Ansible fact). Kept when the package is removed or purged: it
is the only way back while stapling is off by the agent's hand.
.TP
\fI/usr/lib/systemd/system/stapling-agent.service\fP
The daemon (\fBstapling-agent run\fP), shipped disabled. \fBsystemctl reload\fP runs
\fBconfig check\fP, then sends SIGHUP.
.TP
\fI/usr/lib/systemd/system/stapling-agent-audit.service\fP, \fIstapling-agent-audit.timer\fP
The audit every 5 minutes (timer shipped disabled): \fI/var/lib/stapling-agent/last-audit.json\fP,
and \fIstapling_agent.prom\fP in node_exporter's textfile directory (\fBTEXTFILE_DIR\fP).
.TP
\fI/usr/lib/systemd/system/stapling-agent-restart.service\fP, \fIstapling-agent-rebuild.service\fP
Oneshots that run restartsrv_httpd and rebuildhttpdconf through PID 1 where systemd-run cannot
wait for a command (systemd older than 236). Never enabled.
.TP
\fI/var/lib/node_exporter/textfile_collector\fP
\fBmetrics.textfile_dir\fP: the daemon's counters (\fIstapling_agent_daemon.prom\fP); nothing
is written while the directory does not exist.
.TP
\fI/etc/sudoers.d/stapling-agent\fP
Lets the NRPE user (nrpe on EL, nagios on Debian and Ubuntu) run exactly
\fBstapling-agent audit --format nagios --since 1h --timeout 8s\fP as root.
.TP
\fI/etc/ansible/facts.d/stapling_agent.fact\fP
The Ansible local fact (\fBansible_local.stapling_agent\fP): the cached audit and its age.
.TP
\fI900-stapling-agent-check\fP
A read-only check after EasyApache 4 package transactions, run by cPanel's universal hooks
from these directories (EL8 and later, EL7, Ubuntu):
.br
\fI/etc/dnf/universal-hooks/multi_pkgs/transaction/ea-__WILDCARD__/\fP
.br
\fI/etc/yum/universal-hooks/multi_pkgs/posttrans/ea-__WILDCARD__/\fP
.br
\fI/etc/apt/universal-hooks/multi_pkgs/Post-Invoke/ea-__WILDCARD__/\fP
.TP
\fI/usr/share/stapling-agent/stapling-agent.rules.yml\fP, \fIstapling-agent.dashboard.json\fP
Prometheus alerting rules and a Grafana dashboard for the metrics; the agent never reads them.
.TP
\fI/usr/share/bash-completion/completions/stapling-agent\fP
Completion for bash.
.TP
\fI/etc/apache2/conf.d/includes/pre_virtualhost_global.conf\fP
The include the agent writes its block into (EasyApache 4; EasyApache 3:
\fI/usr/local/apache/conf/includes/\fP), under \fB--root\fP like every host path; error_log is
read where \fI/etc/cpanel/ea4/paths.conf\fP says.
.SH "CONFIGURATION"
.PP
\fI/etc/stapling-agent/config.yaml\fP (\fB--config\fP; optional unless given) is YAML. Each
key has a default, and each can be set in the environment too (see \fBENVIRONMENT\fP); flags
win over the environment, the environment over the file. Unknown keys and bad values are
errors naming the key. Run as root, the agent refuses a file not owned by root or writable by
group or others: it can name commands that run as root.
.TP
\fBmode\fP
\fBenforce\fP or \fBdry-run\fP (log what would be done, change nothing; the package's).
.TP
\fBpolicy.threshold\fP, \fBpolicy.window\fP
Responder failures (AH01941) within the window that trigger a remediation (3 in 10m).
.TP
\fBpolicy.cooldown\fP, \fBpolicy.max_per_day\fP
After acting, nothing more for the cooldown (1h); at most this many remediations a day (3).
.TP
\fBpolicy.auto_revert_after\fP
Turn stapling back on once every responder has answered from this host for this long (24h);
0s never.
.TP
\fBpolicy.spread\fP
A random delay of up to this long before acting, then decide again (60s), so a fleet does not
restart every Apache in the same second.
.TP
\fBpolicy.pause_file\fP, \fBpolicy.scope_out_share\fP, \fBpolicy.scope_out_single_account\fP, \fBpolicy.must_staple\fP
The fleet pause file; the blast radius below which the daemon only reports; \fBexempt\fP or
\fBveto\fP for vhosts serving a Must-Staple certificate.
.TP
\fBstate_dir\fP, \fBlog.level\fP, \fBlog.format\fP, \fBmetrics.textfile_dir\fP
The state directory; debug, info, warn or error; json or console; node_exporter's textfile
directory ("" for none).
.TP
\fBcommands.timeout\fP, \fBcommands.configtest\fP, \fBcommands.restart\fP, \fBcommands.rebuild\fP
Each Apache command's timeout (120s), and the commands themselves as lists of words, run
without a shell (empty: cPanel's own apachectl -t, restartsrv_httpd, rebuildhttpdconf).
.PP
\fBstapling-agent config check\fP validates it; \fBsystemctl reload stapling-agent\fP applies
it to the running daemon, or fails and keeps the old one.
.SH "ENVIRONMENT"
.TP
\fBSTAPLING_AGENT_\fP\fIKEY\fP
Every configuration key, upper case, dots as underscores: \fBSTAPLING_AGENT_MODE\fP,
\fBSTAPLING_AGENT_POLICY_THRESHOLD\fP, \fBSTAPLING_AGENT_POLICY_SPREAD\fP,
\fBSTAPLING_AGENT_LOG_LEVEL\fP, \fBSTAPLING_AGENT_METRICS_TEXTFILE_DIR\fP,
\fBSTAPLING_AGENT_COMMANDS_RESTART\fP (words split on spaces), and so on. They override the
file.
.TP
\fBSTAPLING_AGENT_THROUGH_PID1\fP
How Apache's restart and rebuild reach PID 1: \fBsystemd-run\fP or \fBunit\fP (the oneshot
units); by default systemd-run where it is 236 or later.
.TP
\fBSTAPLING_AGENT_ARGS\fP, \fBSTAPLING_AGENT_AUDIT_ARGS\fP
Read by the units only, from the environment file: extra arguments for \fBrun\fP (e.g.
--log-level debug) and for the timer's \fBaudit\fP (e.g. --no-exec).
.TP
\fBTEXTFILE_DIR\fP
The audit unit's textfile directory; the unit's sandbox must be allowed to write it
(ReadWritePaths).
.TP
\fBGOMEMLIMIT\fP
The audit's soft memory limit when set (else 48 MiB).
.TP
\fBNOTIFY_SOCKET\fP, \fBWATCHDOG_USEC\fP
Set by systemd: the daemon then sends READY=1, WATCHDOG=1 and STOPPING=1.
.SH "EXIT STATUS"
.TP
\fBremediate\fP, \fBrevert\fP
0 done or nothing to do; 1 failed (and rolled back); 2 refused (unknown layout, include not
wired, a Must-Staple veto), bad configuration or bad usage.
.TP
\fBrun\fP
0 stopped by SIGTERM or SIGINT; 2 cannot start (bad configuration, bad --root, unknown
layout, commands another user could replace) or bad usage; 1 any other failure.
.TP
\fBconfig check\fP
0 valid; 2 invalid, with the reason on stderr.
.TP
\fBaudit\fP
Nagios's: 0 ok, 1 warning, 2 critical, 3 unknown (the audit could not run, ran out of
\fB--timeout\fP, was stopped by a signal, or a usage error).
.TP
\fBprobe\fP
0 every target handshakes and every responder answers; 1 otherwise; 3 nothing could be probed,
or a usage error.
.TP
\fBversion\fP
0.
.PP
A usage error found before any command runs (an unknown flag or command, a bad flag value) is
2 (3 for \fBaudit\fP and \fBprobe\fP); on a command line that asks for \fB--format nagios\fP it is 3 with one
"STAPLING UNKNOWN - \fIreason\fP" line on stdout, wherever the error is.
.SH "SIGNALS"
.TP
\fBSIGTERM\fP, \fBSIGINT\fP
\fBrun\fP tells systemd STOPPING=1, stops reading, finishes a remediation or revert under way
(killing a restart halfway would leave Apache worse off; the unit's TimeoutStopSec bounds it),
does not act on a decision still in its spread delay, writes its counters and exits 0.
\fBaudit\fP stops within 2 seconds: status unknown, exit 3. \fBprobe\fP stops at once.
\fBremediate\fP and \fBrevert\fP stop the Apache command under way, which fails the change;
the daemon finishes an interrupted change at its next start, from the journal.
.TP
\fBSIGHUP\fP
\fBrun\fP reads the configuration again (file and flags; the environment is the one it started
with) and rebuilds what it drives: logger, mode, policy, commands and their timeout, state
directory. A bad configuration is logged and the old one kept.
`)

// newManCmd is the hidden `man DIR` that scripts/package.sh runs.
func newManCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write the man pages (section 8) to DIR (used by the package build)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return writeManPages(cmd.Root(), args[0])
		},
	}
}
