// Package control is the control socket of a live mount: commands such as
// `vfsfilter hsm migrate` and `vfsfilter watch` talk to the daemon serving
// the mount they name, so that work on files happens in the one process
// that knows which files are open.
//
// The wire format is JSON lines on a Unix socket. The client sends one
// request, {"method": M, "params": P}; the server answers with any number
// of {"data": D} lines (progress, events, results) and ends with {"done":
// true} or {"error": "message"}. Closing the connection cancels the request
// on the server side.
//
// The socket lives in /run/vfsfilter (0700), named after the mountpoint, and
// is 0600: only root, which mounted, may drive the daemon.
package control

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// RunDir holds the sockets.
var RunDir = "/run/vfsfilter"

// SocketPath returns the control socket's path for a mountpoint.
func SocketPath(mountpoint string) string {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		abs = mountpoint
	}
	sum := sha256.Sum256([]byte(filepath.Clean(abs)))
	return filepath.Join(RunDir, hex.EncodeToString(sum[:8])+".sock")
}

// Handler serves one method. params is the request's raw params; send
// streams one data line to the client. The context is cancelled when the
// client goes away.
type Handler func(ctx context.Context, params json.RawMessage, send func(v any) error) error

type request struct {
	Method string          `json:"method"`
	Params json.RawMessage `json:"params,omitempty"`
}

type response struct {
	Data  json.RawMessage `json:"data,omitempty"`
	Done  bool            `json:"done,omitempty"`
	Error string          `json:"error,omitempty"`
}

// Server accepts control connections.
type Server struct {
	ln  net.Listener
	log *slog.Logger

	// id identifies the socket file this server made: Close removes the
	// path only while it is still that file, because once the mount is
	// gone a new daemon for the same mountpoint may have put its own
	// socket there (file systems reuse a freed inode number at once, so
	// the change time is part of it).
	id fileID

	mu       sync.RWMutex
	handlers map[string]Handler
	wg       sync.WaitGroup
	ctx      context.Context
	cancel   context.CancelFunc
}

// Listen creates the socket at path (replacing a stale one) and serves it.
func Listen(path string, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0700); err != nil {
		return nil, err
	}
	// A socket left by a daemon that was killed: nobody answers on it.
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s is in use by another daemon", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	// Close removes the file itself, and only if it is still ours.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0600); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, err
	}
	// After the chmod, which changes the change time.
	id, err := statID(path)
	if err != nil {
		ln.Close()
		os.Remove(path)
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{ln: ln, log: log, handlers: map[string]Handler{}, ctx: ctx, cancel: cancel, id: id}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Handle registers h for method.
func (s *Server) Handle(method string, h Handler) {
	s.mu.Lock()
	s.handlers[method] = h
	s.mu.Unlock()
}

// Close stops accepting, cancels running requests, waits for them and
// removes the socket.
func (s *Server) Close() error {
	s.cancel()
	err := s.ln.Close()
	s.wg.Wait()
	path := s.ln.Addr().String()
	if id, serr := statID(path); serr == nil && id == s.id {
		os.Remove(path)
	}
	return err
}

type fileID struct {
	dev, ino uint64
	ctime    unix.Timespec
}

func statID(path string) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fileID{}, err
	}
	return fileID{st.Dev, st.Ino, st.Ctim}, nil
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.conn(c)
		}()
	}
}

func (s *Server) conn(c net.Conn) {
	defer c.Close()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	r := bufio.NewReader(c)
	line, err := r.ReadBytes('\n')
	if err != nil {
		return
	}
	var req request
	enc := json.NewEncoder(c)
	var wmu sync.Mutex
	write := func(resp response) error {
		wmu.Lock()
		defer wmu.Unlock()
		return enc.Encode(resp)
	}
	if err := json.Unmarshal(line, &req); err != nil {
		write(response{Error: "bad request: " + err.Error()})
		return
	}
	s.mu.RLock()
	h := s.handlers[req.Method]
	s.mu.RUnlock()
	if h == nil {
		write(response{Error: fmt.Sprintf("unknown method %q (is this mount's daemon older than the command?)", req.Method)})
		return
	}
	// A read that ends means the client went away: cancel its request.
	go func() {
		r.ReadByte()
		cancel()
	}()
	send := func(v any) error {
		raw, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if err := write(response{Data: raw}); err != nil {
			cancel()
			return err
		}
		return ctx.Err()
	}
	if err := h(ctx, req.Params, send); err != nil {
		write(response{Error: err.Error()})
		return
	}
	write(response{Done: true})
}

// Client is a connection to a daemon's control socket.
type Client struct {
	path string
}

// ErrNoDaemon says the socket does not answer: the path is not in a live
// vfsfilter mount, or its daemon died.
var ErrNoDaemon = errors.New("no vfsfilter daemon answers for this mount")

// Dial checks that a daemon answers at path.
func Dial(path string) (*Client, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrNoDaemon, err)
	}
	c.Close()
	return &Client{path: path}, nil
}

// Call sends one request and calls each for every data line until the
// server is done. A server error is returned as an error with its message.
// Cancelling ctx closes the connection, which cancels the request.
func (c *Client) Call(ctx context.Context, method string, params any, each func(data json.RawMessage) error) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return fmt.Errorf("%w (%v)", ErrNoDaemon, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	raw, err := json.Marshal(params)
	if err != nil {
		return err
	}
	if err := json.NewEncoder(conn).Encode(request{Method: method, Params: raw}); err != nil {
		return err
	}
	dec := json.NewDecoder(bufio.NewReader(conn))
	for {
		var resp response
		if err := dec.Decode(&resp); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("control connection lost: %w", err)
		}
		switch {
		case resp.Error != "":
			return errors.New(resp.Error)
		case resp.Done:
			return nil
		case each != nil:
			if err := each(resp.Data); err != nil {
				return err
			}
		}
	}
}

// FindMount returns the vfsfilter mount that contains path and path's
// place inside it ("" for the mountpoint itself). path need not exist, but
// its closest existing ancestor is resolved through symlinks.
func FindMount(path string) (mountpoint, rel string, err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", "", err
	}
	// Resolve symlinks in the existing part of the path only.
	existing, rest := abs, ""
	for {
		if r, err := filepath.EvalSymlinks(existing); err == nil {
			abs = filepath.Join(r, rest)
			break
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			break
		}
		rest = filepath.Join(filepath.Base(existing), rest)
		existing = parent
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	best := ""
	for _, line := range strings.Split(string(data), "\n") {
		// id parent maj:min root mountpoint opts ... - fstype source superopts
		f := strings.Fields(line)
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || sep+1 >= len(f) || f[sep+1] != "fuse.vfsfilter" {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if (abs == mp || strings.HasPrefix(abs, mp+"/") || mp == "/") && len(mp) > len(best) {
			best = mp
		}
	}
	if best == "" {
		return "", "", fmt.Errorf("%s is not inside a vfsfilter mount", path)
	}
	rel, err = filepath.Rel(best, abs)
	if err != nil {
		return "", "", err
	}
	if rel == "." {
		rel = ""
	}
	return best, filepath.ToSlash(rel), nil
}

// unescapeMountinfo undoes the octal escapes (\040 for space) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
