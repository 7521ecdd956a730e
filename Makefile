# bootstore: build, test, demo, install.
SHELL := /bin/bash
GO        ?= go
GOFLAGS   := -buildvcs=false -tags=containers_image_openpgp,exclude_graphdriver_btrfs
export GOFLAGS

PREFIX    ?= /usr
DESTDIR   ?=
BIN       := bin/bootstore

.PHONY: all build deps test unit e2e demo bench lint install clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/bootstore

# Installs the Debian packages the tests, the demo and the benchmarks use
# (registry, podman, skopeo, runc, xfsprogs); a no-op when all are present.
deps:
	./contrib/install-deps.sh

lint:
	@out=$$(gofmt -l cmd pkg tests); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	$(GO) vet ./...

# Unit tests with the race detector, then the end-to-end suite (root, real
# registry, podman, skopeo, kernel overlay).
test: deps lint
	$(GO) test -race -count=1 ./pkg/... ./cmd/...
	$(GO) test -count=1 -timeout 40m -v ./tests/... 2>&1 | tee /tmp/bootstore-e2e.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test.go)' ; exit $${PIPESTATUS[0]}

unit:
	$(GO) test -race -count=1 ./pkg/... ./cmd/...

demo: deps build
	$(GO) run ./tests/demo

# Benchmarks are on demand, never in CI: they move hundreds of megabytes.
bench: deps build
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m -v ./tests/bench/

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/bootstore

clean:
	rm -rf bin
