// Package s3test starts a real S3 server for tests: versitygw, pinned and
// installed by .ci/setup-hsm.sh, with its posix backend in a temporary
// directory, on a free loopback port.
package s3test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Credentials of the test server.
const (
	AccessKey = "vfsfilter-test"
	SecretKey = "vfsfilter-test-secret"
	Region    = "us-east-1"
)

// Server is a running versitygw.
type Server struct {
	Endpoint string
	cmd      *exec.Cmd
}

// Binary finds versitygw: $VERSITYGW, PATH, or the cache .ci/setup-hsm.sh
// fills ($VFSFILTER_CI_CACHE or ~/.cache/vfsfilter-ci).
func Binary() string {
	if p := os.Getenv("VERSITYGW"); p != "" {
		return p
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	for _, dir := range []string{os.Getenv("VFSFILTER_CI_CACHE"), filepath.Join(os.Getenv("HOME"), ".cache", "vfsfilter-ci")} {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// Start starts a server for the test and stops it at cleanup. Without the
// binary it skips, or fails when CI is set.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("versitygw is not installed; run .ci/setup-hsm.sh")
		}
		t.Skip("versitygw not installed (run .ci/setup-hsm.sh)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &Server{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port)}
	s.cmd = exec.Command(bin, "--access", AccessKey, "--secret", SecretKey, "--port", fmt.Sprintf("127.0.0.1:%d", port), "posix", t.TempDir())
	s.cmd.Stdout, s.cmd.Stderr = io.Discard, io.Discard
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(s.Endpoint)
		if err == nil {
			resp.Body.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not come up on %s: %v", s.Endpoint, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Env is the environment an S3 client (the vfsfilter binary) needs to
// reach the server, the way S3 users configure it.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + SecretKey,
		"AWS_REGION=" + Region,
		"AWS_ENDPOINT_URL_S3=" + s.Endpoint,
	}
}

// Stop kills the server, as a crash would, and waits for it.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}
