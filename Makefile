# Herald's two everyday commands are `make run` and `make test`. Everything
# they need (Go modules, the npm packages for the client tests, Debian's
# chromium for the browser test) is fetched by the targets below.

GO      ?= go
BIN     := bin/herald
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
JS_DEPS := tests/js/node_modules/.package-lock.json
CLIENT_JS_DEPS := clients/js/node_modules/.package-lock.json

# Packages with concurrency run under the race detector: every package
# whose tests start goroutines (configs' start none).
RACE_PKGS := ./gateway/ ./bus/ ./client/ ./api/ ./node/ ./presence/ ./cluster/ ./bench/ ./protocol/ \
             ./examples/nats-publisher/ ./internal/testkit/ ./app/ ./lifecycle/

# tests/e2e too: its Herald processes are built without -race, but the Go
# client (client.Session) runs in the test binary through real failovers.
# Its tests whose only clients are node or browser processes skip themselves
# under -race (tests/e2e skipUnderRace): the plain run covers them.
RACE_PKGS += ./tests/e2e/
RACE_PKGS += ./debugtap/ ./console/ ./admin/ ./webhook/ ./probe/ ./cmd/herald/

# The plain run takes every other package, and of the two packages whose
# tests skip some cases under -race, tests/e2e (skipUnderRace) and bus
# (TestClusterNodeDiskFull, a race inside nats-server's JetStream restart),
# just those tests (scripts/race-skipped.sh names them): the race run runs
# every other test already, and repeating them plain would only add
# minutes (make test stays well under 15 on 2 cores).
PLAIN_TWICE := ./bus/ ./tests/e2e/

# Test binaries run at once in the race run. The long packages (node, bus,
# tests/e2e) mostly wait on clusters electing and on timers: node's binary
# used 17 % of a core over its 4 minutes on the 2-core box. Four at a time
# took the race run from about 7 to 4.3 minutes there, each package's own
# time unchanged.
TEST_P ?= 4
PLAIN_PKGS = $(shell $(GO) list ./... | grep -vxF $(foreach p,$(RACE_PKGS),-e herald/$(patsubst ./%/,%,$(p))))

.PHONY: build run test vet race fuzz bench js-deps chromium clean cluster regions test-regions

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/herald

## run: a single node on 127.0.0.1:6001 with the dev app (app-id / app-key / app-secret), data in ./data
run: build
	./$(BIN) serve

## cluster: 3 nodes on loopback (configs/cluster/node1..3.yaml: client ports 6001-6003, data in ./data/node1..3) in the foreground; Ctrl-C stops all three
cluster: build
	bash scripts/cluster.sh

## regions: two one-node regions on loopback joined by NATS gateways (configs/regions/a.yaml, b.yaml: client ports 6001-6002, data in ./data/region-a, region-b) in the foreground; Ctrl-C stops both
regions: build
	bash scripts/regions.sh

## test-regions: the six-process test of two three-node regions (tests/e2e TestRegions2x3, about 30 s; not part of make test)
test-regions:
	HERALD_E2E_REGIONS=1 $(GO) test -count=1 -run TestRegions2x3 ./tests/e2e/

## test: vet, the whole suite (including pusher-js, the pusher SDK and the resume clients end to end, one in headless chromium): every package with goroutines under the race detector, the rest (and tests/e2e, bus) plain
test: js-deps chromium
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 10m $(PLAIN_PKGS)
	skipped=$$(bash scripts/race-skipped.sh $(PLAIN_TWICE)) && $(GO) test -count=1 -timeout 10m -run "$$skipped" $(PLAIN_TWICE)
	$(GO) test -race -count=1 -timeout 10m -p $(TEST_P) $(RACE_PKGS)

js-deps: $(JS_DEPS) $(CLIENT_JS_DEPS)

$(JS_DEPS): tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error

$(CLIENT_JS_DEPS): clients/js/package.json clients/js/package-lock.json
	cd clients/js && npm ci --no-audit --no-fund --loglevel=error

## chromium: Debian's chromium for the browser resume test (apt-get install when /usr/bin/chromium is missing)
chromium:
	bash scripts/setup-chromium.sh

## fuzz: run every fuzz target of every package for FUZZTIME each (default 10s)
# The packages are those with a `func Fuzz` in a test file; `go test -list`
# names their targets.
FUZZTIME ?= 10s
FUZZ_PKGS = $(sort $(foreach f,$(shell grep -rl --include='*_test.go' --exclude-dir=node_modules '^func Fuzz' .),$(dir $(f))))
fuzz:
	@for pkg in $(FUZZ_PKGS); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test $$pkg -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) || exit 1; \
	  done; \
	done

## bench: the fixed benchmark set behind docs/benchmarks.md (about 10 minutes)
bench: build
	bash scripts/bench.sh

clean:
	rm -rf bin out
