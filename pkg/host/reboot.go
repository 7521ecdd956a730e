package host

import (
	"context"
	"fmt"

	"github.com/coreos/go-systemd/v22/login1"
)

// Rebooter reboots the machine into the new default boot entry. The CLI uses
// Logind; tests replace it.
type Rebooter interface {
	Reboot(ctx context.Context) error
}

// Logind reboots through systemd-logind over D-Bus, as `systemctl reboot`
// does; the staged deployment is finalized by bootstore-finalize-staged.service
// on the way down.
type Logind struct{}

// Reboot asks logind to reboot now.
func (Logind) Reboot(ctx context.Context) error {
	conn, err := login1.New()
	if err != nil {
		return fmt.Errorf("connecting to systemd-logind: %w", err)
	}
	defer conn.Close()
	conn.Reboot(false)
	return nil
}
