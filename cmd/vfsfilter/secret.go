package main

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// secretFlags are the ways a user gives a passphrase: a file, a command,
// or (neither given) the terminal. The passphrase never travels in argv:
// --passfile names a file and --extpass a command that prints it.
type secretFlags struct {
	passfile string
	extpass  string
	// noun names the secret in messages ("passphrase" when empty), and
	// fileFlag and extFlag the flags that give it.
	noun, fileFlag, extFlag string
	// stderr receives warnings (a passfile others can read); nil means
	// os.Stderr.
	stderr io.Writer
}

// addFlags defines --passfile and --extpass on fs.
func (s *secretFlags) addFlags(fs *pflag.FlagSet) {
	s.addFlagsNamed(fs, "passfile", "extpass", "the passphrase")
}

// addFlagsNamed defines the two flags under other names ("new-passfile"
// for crypt passwd).
func (s *secretFlags) addFlagsNamed(fs *pflag.FlagSet, file, ext, what string) {
	s.fileFlag, s.extFlag = file, ext
	fs.StringVar(&s.passfile, file, "", "read "+what+" from the first line of `FILE` (it should be readable by its owner only)")
	fs.StringVar(&s.extpass, ext, "", "run `COMMAND` with /bin/sh -c and read "+what+" from the first line of its output")
}

// errNoTerminal is returned when no passphrase source is usable.
var errNoTerminal = errors.New("a passphrase is needed: give --passfile FILE or --extpass COMMAND, or run from a terminal")

// read returns the passphrase, from --passfile, --extpass or the terminal,
// in that order of preference (giving both flags is an error). confirm asks
// twice on the terminal, for a new passphrase. The caller wipes the
// result. Errors never contain the passphrase.
func (s *secretFlags) read(prompt string, confirm bool) ([]byte, error) {
	var p []byte
	var err error
	switch {
	case s.passfile != "" && s.extpass != "":
		return nil, usageErrorf("give --%s or --%s, not both", s.fileName(), s.extName())
	case s.passfile != "":
		p, err = s.fromFile()
	case s.extpass != "":
		p, err = s.fromCommand()
	case s.noun == "" && os.Getenv(passFdEnv) != "":
		p, err = fromInheritedPipe()
	default:
		p, err = fromTerminal(prompt, confirm)
	}
	if errors.Is(err, errNoTerminal) && s.noun != "" {
		err = fmt.Errorf("a %s is needed: give --%s FILE or --%s COMMAND, or run from a terminal", s.noun, s.fileName(), s.extName())
	}
	if err != nil {
		return nil, err
	}
	if len(p) == 0 {
		return nil, fmt.Errorf("the %s is empty", s.what())
	}
	return p, nil
}

// passFdEnv names the fd on which the child of "mount --daemon" finds the
// passphrase its parent read from the terminal: the child has no terminal,
// and a passphrase must never travel in argv or the environment. Only the
// fd number is in the environment.
const passFdEnv = "VFSFILTER_PASS_FD"

// passFd is where the daemon child finds that pipe (ExtraFiles[1]).
const passFd = 4

// fromInheritedPipe reads the passphrase the parent wrote to the pipe, once.
func fromInheritedPipe() ([]byte, error) {
	os.Unsetenv(passFdEnv)
	f := os.NewFile(passFd, "vfsfilter-passphrase")
	defer f.Close()
	p, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("reading the passphrase from the parent: %v", err)
	}
	return p, nil
}

// needsSecret reports whether mounting backing will ask for a passphrase
// that --passfile or --extpass do not give: the daemon's parent then asks
// on the terminal and hands it over.
func (s *secretFlags) needsSecret(backing string) bool {
	if s.passfile != "" || s.extpass != "" {
		return false
	}
	sets, err := loadSettings(backing)
	return err == nil && sets != nil && sets.Has("crypt")
}

func (s *secretFlags) warnf(format string, args ...any) {
	w := s.stderr
	if w == nil {
		w = os.Stderr
	}
	fmt.Fprintf(w, "vfsfilter: warning: "+format+"\n", args...)
}

// fromFile reads the first line of --passfile. A file that group or others
// can read is used, with a warning: refusing would break set-ups that keep
// the file on a file system without modes.
func (s *secretFlags) fromFile() ([]byte, error) {
	f, err := os.Open(s.passfile)
	if err != nil {
		return nil, fmt.Errorf("%s file: %w", s.what(), unwrapPathErrorSecret(err))
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode().Perm()&0o077 != 0 {
		s.warnf("%s file %s can be read by others (mode %04o); chmod 600 it", s.what(), s.passfile, st.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("%s file %s: %w", s.what(), s.passfile, unwrapPathErrorSecret(err))
	}
	defer clear(data)
	return firstLine(data), nil
}

// fromCommand runs --extpass with /bin/sh -c, so that the command may use
// quoting and pipes ("pass show vault | head -1"); gocryptfs splits on
// spaces instead, which cannot express those. Its stderr is the user's;
// its exit status must be 0.
func (s *secretFlags) fromCommand() ([]byte, error) {
	cmd := exec.Command("/bin/sh", "-c", s.extpass)
	cmd.Stdin = os.Stdin
	cmd.Stderr = os.Stderr
	var out bytes.Buffer
	cmd.Stdout = &out
	err := cmd.Run()
	defer clear(out.Bytes())
	if err != nil {
		// Only the status: the command's output may hold the secret.
		return nil, fmt.Errorf("--%s command failed: %v", s.extName(), exitStatusOnly(err))
	}
	return firstLine(out.Bytes()), nil
}

func exitStatusOnly(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("%s", ee.ProcessState.String())
	}
	return err
}

// firstLine returns a copy of the first line of data, without the line end.
func firstLine(data []byte) []byte {
	line, _, _ := bytes.Cut(data, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	return append([]byte(nil), line...)
}

// fromTerminal asks on /dev/tty (not stdin, which may be a pipe of data),
// without echo.
func fromTerminal(prompt string, confirm bool) ([]byte, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, errNoTerminal
	}
	defer tty.Close()
	if !term.IsTerminal(int(tty.Fd())) {
		return nil, errNoTerminal
	}
	ask := func(p string) ([]byte, error) {
		fmt.Fprint(tty, p)
		b, err := term.ReadPassword(int(tty.Fd()))
		fmt.Fprintln(tty)
		return b, err
	}
	p, err := ask(prompt)
	if err != nil {
		return nil, fmt.Errorf("reading the passphrase: %w", err)
	}
	if !confirm {
		return p, nil
	}
	again, err := ask("Repeat: ")
	defer clear(again)
	if err != nil {
		clear(p)
		return nil, fmt.Errorf("reading the passphrase: %w", err)
	}
	if subtle.ConstantTimeCompare(p, again) != 1 {
		clear(p)
		return nil, errors.New("the passphrases do not match")
	}
	return p, nil
}

// unwrapPathErrorSecret drops the *PathError wrapper's operation, keeping
// the path and cause.
func unwrapPathErrorSecret(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

// what is the secret's name in messages.
func (s *secretFlags) what() string {
	if s.noun == "" {
		return "passphrase"
	}
	return s.noun
}

// fileName is the name of the file flag.
func (s *secretFlags) fileName() string {
	if s.fileFlag == "" {
		return "passfile"
	}
	return s.fileFlag
}

// extName is the name of the command flag.
func (s *secretFlags) extName() string {
	if s.extFlag == "" {
		return "extpass"
	}
	return s.extFlag
}
