package whm

import (
	"os"
	"testing"

	"github.com/stapling-agent/stapling-agent/agent/testguard"
)

// TestMain fails the run when a test leaves a process running or a file behind.
func TestMain(m *testing.M) { os.Exit(testguard.Main(m)) }
