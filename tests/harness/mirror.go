package harness

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// StartPullThroughCache starts a second docker-registry in proxy mode (a pull-through
// cache) whose upstream is the registry at upstreamAddr (give the upstream's Addr, so the
// upstream's counters see exactly what the cache fetched), behind its own counting proxy.
// The cache is read-only: push to the upstream.
func StartPullThroughCache(t testing.TB, upstreamAddr string) *Registry {
	t.Helper()
	return startRegistry(t, fmt.Sprintf("proxy:\n  remoteurl: http://%s\n", upstreamAddr))
}

// MirrorsConf writes a registries.conf that sends pulls of every image under primary
// ("host:port") to the mirrors ("host:port") first, in order, then to primary, all over
// plain HTTP, and returns its path (for CONTAINERS_REGISTRIES_CONF).
func MirrorsConf(t testing.TB, primary string, mirrors ...string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "unqualified-search-registries = []\n\n[[registry]]\nlocation = %q\ninsecure = true\n", primary)
	for _, m := range mirrors {
		fmt.Fprintf(&b, "\n[[registry.mirror]]\nlocation = %q\ninsecure = true\n", m)
	}
	return writeTemp(t, "registries.conf", b.String())
}

// GoDown makes the registry look dead: the proxy closes every connection without an
// answer, as a crashed or unplugged host would (clients see EOF or a reset). ClearFault
// brings it back. It replaces any installed fault.
func (r *Registry) GoDown() {
	r.SetFault(func(w http.ResponseWriter, req *http.Request) bool {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
			return true
		}
		http.Error(w, "harness: down", http.StatusServiceUnavailable)
		return true
	})
}

// ServeManifestFor makes the registry answer manifest requests for reference ref (a tag
// or "sha256:..." digest, in any repository) with the manifest that repo:other has in
// this registry: a mirror serving other content than its name says. It replaces any
// installed fault.
func (r *Registry) ServeManifestFor(ref, repo, other string) {
	r.SetFault(func(w http.ResponseWriter, req *http.Request) bool {
		if !manifestRe.MatchString(req.URL.Path) || !strings.HasSuffix(req.URL.Path, "/manifests/"+ref) {
			return false
		}
		out, err := http.NewRequestWithContext(req.Context(), req.Method,
			"http://"+r.DirectAddr+"/v2/"+repo+"/manifests/"+other, nil)
		if err != nil {
			return false
		}
		out.Header["Accept"] = req.Header["Accept"]
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return true
		}
		defer resp.Body.Close()
		for _, h := range []string{"Content-Type", "Content-Length", "Docker-Content-Digest"} {
			if v := resp.Header.Get(h); v != "" {
				w.Header().Set(h, v)
			}
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		return true
	})
}

// Kill kills docker-registry (SIGKILL to its process group), cutting the responses in
// flight, and makes the proxy close every later connection (GoDown): a mirror dying
// mid-transfer. The registry stays dead; t.Cleanup still tidies up.
func (r *Registry) Kill() {
	r.GoDown()
	_ = syscall.Kill(-r.pgid, syscall.SIGKILL)
}

// DieMidBlob makes the registry die during the first blob GET whose body is larger than
// minSize: the proxy sends the status, headers and half of the body, then closes the
// connection, and from then on closes every connection (GoDown). docker-registry itself
// keeps running; use it for a mirror that crashes mid-transfer.
func (r *Registry) DieMidBlob(minSize int64) {
	var died atomic.Bool
	r.SetFault(func(w http.ResponseWriter, req *http.Request) bool {
		if died.Load() {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
			return true
		}
		if _, err := blobDigest(req); err != nil {
			return false
		}
		out, err := http.NewRequestWithContext(req.Context(), req.Method, "http://"+r.DirectAddr+req.URL.RequestURI(), nil)
		if err != nil {
			return false
		}
		for _, h := range []string{"Range", "Accept"} {
			if v := req.Header.Get(h); v != "" {
				out.Header.Set(h, v)
			}
		}
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return true
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		if resp.ContentLength <= minSize || !died.CompareAndSwap(false, true) {
			w.WriteHeader(resp.StatusCode)
			_, _ = io.Copy(w, resp.Body)
			return true
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.CopyN(w, resp.Body, resp.ContentLength/2)
		_ = http.NewResponseController(w).Flush()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
		return true
	})
}
