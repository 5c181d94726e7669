// Package durable holds the write-and-fsync step that the project's small
// files of record share: the settings file and the files crypt fsck
// repairs. Either one half-written after a crash loses data for good, so
// each is on disk before the caller goes on.
package durable

import "os"

// WriteClose writes data to f, waits until it has reached the disk
// (fsync) and closes f. f is closed in every case; the first error is
// returned, so a failed write or sync is never hidden by a clean close.
func WriteClose(f *os.File, data []byte) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
