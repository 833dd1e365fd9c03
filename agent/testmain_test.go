package agent

import "github.com/stapling-agent/stapling-agent/agent/internal/fakehost"

// Host paths and contents the CLI and end-to-end tests share with the package tests.
const (
	ea4Include = fakehost.EA4Include
	ea4HTTPD   = fakehost.EA4HTTPD
	adminBytes = fakehost.AdminBytes
	wiredHTTPD = fakehost.WiredHTTPD
)
