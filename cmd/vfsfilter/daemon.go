package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
)

// "mount --daemon" cannot fork: a Go process has threads, and a forked
// copy keeps only one of them. It re-executes itself instead, with the same
// command line, daemonEnv set and the write end of a pipe as fd 3. The child
// makes the mount as a foreground mount would, then writes "ready" to the
// pipe, or "error", its exit code and the message if it cannot. The parent
// relays the outcome and exits; the child stays, in its own session, with
// its stdio on /dev/null or the --log-file.

// daemonEnv marks the re-executed child. Its value is the pipe's fd number.
const daemonEnv = "_VFSFILTER_DAEMON_FD"

// daemonFd is where the child finds the pipe (ExtraFiles[0]).
const daemonFd = 3

func isDaemonChild() bool { return os.Getenv(daemonEnv) != "" }

// daemonReport is the child's end of the pipe. A nil *daemonReport (a
// foreground mount) ignores every call.
type daemonReport struct {
	w    io.WriteCloser
	sent bool
}

// ready tells the parent that the mount is serving.
func (r *daemonReport) ready() {
	if r == nil || r.sent {
		return
	}
	r.sent = true
	io.WriteString(r.w, "ready\n")
	r.w.Close()
}

// fail sends err to the parent, unless ready was already sent: the parent
// is gone by then and the error goes to the log only.
func (r *daemonReport) fail(err error) {
	if r == nil || r.sent {
		return
	}
	r.sent = true
	fmt.Fprintf(r.w, "error\n%d\n%s", exitCodeOf(err), err)
	r.w.Close()
}

// runDaemonChild runs the command line in the re-executed child.
func runDaemonChild(args []string, e *env) ExitCode {
	fd := os.Getenv(daemonEnv)
	// Children of the daemon (none today) must not think they are one.
	os.Unsetenv(daemonEnv)
	if fd != fmt.Sprint(daemonFd) {
		fmt.Fprintf(e.stderr, "vfsfilter: bad %s=%q\n", daemonEnv, fd)
		return ExitFailure
	}
	e.daemon = &daemonReport{w: os.NewFile(daemonFd, "vfsfilter-daemon-pipe")}
	err := dispatch(args, e)
	if err == nil {
		return ExitOK
	}
	e.daemon.fail(err)
	fmt.Fprintf(e.stderr, "vfsfilter: %v\n", err)
	return exitCodeOf(err)
}

// startDaemon re-executes vfsfilter as the daemon and waits until it
// reports that the mount is serving or why it is not.
func startDaemon(e *env, cfg *mountConfig) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cannot find my own executable to start the daemon: %w", err)
	}
	var out *os.File
	if cfg.logFile != "" {
		out, err = openLogFile(cfg.logFile)
	} else {
		out, err = os.OpenFile(os.DevNull, os.O_RDWR, 0)
	}
	if err != nil {
		return err
	}
	defer out.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()

	cmd := exec.Command(exe, e.argv...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", daemonEnv, daemonFd))
	cmd.ExtraFiles = []*os.File{w} // fd 3
	if cfg.secret != nil && cfg.secret.needsSecret(cfg.backing) {
		// The child has no terminal: ask here, hand it over on a pipe.
		pass, err := cfg.secret.read("Password: ", false)
		if err != nil {
			w.Close()
			return err
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			w.Close()
			return err
		}
		_, werr := pw.Write(pass)
		clear(pass)
		pw.Close()
		defer pr.Close()
		if werr != nil {
			w.Close()
			return werr
		}
		cmd.ExtraFiles = append(cmd.ExtraFiles, pr) // fd 4 = passFd
		cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%d", passFdEnv, passFd))
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, out, out
	// Setsid: the daemon leaves our session and process group, so the
	// terminal's SIGINT and SIGHUP no longer reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}

	// Until the child reports, it is still ours: if we are interrupted,
	// stop it (it unmounts if it got that far) rather than leave a mount
	// nobody asked for.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("cannot start the daemon: %w", err)
	}
	w.Close() // else we would never see EOF

	msgc := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		msgc <- b
	}()
	var msg []byte
	select {
	case msg = <-msgc:
	case sig := <-sigs:
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		return fmt.Errorf("interrupted by %v while the daemon was starting; stopped it", sig)
	}

	if bytes.Equal(msg, []byte("ready\n")) {
		// Do not wait for it: it runs until unmounted.
		cmd.Process.Release()
		return nil
	}
	werr := cmd.Wait()
	code, text, ok := parseDaemonError(msg)
	if !ok {
		status := "no report"
		if werr != nil {
			status = werr.Error()
		}
		hint := ""
		if cfg.logFile != "" {
			hint = "; see " + cfg.logFile
		}
		return fmt.Errorf("the daemon exited before the mount was ready (%s)%s", status, hint)
	}
	if ee := (*exec.ExitError)(nil); errors.As(werr, &ee) && ee.ExitCode() > 0 {
		code = ExitCode(ee.ExitCode())
	}
	return errorf(code, "%s", text)
}

// parseDaemonError decodes the child's "error\nCODE\nMESSAGE" report.
func parseDaemonError(msg []byte) (ExitCode, string, bool) {
	rest, ok := strings.CutPrefix(string(msg), "error\n")
	if !ok {
		return 0, "", false
	}
	codeStr, text, ok := strings.Cut(rest, "\n")
	if !ok {
		return 0, "", false
	}
	var code int
	if _, err := fmt.Sscan(codeStr, &code); err != nil || code <= 0 {
		return 0, "", false
	}
	return ExitCode(code), text, true
}
