package harness

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
)

// FailPath makes the proxy answer every request whose URL path contains substring with
// status and a registry-style JSON error body (e.g. FailPath("/v2/app1/", 404) refuses one
// repository). It replaces any installed fault.
func (r *Registry) FailPath(substring string, status int) {
	r.FailPathTimes(substring, status, 0)
}

// FailPathTimes is FailPath for only the first times matching requests (times <= 0: all);
// later matching requests are proxied normally, which lets a test exercise retries.
func (r *Registry) FailPathTimes(substring string, status, times int) {
	var n atomic.Int64
	r.SetFault(func(w http.ResponseWriter, req *http.Request) bool {
		if !strings.Contains(req.URL.Path, substring) {
			return false
		}
		if times > 0 && n.Add(1) > int64(times) {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"errors":[{"code":"UNKNOWN","message":"harness: injected %d for %s"}]}`+"\n",
			status, req.URL.Path)
		return true
	})
}

// StallBlob makes the first blob GET whose response body is larger than minSize bytes
// stall: the proxy sends the status, headers and the first half of the body, flushes,
// sends on notify (waiting until someone receives or the client goes away), then holds the
// connection open until the client disconnects (e.g. the test SIGKILLs it). Every other
// request, and every request after that one, is served normally. Ranged GETs count too,
// by the size of their response. It replaces any installed fault.
func (r *Registry) StallBlob(minSize int64, notify chan<- struct{}) {
	var fired atomic.Bool
	r.SetFault(func(w http.ResponseWriter, req *http.Request) bool {
		if fired.Load() {
			return false
		}
		if _, err := blobDigest(req); err != nil {
			return false
		}
		out, err := http.NewRequestWithContext(req.Context(), req.Method,
			"http://"+r.DirectAddr+req.URL.RequestURI(), nil)
		if err != nil {
			return false
		}
		for _, h := range []string{"Range", "Accept", "Authorization", "If-Range"} {
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
		ok := resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent
		if !ok || resp.ContentLength <= minSize || !fired.CompareAndSwap(false, true) {
			w.WriteHeader(resp.StatusCode)
			_, _ = io.Copy(w, resp.Body)
			return true
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.CopyN(w, resp.Body, resp.ContentLength/2)
		_ = http.NewResponseController(w).Flush()
		select {
		case notify <- struct{}{}:
		case <-req.Context().Done():
			return true
		}
		<-req.Context().Done()
		return true
	})
}
