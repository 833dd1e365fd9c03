package packaging

import (
	"strings"
	"testing"
)

// The EA4 post-transaction hook is in the RPM where cPanel's universal hooks look for it after
// ea-* transactions (dnf: transaction, yum on EL7: posttrans), executable and owned by root;
// the apt directory is for a .deb only. Its behaviour is tested in agent/whm/hook_test.go.
func TestRPMShipsEA4Hook(t *testing.T) {
	packages(t)
	files := run(t, "", nil, "rpm", "-qp", "--qf", `[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME}\n]`, built.v1)
	for _, want := range []string{
		"/etc/dnf/universal-hooks/multi_pkgs/transaction/ea-__WILDCARD__/900-stapling-agent-check -rwxr-xr-x root:root\n",
		"/etc/yum/universal-hooks/multi_pkgs/posttrans/ea-__WILDCARD__/900-stapling-agent-check -rwxr-xr-x root:root\n",
	} {
		if !strings.Contains(files, want) {
			t.Errorf("RPM lacks %q", want)
		}
	}
	if strings.Contains(files, "/etc/apt/") {
		t.Error("the RPM ships the apt hook")
	}
}
