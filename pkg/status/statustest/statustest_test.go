package statustest

import (
	"strings"
	"testing"
)

const entry = `{
  "image": {"image": {"image": "quay.io/example/os:1", "transport": "registry", "signature": "insecure"},
            "version": null, "timestamp": "2024-01-01T00:00:00Z", "imageDigest": "sha256:00", "architecture": "amd64"},
  "cachedUpdate": null, "incompatible": false, "pinned": false, "downloadOnly": false, "store": null,
  "ostree": {"stateroot": "default", "checksum": "abc", "deploySerial": 0},
  "bootstore": {"storage": "unified", "boundImages": [], "deployment": "abc.0"}
}`

func doc(booted string) string {
	return `{"apiVersion": "org.containers.bootc/v1", "kind": "BootcHost", "metadata": {"name": "host"},
  "spec": {"image": null, "bootOrder": "default"},
  "status": {"staged": null, "booted": ` + booted + `, "rollback": null, "rollbackQueued": false, "type": "bootcHost", "usrOverlay": null, "readOnly": false}}`
}

func TestValidateAccepts(t *testing.T) {
	ValidateHost(t, []byte(doc(entry)))
	ValidateHost(t, []byte(doc("null")))
}

// The validator must reject what bootc's schema rejects and what
// bootstore's extension rules reject; otherwise tests that use it prove
// nothing.
func TestValidateRejects(t *testing.T) {
	for name, data := range map[string]string{
		"not JSON":               "apiVersion: x",
		"bootc: bad transport":   doc(strings.Replace(entry, `"transport": "registry"`, `"transport": 7`, 1)),
		"bootc: bad signature":   doc(strings.Replace(entry, `"signature": "insecure"`, `"signature": "none"`, 1)),
		"bootc: negative serial": doc(strings.Replace(entry, `"deploySerial": 0`, `"deploySerial": -1`, 1)),
		"bootc: bad timestamp":   doc(strings.Replace(entry, `"2024-01-01T00:00:00Z"`, `"yesterday"`, 1)),
		"bootc: no pinned":       doc(strings.Replace(entry, `"pinned": false,`, ``, 1)),
		"bootc: bad store":       doc(strings.Replace(entry, `"store": null`, `"store": "unified"`, 1)),
		"bootc: bad type":        strings.Replace(doc(entry), `"bootcHost"`, `"bootstore"`, 1),
		"wrong apiVersion":       strings.Replace(doc(entry), `org.containers.bootc/v1`, `org.containers.bootc/v1alpha1`, 1),
		"wrong kind":             strings.Replace(doc(entry), `"BootcHost"`, `"Host"`, 1),
		"no booted member":       strings.Replace(doc("null"), `"booted": null,`, ``, 1),
		"no bootstore member":    doc(entry[:strings.Index(entry, ",\n  \"bootstore\"")] + "}"),
		"bad storage":            doc(strings.Replace(entry, `"storage": "unified"`, `"storage": "shared"`, 1)),
		"bad deployment":         doc(strings.Replace(entry, `"deployment": "abc.0"`, `"deployment": "abc"`, 1)),
		"unknown bootstore key":  doc(strings.Replace(entry, `"boundImages": []`, `"boundImages": [], "x": 1`, 1)),
	} {
		if err := Validate([]byte(data)); err == nil {
			t.Errorf("%s: accepted:\n%s", name, data)
		}
	}
}
