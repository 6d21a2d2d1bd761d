# qm — `make demo` runs the main job, `make test` runs every test. Both install QEMU if missing.
CARGO ?= cargo

.PHONY: all deps build demo test test-rust lint clean

all: build

deps:
	@.ci/ensure-deps

build:
	$(CARGO) build --release

demo: deps
	$(CARGO) run --release --example demo

test: deps lint test-rust

test-rust:
	$(CARGO) test --all-targets
	$(CARGO) test --doc

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
