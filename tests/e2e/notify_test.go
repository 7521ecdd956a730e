package e2e

import (
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/bootstore/bootstore/tests/harness"
)

// Run by a systemd unit (NOTIFY_SOCKET set), upgrade reports what it does
// with sd_notify STATUS= lines.
func TestUpgradeReportsStatusToSystemd(t *testing.T) {
	h := newHost(t)
	reg := harness.StartRegistry(t)
	reg.Push(t, osVersion(t, "1", nil, harness.Layer{etcFile("x", "1\n")}), "os:latest", "gzip")
	h.ok(h.installArgs(reg.Ref("os:latest"), "--experimental-unified-storage")...)
	reg.Push(t, osVersion(t, "2", nil, harness.Layer{etcFile("x", "2\n")}), "os:latest", "gzip")

	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var mu sync.Mutex
	var msgs []string
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			msgs = append(msgs, string(buf[:n]))
			mu.Unlock()
		}
	}()
	h.env = append(h.env, "NOTIFY_SOCKET="+sock)
	h.ok("upgrade", "--quiet", "--tls-verify=false", "--signature-policy", h.policy)
	conn.Close()
	mu.Lock()
	defer mu.Unlock()
	all := strings.Join(msgs, "\n")
	if !strings.Contains(all, "STATUS=Pulling docker://"+reg.Ref("os:latest")) {
		t.Errorf("no STATUS=Pulling notification; got %q", msgs)
	}
}
