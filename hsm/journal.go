package hsm

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vfsfilter/vfsfilter/internal/settings"
	"golang.org/x/sys/unix"
)

// The journal lists the work in flight, one file per migration or recall,
// in BACKING/.vfsfilter/hsm/journal/OP-ID. An entry is written (durably)
// before the work touches the file or the store and removed when the file
// is in a consistent state again, so after a crash (kill -9, power loss)
// the entries left are exactly the files that may need repair. Recovery at
// the next mount looks at each file's record to see how far the work got:
//
//	migrate, no record with this id    copy phase: delete the orphan object
//	migrate, premigrated               consistent: the file keeps its data
//	migrate, migrated, data present    release phase: finish it (truncate)
//	recall,  migrated                  roll back: truncate to an empty stub
//	                                   with its old mtime
//
// Journal entries name files by their backing path at the time the work
// started. Nothing renames a file while its work is in flight except a
// user through the mount, whose daemon is then alive to finish the work
// itself; a file that cannot be found is logged and its object kept.
type journalEntry struct {
	Op    string    `json:"op"` // "migrate" or "recall"
	ID    string    `json:"id"`
	Path  string    `json:"path"`  // relative to the backing directory
	Mtime int64     `json:"mtime"` // ns; recall: the stub's mtime to restore
	Time  time.Time `json:"time"`
}

type journalHandle struct {
	f    *Filter
	path string
}

func (f *Filter) journalBegin(e journalEntry) (*journalHandle, error) {
	e.Time = time.Now().UTC()
	data, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	p := filepath.Join(f.jdir, e.Op+"-"+e.ID)
	if err := settings.WriteFileAtomic(p, append(data, '\n'), 0o600); err != nil {
		return nil, err
	}
	return &journalHandle{f: f, path: p}, nil
}

func (j *journalHandle) end() {
	if err := os.Remove(j.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		j.f.log.Warn("hsm: journal entry not removed; the next mount re-checks the file", "entry", j.path, "err", err)
	}
}

// recover repairs what the journal lists. A store that cannot be reached
// leaves the entry for the next mount; nothing here can lose data.
func (f *Filter) recover() {
	ents, err := os.ReadDir(f.jdir)
	if err != nil {
		f.log.Error("hsm: cannot read the journal", "dir", f.jdir, "err", err)
		return
	}
	for _, de := range ents {
		if strings.HasPrefix(de.Name(), ".") {
			os.Remove(filepath.Join(f.jdir, de.Name())) // a torn temporary file
			continue
		}
		p := filepath.Join(f.jdir, de.Name())
		data, err := os.ReadFile(p)
		var e journalEntry
		if err == nil {
			err = json.Unmarshal(data, &e)
		}
		var id ID
		if err == nil {
			var b []byte
			b, err = hex.DecodeString(e.ID)
			if err == nil && len(b) != len(id) {
				err = errors.New("bad id")
			}
			copy(id[:], b)
		}
		if err != nil {
			f.log.Error("hsm: damaged journal entry left in place", "entry", p, "err", err)
			continue
		}
		if f.repair(&e, id) {
			os.Remove(p)
		}
	}
}

// repair finishes or rolls back one entry's work; it reports whether the
// entry is done with.
func (f *Filter) repair(e *journalEntry, id ID) bool {
	ctx, cancel := context.WithTimeout(f.ctx, f.cfg.Timeout)
	defer cancel()
	log := f.log.With("file", e.Path, "object", e.ID)
	fd, err := f.openBeneath(e.Path)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			log.Warn("hsm recovery: file of an interrupted " + e.Op + " is gone; its object is kept")
			return true
		}
		log.Error("hsm recovery: cannot open the file of an interrupted "+e.Op, "err", err)
		return false
	}
	defer unix.Close(fd)
	h := struct{ Fd int }{fd}
	rec, err := readRecordFd(h.Fd)
	if err != nil {
		log.Error("hsm recovery: bad record", "err", err)
		return false
	}
	mine := rec != nil && rec.ID == id
	st, err := fstat(h.Fd)
	if err != nil {
		return false
	}
	switch {
	case e.Op == "recall" && mine && rec.State == Migrated:
		unix.Ftruncate(h.Fd, 0)
		setMtime(h.Fd, unix.NsecToTimespec(e.Mtime))
		if err := unix.Fsync(h.Fd); err != nil {
			return false
		}
		log.Info("hsm recovery: rolled back an interrupted recall; the file is an intact stub")
	case e.Op == "migrate" && !mine:
		if err := f.store.Delete(ctx, e.ID); err != nil {
			log.Error("hsm recovery: cannot delete the object of an interrupted migration; will retry at the next mount", "err", err)
			return false
		}
		log.Info("hsm recovery: rolled back an interrupted migration; the file stays resident")
	case e.Op == "migrate" && rec.State == Migrated && st.Size > 0:
		// The record said migrated before the data went: the object
		// was verified then, so the release can be finished.
		if err := unix.Ftruncate(h.Fd, 0); err != nil {
			return false
		}
		setMtime(h.Fd, unix.NsecToTimespec(rec.Mtime.UnixNano()))
		if err := unix.Fsync(h.Fd); err != nil {
			return false
		}
		log.Info("hsm recovery: finished an interrupted migration")
	default:
		log.Info("hsm recovery: interrupted " + e.Op + " left the file consistent")
	}
	return true
}

// openBeneath opens a journaled file for recovery. Recovery runs while the
// stack is being built, before ops can be sent below (layer.NewStack wires
// the op chains only after every filter attached), so it opens the file
// itself, as safely as the passthrough would: relative to the backing
// directory, refusing symlinks and anything outside it.
func (f *Filter) openBeneath(rel string) (int, error) {
	root, err := unix.Open(f.cfg.Backing, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(root)
	how := unix.OpenHow{
		Flags:   unix.O_RDWR | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(root, rel, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}
