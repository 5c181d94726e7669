package integration

import (
	"bytes"
	"crypto/rand"
	"os"
	"strings"
	"testing"

	"github.com/vfsfilter/vfsfilter/internal/s3test"
)

// TestHSMOnS3 runs the HSM through the binary against a real S3 server
// (versitygw on loopback), configured the way S3 users do it: AWS_*
// variables and a path-style endpoint. Data large enough for multipart
// upload migrates, the stub shows the real size, and reading recalls it.
func TestHSMOnS3(t *testing.T) {
	requireFUSE(t)
	s3 := s3test.Start(t)
	for _, kv := range s3.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	backing, mnt := t.TempDir(), t.TempDir()
	if r := vfsfilter(t, "init", "--hsm-store", "s3://vfsfilter-it/cold", backing); r.code != 0 {
		t.Fatalf("init: exit %d\n%s", r.code, r.stderr)
	}
	mountDaemon(t, backing, mnt)

	big := make([]byte, 24<<20) // above the client's multipart threshold
	rand.Read(big)
	if err := os.WriteFile(mnt+"/big", big, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := vfsfilter(t, "hsm", "migrate", mnt); r.code != 0 || !strings.Contains(r.stdout, "migrated 1 files") {
		t.Fatalf("migrate: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r := vfsfilter(t, "hsm", "status", "--json", mnt+"/big")
	if !strings.Contains(r.stdout, `"state":"migrated"`) || !strings.Contains(r.stdout, `"size":25165824`) {
		t.Fatalf("status after migrate: %s%s", r.stdout, r.stderr)
	}
	if st, err := os.Stat(backing + "/big"); err != nil || st.Size() != 0 {
		t.Fatalf("backing file is not a stub: %v %v", st, err)
	}
	if st, err := os.Stat(mnt + "/big"); err != nil || st.Size() != int64(len(big)) {
		t.Fatalf("size through the mount: %v %v", st, err)
	}
	got, err := os.ReadFile(mnt + "/big")
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("recall from S3: %d bytes, %v; want the original %d bytes", len(got), err, len(big))
	}
}
