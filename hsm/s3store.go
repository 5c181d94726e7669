package hsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Store keeps objects in an S3-compatible bucket under a prefix, with
// minio-go. Objects above the part size go up as multipart uploads (S3 only
// shows a multipart object once it is complete, which gives Put's
// all-or-nothing contract); reads are ranged GETs.
type S3Store struct {
	client *minio.Client
	bucket string
	prefix string
	desc   string
}

// S3Config overrides what NewS3Store reads from the environment. Zero
// fields fall back to the environment.
type S3Config struct {
	Endpoint        string // URL, e.g. http://127.0.0.1:7070
	Region          string
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	// PartSize is the multipart part size (default 16 MiB).
	PartSize uint64
}

// parseS3URL splits s3://bucket/prefix.
func parseS3URL(spec string) (bucket, prefix string, err error) {
	u, err := url.Parse(spec)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return "", "", fmt.Errorf("store %q: want s3://bucket/prefix", spec)
	}
	return u.Host, strings.Trim(u.Path, "/"), nil
}

// NewS3Store returns the store for s3://bucket/prefix. It is configured the
// way AWS tools are: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
// AWS_SESSION_TOKEN, AWS_REGION (or AWS_DEFAULT_REGION) and
// AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) for a self-hosted server, which
// is then addressed path-style (http://host/bucket/key), as MinIO,
// versitygw and Ceph expect. Without an endpoint it talks to AWS with
// virtual-host-style addressing. cfg may be nil.
func NewS3Store(spec string, cfg *S3Config) (*S3Store, error) {
	bucket, prefix, err := parseS3URL(spec)
	if err != nil {
		return nil, err
	}
	var c S3Config
	if cfg != nil {
		c = *cfg
	}
	env := func(v *string, names ...string) {
		for _, n := range names {
			if *v == "" {
				*v = os.Getenv(n)
			}
		}
	}
	env(&c.Endpoint, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
	env(&c.Region, "AWS_REGION", "AWS_DEFAULT_REGION")
	env(&c.AccessKeyID, "AWS_ACCESS_KEY_ID")
	env(&c.SecretAccessKey, "AWS_SECRET_ACCESS_KEY")
	env(&c.SessionToken, "AWS_SESSION_TOKEN")
	if c.PartSize == 0 {
		c.PartSize = 16 << 20
	}
	host, secure, lookup := "s3.amazonaws.com", true, minio.BucketLookupAuto
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("S3 endpoint %q: want http(s)://host[:port]", c.Endpoint)
		}
		host, secure, lookup = u.Host, u.Scheme == "https", minio.BucketLookupPath
	} else if c.Region != "" {
		host = "s3." + c.Region + ".amazonaws.com"
	}
	var creds *credentials.Credentials
	if c.AccessKeyID != "" {
		creds = credentials.NewStaticV4(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
	} else {
		// Instance roles and the shared credentials file, as the AWS
		// CLI would find them.
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.FileAWSCredentials{},
			&credentials.IAM{Client: &http.Client{Transport: http.DefaultTransport}},
		})
	}
	cl, err := minio.New(host, &minio.Options{
		Creds:        creds,
		Secure:       secure,
		Region:       c.Region,
		BucketLookup: lookup,
		// Bounded by the caller's context anyway; a few retries ride
		// out a dropped connection without hiding a store that is down.
		MaxRetries: 3,
	})
	if err != nil {
		return nil, err
	}
	desc := "s3://" + bucket
	if prefix != "" {
		desc += "/" + prefix
	}
	if c.Endpoint != "" {
		desc += " at " + c.Endpoint
	}
	return &S3Store{client: cl, bucket: bucket, prefix: prefix, desc: desc}, nil
}

// String implements Store.
func (s *S3Store) String() string { return s.desc }

func (s *S3Store) key(k string) string {
	if s.prefix == "" {
		return k
	}
	return path.Join(s.prefix, k)
}

// mapErr turns a missing key into ErrNotFound.
func mapErr(key string, err error) error {
	if err == nil {
		return nil
	}
	resp := minio.ToErrorResponse(err)
	if resp.Code == minio.NoSuchKey || resp.StatusCode == http.StatusNotFound && resp.Code != minio.NoSuchBucket {
		return fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	return err
}

// Put implements Store.
func (s *S3Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	_, err := s.client.PutObject(ctx, s.bucket, s.key(key), r, size, minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		PartSize:    16 << 20,
		// Parts are read sequentially from r; concurrency would need
		// a buffer per part.
		NumThreads: 1,
	})
	return err
}

// GetRange implements Store.
func (s *S3Store) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if n == 0 {
		if _, err := s.Stat(ctx, key); err != nil {
			return nil, err
		}
		return io.NopCloser(strings.NewReader("")), nil
	}
	opts := minio.GetObjectOptions{}
	if err := opts.SetRange(off, off+n-1); err != nil {
		return nil, err
	}
	// Use the low-level call so that the status (404, range errors) is
	// known before the first Read, not inside it.
	core := minio.Core{Client: s.client}
	body, _, _, err := core.GetObject(ctx, s.bucket, s.key(key), opts)
	if err != nil {
		return nil, mapErr(key, err)
	}
	return &exactReader{rc: body, left: n}, nil
}

// exactReader fails a body that ends before n bytes instead of letting a
// short object pass as complete.
type exactReader struct {
	rc   io.ReadCloser
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.rc.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if e.left == 0 && err == nil {
		err = nil
	}
	return n, err
}

func (e *exactReader) Close() error { return e.rc.Close() }

// Stat implements Store.
func (s *S3Store) Stat(ctx context.Context, key string) (int64, error) {
	info, err := s.client.StatObject(ctx, s.bucket, s.key(key), minio.StatObjectOptions{})
	if err != nil {
		return 0, mapErr(key, err)
	}
	return info.Size, nil
}

// Delete implements Store.
func (s *S3Store) Delete(ctx context.Context, key string) error {
	err := s.client.RemoveObject(ctx, s.bucket, s.key(key), minio.RemoveObjectOptions{})
	if errors.Is(mapErr(key, err), ErrNotFound) {
		return nil
	}
	return err
}

// EnsureBucket creates the bucket if it does not exist (for tests and
// "vfsfilter init").
func (s *S3Store) EnsureBucket(ctx context.Context) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil || ok {
		return err
	}
	return s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{})
}
