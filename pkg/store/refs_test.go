package store

import (
	"errors"
	"testing"
)

func TestParseReference(t *testing.T) {
	cases := []struct {
		in, transport, want string
	}{
		{"quay.io/org/os:1", "docker", "//quay.io/org/os:1"},
		{"localhost:5000/os", "docker", "//localhost:5000/os:latest"},
		{"fedora", "docker", "//fedora:latest"},
		{"docker://quay.io/org/os@sha256:" + hex64, "docker", "//quay.io/org/os@sha256:" + hex64},
		{"oci:/var/tmp/layout:v1", "oci", "/var/tmp/layout:v1"},
		{"dir:/var/tmp/img", "dir", "/var/tmp/img"},
	}
	for _, c := range cases {
		ref, err := ParseReference(c.in)
		if err != nil {
			t.Errorf("ParseReference(%q): %v", c.in, err)
			continue
		}
		if ref.Transport().Name() != c.transport || ref.StringWithinTransport() != c.want {
			t.Errorf("ParseReference(%q) = %s:%s, want %s:%s", c.in, ref.Transport().Name(), ref.StringWithinTransport(), c.transport, c.want)
		}
	}
	for _, bad := range []string{"", "UPPER/case", "docker://", "oci:", "dir:", "quay.io/a b"} {
		if _, err := ParseReference(bad); !errors.Is(err, ErrBadReference) {
			t.Errorf("ParseReference(%q) = %v, want ErrBadReference", bad, err)
		}
	}
}

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestStoreName(t *testing.T) {
	cases := map[string]string{
		"quay.io/org/os:1":           "quay.io/org/os:1",
		"oci:/var/tmp/My Layout:v2":  "localhost/my-layout:v2",
		"oci:/var/tmp/layout":        "localhost/layout:latest",
		"oci-archive:/tmp/os.tar":    "localhost/os.tar:latest",
		"dir:/var/tmp/../img":        "localhost/img:latest",
		"oci:/var/tmp/layout:v1.2-3": "localhost/layout:v1.2-3",
	}
	for in, want := range cases {
		ref, err := ParseReference(in)
		if err != nil {
			t.Fatalf("ParseReference(%q): %v", in, err)
		}
		named, err := storeName(ref)
		if err != nil || named.String() != want {
			t.Errorf("storeName(%q) = %v, %v; want %s", in, named, err, want)
		}
	}
}

func TestIsBootable(t *testing.T) {
	for labels, want := range map[string]bool{
		"containers.bootc=1": true, "ostree.bootable=1": true, "ostree.bootable=true": true,
		"containers.bootc=0": false, "": false, "org.opencontainers.image.title=os": false,
	} {
		m := map[string]string{}
		if k, v, ok := cut(labels); ok {
			m[k] = v
		}
		if got := isBootable(m); got != want {
			t.Errorf("isBootable(%q) = %v, want %v", labels, got, want)
		}
	}
}

func cut(s string) (string, string, bool) {
	for i := range s {
		if s[i] == '=' {
			return s[:i], s[i+1:], true
		}
	}
	return "", "", false
}
