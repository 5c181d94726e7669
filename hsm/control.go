package hsm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vfsfilter/vfsfilter/internal/control"
	"github.com/vfsfilter/vfsfilter/layer"
	"golang.org/x/sys/unix"
)

// FileStatus is one file's HSM state, as "vfsfilter hsm status --json"
// prints it.
type FileStatus struct {
	Path  string `json:"path"`
	State string `json:"state"`
	// Size is the size users see.
	Size int64 `json:"size"`
	// LocalBytes is the space the file takes locally (st_blocks * 512).
	LocalBytes int64  `json:"local_bytes"`
	Pinned     bool   `json:"pinned"`
	ID         string `json:"id,omitempty"`
}

// Status returns the state of the open file fd.
func (f *Filter) Status(fd int) (FileStatus, error) {
	st, err := fstat(fd)
	if err != nil {
		return FileStatus{}, err
	}
	rec, err := readRecordFd(fd)
	if err != nil {
		return FileStatus{}, err
	}
	fs := FileStatus{State: Resident.String(), Size: st.Size, LocalBytes: st.Blocks * 512}
	if rec == nil {
		return fs, nil
	}
	fs.Pinned = rec.Pinned()
	state := rec.State
	if state == Premigrated && (rec.Size != uint64(st.Size) || !rec.Mtime.Equal(time.Unix(st.Mtim.Unix()))) {
		state = Resident // changed behind the filter's back
	}
	fs.State = state.String()
	if state != Resident {
		fs.ID = rec.ID.String()
		fs.Size = int64(rec.Size)
	}
	return fs, nil
}

// SetPinned sets or clears the pinned flag of the open file fd. Pinning a
// migrated file recalls it first: a pinned file is one that stays local.
func (f *Filter) SetPinned(ctx context.Context, fd int, pinned bool) error {
	if pinned {
		if err := f.Recall(ctx, fd); err != nil {
			return err
		}
	}
	rec, err := readRecordFd(fd)
	if err != nil {
		return err
	}
	if rec == nil {
		if !pinned {
			return nil
		}
		rec = &Record{State: Resident}
	}
	if pinned {
		rec.Flags |= FlagPinned
	} else {
		rec.Flags &^= FlagPinned
	}
	wfd, err := reopen(fd, unix.O_RDONLY)
	if err != nil {
		return err
	}
	defer unix.Close(wfd)
	defer f.sizes.forget(wfd)
	if rec.State == Resident && rec.Flags == 0 {
		return removeRecordFd(wfd)
	}
	return writeRecordFd(wfd, rec)
}

// Control methods, registered by RegisterControl. Params and data lines
// are JSON; see cmd/vfsfilter/cmd_hsm.go for the client.
const (
	MethodMigrate = "hsm.migrate"
	MethodRecall  = "hsm.recall"
	MethodStatus  = "hsm.status"
	MethodPin     = "hsm.pin"
)

// Request is the params of every hsm.* method. Paths are relative to the
// mount's root, in the names users see.
type Request struct {
	Paths      []string      `json:"paths"`
	OlderThan  time.Duration `json:"older_than,omitempty"`
	LargerThan int64         `json:"larger_than,omitempty"`
	DryRun     bool          `json:"dry_run,omitempty"`
	Pin        bool          `json:"pin,omitempty"` // hsm.pin: pin (true) or unpin
}

// Message is one data line of an hsm.* method.
type Message struct {
	// Type is "plan" (migrate: what will be done), "file" (one file's
	// result), "progress" (migrate: bytes copied so far) or "summary".
	Type   string `json:"type"`
	Path   string `json:"path,omitempty"`
	Result string `json:"result,omitempty"` // file: migrated, premigrated, skipped, failed, recalled, pinned, ...
	Reason string `json:"reason,omitempty"`
	Size   int64  `json:"size,omitempty"`
	Bytes  int64  `json:"bytes,omitempty"`
	Files  int    `json:"files,omitempty"`
	// Status is set by hsm.status.
	Status *FileStatus `json:"status,omitempty"`
	// Summary counters.
	Migrated int `json:"migrated,omitempty"`
	Skipped  int `json:"skipped,omitempty"`
	Failed   int `json:"failed,omitempty"`
}

// RegisterControl registers the hsm.* methods on srv. top returns the layer
// user paths are resolved through: the top of the mount's stack, so that
// paths are in the names users see (the filters above translate them) and
// files are found however the layers above rename them. It may return nil
// until the mount serves; the methods then fail.
func (f *Filter) RegisterControl(srv *control.Server, top func() layer.Layer) {
	h := func(fn func(ctx context.Context, top layer.Layer, req *Request, send func(any) error) error) control.Handler {
		return func(ctx context.Context, params json.RawMessage, send func(v any) error) error {
			var req Request
			if err := json.Unmarshal(params, &req); err != nil {
				return fmt.Errorf("bad params: %v", err)
			}
			t := top()
			if t == nil {
				return errors.New("the mount is not serving yet")
			}
			return fn(ctx, t, &req, send)
		}
	}
	srv.Handle(MethodMigrate, h(f.ctlMigrate))
	srv.Handle(MethodRecall, h(f.ctlRecall))
	srv.Handle(MethodStatus, h(f.ctlStatus))
	srv.Handle(MethodPin, h(f.ctlPin))
}

// Walk calls fn for every regular file at or under each of paths (relative
// to top's root, in top's names), opened read-only through top for the
// HSM's own use: such opens do not count as users' opens, so Migrate does
// not skip the file for them. fn gets the backing fd, or an error for a
// path that could not be looked up or opened; an error returned by fn ends
// the walk. Symlinks and special files are not visited.
func Walk(ctx context.Context, top layer.Layer, paths []string, fn func(path string, fd int, err error) error) error {
	return walk(ctx, top, paths, fn)
}

func walk(ctx context.Context, top layer.Layer, paths []string, fn func(p string, fd int, err error) error) error {
	c := layer.InternalCall(context.WithValue(ctx, selfKey{}, true))
	var visit func(p string) error
	visit = func(p string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		lk := &layer.LookupOp{Path: p}
		if p != "" {
			if errno := top.Do(c, lk); errno != 0 {
				return fn(p, -1, errno)
			}
		} else {
			lk.Out.Mode = syscall.S_IFDIR
		}
		switch lk.Out.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			rd := &layer.ReaddirOp{Path: p}
			if errno := top.Do(c, rd); errno != 0 {
				return fn(p, -1, errno)
			}
			for _, e := range rd.Entries {
				if err := visit(path.Join(p, e.Name)); err != nil {
					return err
				}
			}
			return nil
		case syscall.S_IFREG:
			op := &layer.OpenOp{Path: p, Flags: syscall.O_RDONLY | syscall.O_NONBLOCK}
			if errno := top.Do(c, op); errno != 0 {
				return fn(p, -1, errno)
			}
			defer top.Do(c, &layer.ReleaseOp{Handle: op.Handle})
			return fn(p, op.Handle.Fd, nil)
		}
		return nil // symlinks, devices: nothing to migrate
	}
	for _, p := range paths {
		p = path.Clean("/" + p)[1:]
		if err := visit(p); err != nil {
			return err
		}
	}
	return nil
}

func (f *Filter) ctlMigrate(ctx context.Context, top layer.Layer, req *Request, send func(any) error) error {
	// Plan first, so the client can show a progress bar with a total.
	type cand struct {
		path string
		size int64
	}
	var cands []cand
	var sum Message
	sum.Type = "summary"
	var planned int64
	cutoff := time.Now().Add(-req.OlderThan)
	err := walk(ctx, top, req.Paths, func(p string, fd int, err error) error {
		if err != nil {
			sum.Failed++
			return send(Message{Type: "file", Path: p, Result: "failed", Reason: err.Error()})
		}
		st, err := fstat(fd)
		if err != nil {
			return err
		}
		fs, err := f.Status(fd)
		if err != nil {
			sum.Failed++
			return send(Message{Type: "file", Path: p, Result: "failed", Reason: err.Error()})
		}
		// Cold means neither read nor written lately. Our own reads
		// use O_NOATIME, so migration attempts do not warm a file.
		last := time.Unix(st.Mtim.Unix())
		if at := time.Unix(st.Atim.Unix()); at.After(last) {
			last = at
		}
		switch {
		case fs.State == Migrated.String(), fs.Pinned, st.Size == 0:
			return nil // nothing to do, and nothing worth a line
		case req.OlderThan > 0 && last.After(cutoff), st.Size <= req.LargerThan:
			return nil // filtered out
		}
		cands = append(cands, cand{p, st.Size})
		planned += st.Size
		return nil
	})
	if err != nil {
		return err
	}
	if err := send(Message{Type: "plan", Files: len(cands), Bytes: planned}); err != nil {
		return err
	}
	if req.DryRun {
		for _, c := range cands {
			if err := send(Message{Type: "file", Path: c.path, Result: "would migrate", Size: c.size}); err != nil {
				return err
			}
		}
		sum.Bytes = planned
		sum.Files = len(cands)
		return send(sum)
	}
	var base atomic.Int64
	lastSent := time.Now()
	for _, c := range cands {
		err := walk(ctx, top, []string{c.path}, func(p string, fd int, err error) error {
			if err != nil {
				sum.Failed++
				return send(Message{Type: "file", Path: p, Result: "failed", Reason: err.Error()})
			}
			res, err := f.Migrate(ctx, fd, func(n int64) {
				if time.Since(lastSent) > 100*time.Millisecond {
					lastSent = time.Now()
					send(Message{Type: "progress", Bytes: base.Load() + n})
				}
			})
			base.Add(c.size)
			msg := Message{Type: "file", Path: p, Result: string(res.Outcome), Size: res.Size}
			switch {
			case err != nil:
				if ctx.Err() != nil {
					return ctx.Err()
				}
				msg.Result, msg.Reason = "failed", err.Error()
				sum.Failed++
			case res.Outcome == OutMigrated:
				sum.Migrated++
				sum.Bytes += res.Size
			default:
				if res.Reason != nil {
					msg.Reason = res.Reason.Error()
				}
				sum.Skipped++
			}
			if err := send(Message{Type: "progress", Bytes: base.Load()}); err != nil {
				return err
			}
			return send(msg)
		})
		if err != nil {
			return err
		}
	}
	sum.Files = len(cands)
	return send(sum)
}

func (f *Filter) ctlRecall(ctx context.Context, top layer.Layer, req *Request, send func(any) error) error {
	sum := Message{Type: "summary"}
	err := walk(ctx, top, req.Paths, func(p string, fd int, err error) error {
		if err == nil {
			var fs FileStatus
			if fs, err = f.Status(fd); err == nil && fs.State != Migrated.String() {
				return nil
			}
			if err == nil {
				err = f.Recall(ctx, fd)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			sum.Failed++
			return send(Message{Type: "file", Path: p, Result: "failed", Reason: err.Error()})
		}
		sum.Files++
		return send(Message{Type: "file", Path: p, Result: "recalled"})
	})
	if err != nil {
		return err
	}
	return send(sum)
}

// StatusOf is Status of the file that Walk found at p and opened as fd,
// with the size users see: what the top of the stack reports for p, since a
// filter above the HSM (crypt) may translate sizes. LocalBytes stays what
// the HSM keeps locally.
func (f *Filter) StatusOf(ctx context.Context, top layer.Layer, p string, fd int) (FileStatus, error) {
	fs, err := f.Status(fd)
	if err != nil {
		return fs, err
	}
	fs.Path = p
	lk := &layer.LookupOp{Path: p}
	if p != "" && top.Do(layer.InternalCall(ctx), lk) == 0 {
		fs.Size = int64(lk.Out.Size)
	}
	return fs, nil
}

func (f *Filter) ctlStatus(ctx context.Context, top layer.Layer, req *Request, send func(any) error) error {
	return walk(ctx, top, req.Paths, func(p string, fd int, err error) error {
		if err == nil {
			var fs FileStatus
			if fs, err = f.StatusOf(ctx, top, p, fd); err == nil {
				return send(Message{Type: "file", Path: p, Status: &fs})
			}
		}
		return send(Message{Type: "file", Path: p, Result: "failed", Reason: err.Error()})
	})
}

func (f *Filter) ctlPin(ctx context.Context, top layer.Layer, req *Request, send func(any) error) error {
	sum := Message{Type: "summary"}
	word := map[bool]string{true: "pinned", false: "unpinned"}[req.Pin]
	err := walk(ctx, top, req.Paths, func(p string, fd int, err error) error {
		if err == nil {
			err = f.SetPinned(ctx, fd, req.Pin)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			sum.Failed++
			return send(Message{Type: "file", Path: p, Result: "failed", Reason: err.Error()})
		}
		sum.Files++
		return send(Message{Type: "file", Path: p, Result: word})
	})
	if err != nil {
		return err
	}
	return send(sum)
}
