package integration

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestScripts runs the scripts of testdata/script, one per topic. Each runs
// the vfsfilter binary from PATH in its own work directory ($WORK), with
// the commands below besides testscript's own.
func TestScripts(t *testing.T) {
	requireFUSE(t)
	testscript.Run(t, testscript.Params{
		Dir:                 filepath.Join("..", "testdata", "script"),
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Setup:               scriptSetup,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mounted":     cmdMounted,
			"waitmount":   cmdWaitmount,
			"waitunmount": cmdWaitunmount,
			"waitlog":     cmdWaitlog,
			"umountall":   cmdUmountall,
			"mountinfo":   cmdMountinfo,
			"rename":      cmdRename,
			"expandenv":   cmdExpandenv,
			"exitcode":    cmdExitcode,
		},
	})
}

// scriptSetup gives each script a home and a temporary directory of its
// own, tags the processes it starts, and registers the cleanup that runs
// however the script ends: detach what is still mounted under $WORK and
// kill the daemons the script started.
func scriptSetup(env *testscript.Env) error {
	home := filepath.Join(env.WorkDir, "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		return err
	}
	env.Setenv("HOME", home)
	tmp := filepath.Join(env.WorkDir, ".tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	env.Setenv("TMPDIR", tmp)
	tag := runTag + "/script" + env.WorkDir
	env.Setenv(tagEnv, tag)
	// The daemon's stderr is not the script's; keep the race detector's
	// reports where TestMain looks for them.
	if g := os.Getenv("GORACE"); g != "" {
		env.Setenv("GORACE", g)
	}
	t := env.T()
	env.Defer(func() {
		var problems []string
		if left := mountsUnder(env.WorkDir); len(left) > 0 {
			problems = append(problems, fmt.Sprintf("the script left mounts behind: %v", left))
			lazyUnmountUnder(env.WorkDir)
		}
		if pids := waitTaggedExit(tag, 3*time.Second); len(pids) > 0 {
			problems = append(problems, fmt.Sprintf("processes still running after the script: %v", pids))
			killTagged(tag)
		}
		if len(problems) > 0 {
			t.Fatal(strings.Join(problems, "; "))
		}
	})
	return nil
}

// mounted DIR: succeed if DIR is a mount point.
func cmdMounted(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: mounted DIR")
	}
	switch m := isMounted(ts.MkAbs(args[0])); {
	case m && neg:
		ts.Fatalf("%s is mounted", args[0])
	case !m && !neg:
		ts.Fatalf("%s is not mounted", args[0])
	}
}

// waitmount DIR: wait (up to 10s) until DIR is mounted, for mounts started
// in the background.
func cmdWaitmount(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 || neg {
		ts.Fatalf("usage: waitmount DIR")
	}
	if !waitMounted(ts.MkAbs(args[0]), true, 10*time.Second) {
		ts.Fatalf("%s was not mounted within 10s", args[0])
	}
}

// waitlog FILE TEXT: wait (up to 10s) until FILE contains TEXT, for log
// lines of daemons started in the background.
func cmdWaitlog(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || neg {
		ts.Fatalf("usage: waitlog FILE TEXT")
	}
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(ts.MkAbs(args[0])); err == nil && strings.Contains(string(b), args[1]) {
			return
		}
	}
	ts.Fatalf("%s does not contain %q after 10s", args[0], args[1])
}

// waitunmount DIR: wait (up to 10s) until DIR is no longer mounted.
func cmdWaitunmount(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 || neg {
		ts.Fatalf("usage: waitunmount DIR")
	}
	if !waitMounted(ts.MkAbs(args[0]), false, 10*time.Second) {
		ts.Fatalf("%s was still mounted after 10s", args[0])
	}
}

// umountall: lazily detach everything mounted under $WORK.
func cmdUmountall(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 0 || neg {
		ts.Fatalf("usage: umountall")
	}
	lazyUnmountUnder(ts.Getenv("WORK"))
}

// mountinfo DIR: print the mount at DIR as
// "fstype=T source=S opts=MOUNTOPTS super=SUPEROPTS".
func cmdMountinfo(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 || neg {
		ts.Fatalf("usage: mountinfo DIR")
	}
	want := resolve(ts.MkAbs(args[0]))
	f, err := os.Open("/proc/self/mountinfo")
	ts.Check(err)
	defer f.Close()
	var line string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 4 && unescapeOctal(fs[4]) == want {
			line = sc.Text() // keep the last: the one on top
		}
	}
	if line == "" {
		ts.Fatalf("%s is not mounted", args[0])
	}
	fs := strings.Fields(line)
	sep := 6
	for sep < len(fs) && fs[sep] != "-" {
		sep++
	}
	if sep+3 >= len(fs) {
		ts.Fatalf("malformed mountinfo line %q", line)
	}
	fmt.Fprintf(ts.Stdout(), "fstype=%s source=%s opts=%s super=%s\n", fs[sep+1], unescapeOctal(fs[sep+2]), fs[5], fs[sep+3])
}

// rename OLD NEW: rename(2), printing the error to stderr. Unlike mv, it
// does not fall back to copying on EXDEV, so the errno can be checked.
func cmdRename(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: rename OLD NEW")
	}
	err := os.Rename(ts.MkAbs(args[0]), ts.MkAbs(args[1]))
	if err != nil {
		// The bare errno text, as strerror(3) spells it ("Invalid
		// cross-device link"), so scripts match what shells print.
		msg := err.Error()
		if le, ok := err.(*os.LinkError); ok {
			msg = le.Err.Error()
		}
		fmt.Fprintf(ts.Stderr(), "rename %s %s: %s\n", args[0], args[1], strerror(msg))
	}
	switch {
	case err != nil && !neg:
		ts.Fatalf("rename failed: %v", err)
	case err == nil && neg:
		ts.Fatalf("rename %s %s succeeded", args[0], args[1])
	}
}

// strerror capitalizes Go's errno text as libc's strerror does.
func strerror(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// expandenv SRC DST: copy SRC to DST with $VAR and ${VAR} replaced by the
// script's environment, for files that must hold absolute paths ($WORK).
func cmdExpandenv(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || neg {
		ts.Fatalf("usage: expandenv SRC DST")
	}
	data := os.Expand(ts.ReadFile(args[0]), ts.Getenv)
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(data), 0o644))
}

// exitcode N PROG [ARGS...]: run PROG like exec and require exit status N.
// stdout and stderr are kept for the commands that follow, as after exec.
// Scripts use it for vfsfilter's documented exit codes, which "! exec"
// cannot tell apart.
func cmdExitcode(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 || neg {
		ts.Fatalf("usage: exitcode N PROG [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exitcode: bad status %q", args[0])
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("%s: %v", args[1], err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
}
