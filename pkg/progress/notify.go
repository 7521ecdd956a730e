package progress

import (
	"fmt"
	"sync"

	"github.com/coreos/go-systemd/v22/daemon"
	"go.podman.io/image/v5/types"
)

// Notify reports progress to systemd as sd_notify STATUS= lines, so
// `systemctl status bootstore-fetch-apply-updates` says what the upgrade is
// doing. It is a no-op outside a unit (no NOTIFY_SOCKET).
type Notify struct {
	mu sync.Mutex
}

// NewNotify returns a Notify sink, or nil when not run by systemd with a
// notify socket.
func NewNotify() *Notify {
	if sent, err := daemon.SdNotify(false, "STATUS=bootstore starting"); err != nil || !sent {
		return nil
	}
	return &Notify{}
}

func (n *Notify) status(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	daemon.SdNotify(false, "STATUS="+fmt.Sprintf(format, args...))
}

// BeginImage reports the start and the end of an image pull; byte events
// are not forwarded (systemd shows one line).
func (n *Notify) BeginImage(ref string, layers []types.BlobInfo) (chan types.ProgressProperties, func(error)) {
	n.status("Pulling %s (%d layers)", ref, len(layers))
	return nil, func(err error) {
		if err != nil {
			n.status("Pulling %s failed: %v", ref, err)
			return
		}
		n.status("Pulled %s", ref)
	}
}

// Steps reports a discrete stage.
func (n *Notify) Steps(task, description, id string, done, total uint64, subtasks []SubTaskStep) {
	n.status("%s: %d/%d", description, done, total)
}
