package harness

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// RegistryBinary is the docker-registry (distribution v2) executable StartRegistry runs.
var RegistryBinary = "/usr/bin/docker-registry"

// Registry is a running docker-registry with a counting, fault-injecting reverse proxy in
// front of it. Clients under test must use Addr; Push uses DirectAddr.
type Registry struct {
	Addr       string // host:port of the proxy; what clients under test use
	DirectAddr string // host:port of docker-registry itself
	StorageDir string // the registry's filesystem storage root
	LogFile    string // the registry's stderr (log level warn)

	extraConfig string // appended to config.yml
	pgid        int    // docker-registry's process group (Kill)

	mu     sync.Mutex
	counts Counts
	fault  Fault
}

// Counts are the requests the proxy saw since start or the last ResetStats.
type Counts struct {
	Requests      int                   // every request, faulted ones included
	ManifestGETs  int                   // GET /v2/<name>/manifests/<ref>
	ManifestHEADs int                   // HEAD /v2/<name>/manifests/<ref>
	BlobGETs      int                   // GET /v2/<name>/blobs/<digest>, ranged ones included
	BlobHEADs     int                   // HEAD /v2/<name>/blobs/<digest>
	RangeGETs     int                   // blob GETs that carried a Range header (partial pulls)
	BlobGETsBy    map[digest.Digest]int // blob GETs per digest
	BlobBytes     int64                 // response body bytes written for blob GETs
	Log           []Request             // every request, in completion order
}

// Request is one proxied request as recorded in Counts.Log.
type Request struct {
	Method, Path, Range string
	Status              int
	Bytes               int64
	Faulted             bool // a Fault handled it
}

// Fault inspects a request before it is proxied; returning true means it wrote the
// response itself and the request is not forwarded.
type Fault func(w http.ResponseWriter, r *http.Request) bool

var (
	manifestRe = regexp.MustCompile(`^/v2/.+/manifests/[^/]+$`)
	blobRe     = regexp.MustCompile(`^/v2/.+/blobs/([a-z0-9]+:[a-f0-9]+)$`)
)

// StartRegistry starts docker-registry (storage in t.TempDir(), deletes enabled, no auth)
// and the counting proxy, waits until /v2/ answers, and registers t.Cleanup to stop both.
func StartRegistry(t testing.TB) *Registry {
	t.Helper()
	return startRegistry(t, "")
}

// startRegistry is StartRegistry with extraConfig appended to docker-registry's config.yml
// (e.g. a proxy: section, see StartPullThroughCache).
func startRegistry(t testing.TB, extraConfig string) *Registry {
	t.Helper()
	RequireCommand(t, RegistryBinary)
	dir := t.TempDir()
	r := &Registry{StorageDir: filepath.Join(dir, "storage"), LogFile: filepath.Join(dir, "registry.log"), extraConfig: extraConfig}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = r.startProcess(t, dir); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("start registry: %v", err)
	}
	r.startProxy(t)
	return r
}

func (r *Registry) startProcess(t testing.TB, dir string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	r.DirectAddr = fmt.Sprintf("127.0.0.1:%d", port)
	cfg := filepath.Join(dir, "config.yml")
	conf := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: bootstore-harness
%s`, r.StorageDir, r.DirectAddr, r.extraConfig)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		return err
	}
	logf, err := os.OpenFile(r.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(RegistryBinary, "serve", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	r.pgid = cmd.Process.Pid
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	if err := waitRegistry(http.DefaultClient, "http://"+r.DirectAddr+"/v2/", http.StatusOK, exited, r.LogFile); err != nil {
		stop()
		return err
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("docker-registry log tail:\n%s", tail(r.LogFile))
		}
	})
	return nil
}

func (r *Registry) startProxy(t testing.TB) {
	target := &url.URL{Scheme: "http", Host: r.DirectAddr}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // registry builds Location URLs that point back at the proxy
		},
		FlushInterval: -1,
	}
	// Proxy errors (mostly clients killed mid-body, which tests do on purpose) go to the log file.
	if f, err := os.OpenFile(r.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		t.Cleanup(func() { f.Close() })
		rp.ErrorLog = log.New(f, "harness proxy: ", log.LstdFlags)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	r.Addr = ln.Addr().String()
	srv := &http.Server{ErrorLog: rp.ErrorLog, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rec := &recordingWriter{ResponseWriter: w, status: http.StatusOK}
		r.mu.Lock()
		f := r.fault
		r.mu.Unlock()
		faulted := f != nil && f(rec, req)
		if !faulted {
			rp.ServeHTTP(rec, req)
		}
		r.record(req, rec, faulted)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

func (r *Registry) record(req *http.Request, rec *recordingWriter, faulted bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &r.counts
	c.Requests++
	c.Log = append(c.Log, Request{Method: req.Method, Path: req.URL.Path, Range: req.Header.Get("Range"),
		Status: rec.status, Bytes: rec.n, Faulted: faulted})
	switch p := req.URL.Path; {
	case manifestRe.MatchString(p) && req.Method == http.MethodGet:
		c.ManifestGETs++
	case manifestRe.MatchString(p) && req.Method == http.MethodHead:
		c.ManifestHEADs++
	case blobRe.MatchString(p) && req.Method == http.MethodHead:
		c.BlobHEADs++
	case blobRe.MatchString(p) && req.Method == http.MethodGet:
		c.BlobGETs++
		if req.Header.Get("Range") != "" {
			c.RangeGETs++
		}
		if c.BlobGETsBy == nil {
			c.BlobGETsBy = map[digest.Digest]int{}
		}
		c.BlobGETsBy[digest.Digest(blobRe.FindStringSubmatch(p)[1])]++
		c.BlobBytes += rec.n
	}
}

// Stats returns a copy of the counts since start or the last ResetStats.
func (r *Registry) Stats() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.counts
	c.BlobGETsBy = make(map[digest.Digest]int, len(r.counts.BlobGETsBy))
	for k, v := range r.counts.BlobGETsBy {
		c.BlobGETsBy[k] = v
	}
	c.Log = append([]Request(nil), r.counts.Log...)
	return c
}

// ResetStats zeroes the counts.
func (r *Registry) ResetStats() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts = Counts{}
}

// SetFault installs f in front of the proxy (replacing any previous fault); nil clears it.
func (r *Registry) SetFault(f Fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fault = f
}

// ClearFault removes the installed fault; requests are proxied normally again.
func (r *Registry) ClearFault() { r.SetFault(nil) }

// Ref returns "ADDR/repoTag" with ADDR the proxy, e.g. Ref("os:v1") = "127.0.0.1:N/os:v1".
func (r *Registry) Ref(repoTag string) string { return r.Addr + "/" + repoTag }

// DirectRef is Ref against the registry itself, bypassing the proxy and its counters.
func (r *Registry) DirectRef(repoTag string) string { return r.DirectAddr + "/" + repoTag }

// BlobPath is the stored data file of blob d in the registry's storage (overwrite it to
// corrupt the blob; the registry serves it unchecked).
func (r *Registry) BlobPath(d digest.Digest) string {
	return filepath.Join(r.StorageDir, "docker", "registry", "v2", "blobs",
		d.Algorithm().String(), d.Encoded()[:2], d.Encoded(), "data")
}

// waitRegistry waits up to 15 s until url answers with status, or fails
// when the registry process exits first (exited closes).
func waitRegistry(client *http.Client, url string, status int, exited <-chan struct{}, logFile string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == status {
				return nil
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("docker-registry exited early: %s", tail(logFile))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("docker-registry not ready on %s (%v): %s", url, err, tail(logFile))
		}
	}
}

// UnreachableAddr returns a 127.0.0.1 host:port where connections are refused: the port is
// bound (so nothing else takes it) but never listened on, until the test ends.
func UnreachableAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the last 4 KiB of file p.
func tail(p string) string {
	data, err := os.ReadFile(p)
	if err != nil {
		return err.Error()
	}
	// A push asks for every blob with HEAD first, and the registry logs each
	// 404 as an error: those would fill the tail and hide what matters.
	var b []byte
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if bytes.Contains(line, []byte("http.request.method=HEAD")) && bytes.Contains(line, []byte(`err.code="blob unknown"`)) {
			continue
		}
		b = append(b, line...)
	}
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

// recordingWriter records the status and body bytes of a response.
type recordingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *recordingWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush on the real writer.
func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush implements http.Flusher (httputil.ReverseProxy streams through it).
func (w *recordingWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

var errNotBlob = errors.New("not a blob GET")

// blobDigest returns the digest of a blob GET request.
func blobDigest(req *http.Request) (digest.Digest, error) {
	m := blobRe.FindStringSubmatch(req.URL.Path)
	if req.Method != http.MethodGet || m == nil {
		return "", errNotBlob
	}
	return digest.Digest(m[1]), nil
}
