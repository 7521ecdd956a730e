// Package statustest validates `bootstore status` documents in tests: a
// document must pass bootc's published BootcHost schema
// (bootc-host-v1.schema.json, kept in ../shared/schemas/ beside the
// repository) and bootstore's own rules for what the schema leaves open
// (apiVersion and kind, and the "bootstore" member of every boot entry).
package statustest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

// SchemaEnv, when set, names the schema file instead of the search.
const SchemaEnv = "BOOTSTORE_BOOTC_HOST_SCHEMA"

// schemaFile is the schema's name in the shared schemas directory.
const schemaFile = "bootc-host-v1.schema.json"

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
        "deployment": {"type": "string", "pattern": "^[^/]+\\.[0-9]+$"}
      }
    }
  }
}`

// SchemaPath returns the path of bootc-host-v1.schema.json: $SchemaEnv if
// set, else ../shared/schemas/ relative to the directory holding go.mod,
// found by walking up from the working directory. It fails the test when
// there is none.
func SchemaPath(t testing.TB) string {
	t.Helper()
	p, err := schemaPath()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func schemaPath() (string, error) {
	if p := os.Getenv(SchemaEnv); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, "..", "shared", "schemas", schemaFile)
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("bootc host schema: %w (set %s to its path)", err, SchemaEnv)
			}
			return filepath.Clean(p), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("bootc host schema: no go.mod above the working directory (set %s to its path)", SchemaEnv)
		}
		dir = parent
	}
}

// ValidateHost fails the test unless data, a JSON document, is a valid
// bootstore BootcHost document (see Validate).
func ValidateHost(t testing.TB, data []byte) {
	t.Helper()
	if err := Validate(SchemaPath(t), data); err != nil {
		t.Fatalf("%v\ndocument:\n%s", err, data)
	}
}

// Validate checks data, a JSON document, against the bootc host schema at
// schemaPath and against bootstore's rules: apiVersion
// org.containers.bootc/v1, kind BootcHost, every member bootc always
// writes present, and on every boot entry a "bootstore" member
// {storage?: unified|split, boundImages: [string], deployment: "<id>.<serial>"}.
// Date-time formats are asserted.
func Validate(schemaPath string, data []byte) error {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	bootc, err := c.Compile(schemaPath)
	if err != nil {
		return fmt.Errorf("compiling %s: %w", schemaPath, err)
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
		errs = append(errs, fmt.Errorf("against %s: %w", schemaPath, err))
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
