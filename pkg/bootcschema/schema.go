// Package bootcschema carries bootc's published JSON schemas, embedded so
// that tests validate bootstore's `status` documents and `--progress-fd`
// streams against exactly what bootc publishes, from any checkout of the
// repository. README.md beside this file records where they come from and
// their licence.
package bootcschema

import _ "embed"

// HostV1 is bootc's BootcHost schema (`bootc status --format json`).
//
//go:embed bootc-host-v1.schema.json
var HostV1 []byte

// ProgressV0 is bootc's JSON Lines progress schema (`--progress-fd`).
//
//go:embed bootc-progress-v0.schema.json
var ProgressV0 []byte

// The URLs the schemas are compiled under: bootc's own paths, so a
// validation error names the document it comes from.
const (
	HostV1URL     = "https://github.com/bootc-dev/bootc/blob/main/docs/src/host-v1.schema.json"
	ProgressV0URL = "https://github.com/bootc-dev/bootc/blob/main/docs/src/progress-v0.schema.json"
)

// Digests of the copies as taken from bootc (see README.md): a change to
// a schema file is an update from bootc, made together with these.
const (
	HostV1SHA256     = "71e46c3ca6ed67db3e4eb32bc6f02bcfe603d2a8f2f4e7223a884025b7804bfd"
	ProgressV0SHA256 = "884dac0cdeff048f9951ab1b96c5a7d5000c0c1216a73235bd414d564ba49747"
)
