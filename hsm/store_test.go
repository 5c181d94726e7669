package hsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vfsfilter/vfsfilter/internal/s3test"
)

// versitygwBin finds the pinned versitygw that .ci/setup-hsm.sh installs.
func versitygwBin() string { return s3test.Binary() }

// s3Server is a real versitygw on loopback with its posix backend in a
// temporary directory.
type s3Server struct {
	endpoint string
	cmd      *exec.Cmd
	dir      string
	port     string
}

const testAccess, testSecret = "vfsfilter-test", "vfsfilter-test-secret"

// startS3 starts versitygw, or skips (fails in CI) when it is not installed.
func startS3(t testing.TB) *s3Server {
	t.Helper()
	bin := versitygwBin()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("versitygw is not installed; run .ci/setup-hsm.sh")
		}
		t.Skip("versitygw not installed (run .ci/setup-hsm.sh)")
	}
	s := &s3Server{dir: t.TempDir()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s.port = fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	s.endpoint = "http://127.0.0.1:" + s.port
	s.start(t, bin)
	t.Cleanup(s.stop)
	return s
}

func (s *s3Server) start(t testing.TB, bin string) {
	t.Helper()
	s.cmd = exec.Command(bin, "--access", testAccess, "--secret", testSecret, "--port", "127.0.0.1:"+s.port, "posix", s.dir)
	s.cmd.Stdout, s.cmd.Stderr = io.Discard, io.Discard
	if testing.Verbose() {
		s.cmd.Stderr = os.Stderr
	}
	require.NoError(t, s.cmd.Start())
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(s.endpoint)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			s.stop()
			t.Fatalf("versitygw did not come up on %s: %v", s.endpoint, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop kills the server (as a crash would) and waits for it.
func (s *s3Server) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

func (s *s3Server) store(t testing.TB, bucket string) *S3Store {
	t.Helper()
	st, err := NewS3Store("s3://"+bucket+"/some/prefix", &S3Config{Endpoint: s.endpoint, Region: "us-east-1", AccessKeyID: testAccess, SecretAccessKey: testSecret})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, st.EnsureBucket(ctx))
	return st
}

// testStore is the one contract suite every Store passes.
func testStore(t *testing.T, st Store) {
	ctx := context.Background()
	key := NewID().String()
	_, err := st.Stat(ctx, key)
	assert.ErrorIs(t, err, ErrNotFound)
	_, err = st.GetRange(ctx, key, 0, 1)
	assert.ErrorIs(t, err, ErrNotFound)
	require.NoError(t, st.Delete(ctx, key), "deleting a missing object is fine")

	for _, size := range []int{1, 4096, 20<<20 + 7} { // the last is multipart on S3
		data := randBytes(size)
		require.NoError(t, st.Put(ctx, key, bytes.NewReader(data), int64(size)))
		n, err := st.Stat(ctx, key)
		require.NoError(t, err)
		require.EqualValues(t, size, n)
		for _, r := range [][2]int64{{0, int64(size)}, {int64(size) - 1, 1}, {int64(size) / 3, int64(size) / 3}} {
			rc, err := st.GetRange(ctx, key, r[0], r[1])
			require.NoError(t, err)
			got, err := io.ReadAll(rc)
			rc.Close()
			require.NoError(t, err)
			require.True(t, bytes.Equal(data[r[0]:r[0]+r[1]], got), "range %v", r)
		}
	}
	require.NoError(t, st.Delete(ctx, key))
	_, err = st.Stat(ctx, key)
	assert.ErrorIs(t, err, ErrNotFound)

	// A Put whose reader fails leaves no object.
	err = st.Put(ctx, key, io.MultiReader(bytes.NewReader(make([]byte, 1000)), errReader{}), 5000)
	require.Error(t, err)
	_, err = st.Stat(ctx, key)
	assert.ErrorIs(t, err, ErrNotFound)
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("source failed") }

func TestDirStore(t *testing.T) {
	st, err := CreateDirStore(filepath.Join(t.TempDir(), "store"))
	require.NoError(t, err)
	testStore(t, st)
}

func TestS3Store(t *testing.T) {
	srv := startS3(t)
	testStore(t, srv.store(t, "contract"))
}

func TestOpenStore(t *testing.T) {
	for spec, want := range map[string]string{
		"/srv/cold":          "file:///srv/cold",
		"file:///srv/cold/":  "file:///srv/cold",
		"s3://bucket/prefix": "s3://bucket/prefix",
	} {
		got, err := CanonicalStore(spec)
		require.NoError(t, err, spec)
		assert.Equal(t, want, got)
	}
	for _, bad := range []string{"relative/dir", "file://host/x", "s3:///nobucket", "ftp://x"} {
		_, err := CanonicalStore(bad)
		assert.Error(t, err, bad)
	}
	t.Setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")
	t.Setenv("AWS_ACCESS_KEY_ID", "a")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "b")
	st, err := OpenStore("s3://b/p")
	require.NoError(t, err)
	assert.Equal(t, "s3://b/p at http://127.0.0.1:1", st.String())
}

// TestS3Tier runs the HSM over a real S3 server: a multipart object, a
// ranged first read, and a server that dies (EIO within the timeout, stub
// unchanged).
func TestS3Tier(t *testing.T) {
	srv := startS3(t)
	st := srv.store(t, "tier")
	r := newRig(t, rigOpts{store: func(testing.TB) Store { return st }, timeout: 3 * time.Second})
	data := randBytes(40<<20 + 3) // 40 MiB: multipart (16 MiB parts)
	p := filepath.Join(r.mnt, "big")
	require.NoError(t, os.WriteFile(p, data, 0o644))
	require.Equal(t, OutMigrated, r.migrate(t, "big").Outcome)
	fs := r.status(t, "big")
	n, err := st.Stat(context.Background(), fs.ID)
	require.NoError(t, err)
	assert.Greater(t, n, int64(len(data)))

	// A read far into the file is served by a ranged read at once.
	fd, err := os.Open(p)
	require.NoError(t, err)
	buf := make([]byte, 4096)
	_, err = fd.ReadAt(buf, 39<<20)
	require.NoError(t, err)
	assert.Equal(t, data[39<<20:39<<20+4096], buf)
	got, err := io.ReadAll(fd)
	require.NoError(t, err)
	fd.Close()
	require.True(t, bytes.Equal(data, got))

	// Store down: EIO after a bounded wait, stub unchanged.
	require.NoError(t, os.WriteFile(filepath.Join(r.mnt, "small"), randBytes(100000), 0o644))
	require.Equal(t, OutMigrated, r.migrate(t, "small").Outcome)
	srv.stop()
	start := time.Now()
	_, err = os.ReadFile(filepath.Join(r.mnt, "small"))
	assert.ErrorIs(t, err, syscall.EIO)
	assert.Less(t, time.Since(start), 20*time.Second)
	assert.Equal(t, "migrated", r.status(t, "small").State)
}

// TestDirStoreNeverRecreatesItsDirectory: a store directory that vanished
// is a store that is down; writing must fail rather than start a new,
// empty store in its place.
func TestDirStoreNeverRecreatesItsDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	st, err := NewDirStore(dir)
	require.NoError(t, err)
	err = st.Put(context.Background(), "abcdef0123", strings.NewReader("x"), 1)
	require.Error(t, err)
	_, serr := os.Stat(dir)
	require.True(t, os.IsNotExist(serr), "the store directory must not be created by a write")
}
