package bootcschema

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
)

// The embedded files are bootc's, unchanged: an accidental edit (or an
// update that forgot README.md and the recorded digests) fails here.
func TestSchemasAreBootcs(t *testing.T) {
	for name, c := range map[string]struct {
		data []byte
		sum  string
	}{
		"host-v1":     {HostV1, HostV1SHA256},
		"progress-v0": {ProgressV0, ProgressV0SHA256},
	} {
		got := sha256.Sum256(c.data)
		if hex.EncodeToString(got[:]) != c.sum {
			t.Errorf("%s: sha256 %x, recorded %s", name, got, c.sum)
		}
		var doc map[string]any
		if err := json.Unmarshal(c.data, &doc); err != nil {
			t.Errorf("%s: %v", name, err)
		} else if doc["$schema"] == nil {
			t.Errorf("%s: no $schema member", name)
		}
	}
}
