package main

import "testing"

func TestParseDaemonError(t *testing.T) {
	code, msg, ok := parseDaemonError([]byte("error\n4\nmountpoint /x is not empty\nsecond line"))
	if !ok || code != ExitMountpoint || msg != "mountpoint /x is not empty\nsecond line" {
		t.Errorf("got %d, %q, %v", code, msg, ok)
	}
	for _, bad := range []string{"", "ready\n", "error\n", "error\nx\nmsg", "error\n0\nmsg", "garbage"} {
		if _, _, ok := parseDaemonError([]byte(bad)); ok {
			t.Errorf("parseDaemonError(%q) accepted", bad)
		}
	}
}

// The report is what the parent parses.
func TestDaemonReportRoundTrip(t *testing.T) {
	var b closeBuffer
	r := &daemonReport{w: &b}
	r.fail(errorf(ExitRules, "bad rules"))
	r.ready() // ignored: the outcome was sent
	code, msg, ok := parseDaemonError(b.buf)
	if !ok || code != ExitRules || msg != "bad rules" || !b.closed {
		t.Errorf("got %d, %q, %v, closed=%v", code, msg, ok, b.closed)
	}

	var nilReport *daemonReport
	nilReport.ready() // a foreground mount has none; must not panic
	nilReport.fail(errorf(ExitRules, "x"))
}

type closeBuffer struct {
	buf    []byte
	closed bool
}

func (b *closeBuffer) Write(p []byte) (int, error) { b.buf = append(b.buf, p...); return len(p), nil }
func (b *closeBuffer) Close() error                { b.closed = true; return nil }
