// Command stapling-agent keeps HTTPS up on cPanel/WHM hosts when OCSP stapling breaks.
package main

import (
	"os"

	"github.com/stapling-agent/stapling-agent/agent"
)

func main() {
	os.Exit(agent.Main(os.Args[1:], os.Stdout, os.Stderr))
}
