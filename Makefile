# The two commands a newcomer needs: `make run` and `make test`. Everything they need they
# install themselves (npm packages, Debian's Chromium for browser tests, Python lint tools).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
NPM ?= npm
# Without TLS: nothing to protect on loopback, and no OpenSSL at work in a libpq thread while a
# test process exits (OpenSSL 3 cleans up at exit under such threads; one test process crashed so).
export CHAT_TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
export CHAT_TEST_REDIS_URL ?= redis://127.0.0.1:6379

.PHONY: run test build web-install web-build lint rust-test web-test e2e deploy-check schemathesis audit fuzz bench bench-instructions bench-compare soak clean
FUZZ_SECONDS ?= 20

## run: build the web client and the release server, then serve both on http://127.0.0.1:8000
run: web-build
	$(CARGO) build --release -p server --bin chat-server
	$(CARGO) run --release -p server --bin chat-server

## test: every test and check of the repository
test: lint rust-test web-test e2e deploy-check schemathesis audit fuzz

build:
	$(CARGO) build --workspace --all-targets

web/node_modules/.package-lock.json: web/package-lock.json
	@node -e 'const [a, b] = process.versions.node.split(".").map(Number); if (!((a === 20 && b >= 19) || (a === 22 && b >= 12) || a > 22)) { console.error("Node.js " + process.versions.node + " is too old for the web client: install 20.19+ or 22.12+"); process.exit(1); }'
	cd web && $(NPM) ci --no-audit --no-fund
	touch $@

web-install: web/node_modules/.package-lock.json

web-build: web-install
	cd web && $(NPM) run build

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

rust-test:
	@if command -v cargo-nextest >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --all-features --no-fail-fast; \
	else \
		$(CARGO) test --workspace --all-features --no-fail-fast; \
	fi

web-test: web-install
	cd web && $(NPM) run lint && $(NPM) test

## e2e: browser tests in Debian's Chromium against the real chat-server on a fresh database
e2e: web-install
	bash web/scripts/ensure-chromium.sh
	$(CARGO) build -p server --bin chat-server
	cd web && CHAT_SERVER_BIN="$${CARGO_TARGET_DIR:-$(CURDIR)/target}/debug/chat-server" $(NPM) run e2e

deploy-check:
	bash scripts/check-deploy.sh

## schemathesis: property-based API tests generated from the server's own /openapi.json
schemathesis:
	$(CARGO) build -p server --bin chat-server
	CHAT_SERVER_BIN="$${CARGO_TARGET_DIR:-$(CURDIR)/target}/debug/chat-server" bash tests/schemathesis/run.sh

## audit: cargo deny (licenses, bans, sources, advisories) and npm audit of runtime dependencies
audit:
	bash scripts/check-supply-chain.sh

## fuzz: every cargo-fuzz target for FUZZ_SECONDS each
fuzz:
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

## soak: sustained mixed load on a release server (not part of test)
soak:
	bash tests/soak/run.sh

## bench: release binaries, fresh databases, the load generator; prints a table (not part of test)
bench:
	bash tests/bench/run.sh

## bench-instructions: instructions per request of each thread, counted by callgrind; BENCH_SCENARIO=pages
##   compares a page at 100,000 exchanges with one at 10 (not part of test)
bench-instructions:
	bash tests/bench/instructions.sh

## bench-compare: two chat-server builds loaded at the same moment, CPU per request and req/s ratios
bench-compare:
	bash tests/bench/compare.sh

clean:
	$(CARGO) clean
	rm -rf web/dist web/node_modules .tools
