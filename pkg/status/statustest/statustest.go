// Package statustest validates `bootstore status` documents in tests: a
// document must pass bootc's published BootcHost schema
// (bootc-host-v1.schema.json, embedded by pkg/bootcschema) and bootstore's
// own rules for what the schema leaves open
// (apiVersion and kind, and the "bootstore" member of every boot entry).
package statustest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/bootstore/bootstore/pkg/bootcschema"
)

// extensionSchema is what bootstore adds to bootc's schema.
const extensionSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["apiVersion", "kind", "metadata", "spec", "status"],
  "properties": {
    "apiVersion": {"const": "org.containers.bootc/v1"},
    "kind": {"const": "BootcHost"},
    "status": {
      "type": "object",
      "required": ["staged", "booted", "rollback", "rollbackQueued", "type"],
      "properties": {
        "staged": {"$ref": "#/$defs/entryOrNull"},
        "booted": {"$ref": "#/$defs/entryOrNull"},
        "rollback": {"$ref": "#/$defs/entryOrNull"},
        "otherDeployments": {"type": "array", "items": {"$ref": "#/$defs/entry"}}
      }
    }
  },
  "$defs": {
    "entryOrNull": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/entry"}]},
    "entry": {
      "type": "object",
      "required": ["image", "ostree", "bootstore"],
      "properties": {"bootstore": {"$ref": "#/$defs/bootstore"}}
    },
    "bootstore": {
      "type": "object",
      "additionalProperties": false,
      "required": ["boundImages", "deployment"],
      "properties": {
        "storage": {"enum": ["unified", "split"]},
        "boundImages": {"type": "array", "items": {"type": "string"}},
        "deployment": {"type": "string", "pattern": "^[^/]+\\.[0-9]+$"},
        "composefs": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
        "composefsVerity": {"type": "boolean"}
      }
    }
  }
}`

// ValidateHost fails the test unless data, a JSON document, is a valid
// bootstore BootcHost document (see Validate).
func ValidateHost(t testing.TB, data []byte) {
	t.Helper()
	if err := Validate(data); err != nil {
		t.Fatalf("%v\ndocument:\n%s", err, data)
	}
}

// Validate checks data, a JSON document, against bootc's host schema
// (embedded by pkg/bootcschema) and against bootstore's rules: apiVersion
// org.containers.bootc/v1, kind BootcHost, every member bootc always
// writes present, and on every boot entry a "bootstore" member
// {storage?: unified|split, boundImages: [string], deployment: "<id>.<serial>",
// composefs?: "sha256:<hex>", composefsVerity?: bool}.
// Date-time formats are asserted.
func Validate(data []byte) error {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	hostDoc, err := jsonschema.UnmarshalJSON(bytes.NewReader(bootcschema.HostV1))
	if err != nil {
		return fmt.Errorf("bootc's host schema: %w", err)
	}
	if err := c.AddResource(bootcschema.HostV1URL, hostDoc); err != nil {
		return err
	}
	bootc, err := c.Compile(bootcschema.HostV1URL)
	if err != nil {
		return fmt.Errorf("compiling bootc's host schema: %w", err)
	}
	ext, err := jsonschema.UnmarshalJSON(strings.NewReader(extensionSchema))
	if err != nil {
		return fmt.Errorf("bootstore extension schema: %w", err)
	}
	const extURL = "urn:bootstore:status-extension.schema.json"
	if err := c.AddResource(extURL, ext); err != nil {
		return err
	}
	bootstore, err := c.Compile(extURL)
	if err != nil {
		return fmt.Errorf("bootstore extension schema: %w", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("status document is not JSON: %w", err)
	}
	var errs []error
	if err := bootc.Validate(inst); err != nil {
		errs = append(errs, fmt.Errorf("against bootc's host schema: %w", err))
	}
	if err := bootstore.Validate(inst); err != nil {
		errs = append(errs, fmt.Errorf("against bootstore's extension: %w", err))
	}
	return errors.Join(errs...)
}

// YAMLToJSON converts a YAML document (as `status --format yaml` writes
// it) to JSON for ValidateHost, failing the test if it does not parse.
func YAMLToJSON(t testing.TB, data []byte) []byte {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatalf("parsing YAML: %v\n%s", err, data)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("converting YAML to JSON: %v\n%s", err, data)
	}
	return out
}
