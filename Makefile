# Thin wrapper over CMake: `make demo` and `make test` work on a fresh Debian 12 machine.
BUILD ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
# Tests at once in the suite and the ASan run: twice the cores, since most of the suite's wall
# time is Kafka tests waiting on librdkafka's mock (its 3 s group joins, session timeouts), not
# CPU. On 2 cores: the suite 489 s at -j2, 214 s at -j4; ASan 208 s, 111 s. TSan keeps JOBS.
TEST_JOBS ?= $(shell echo $$(( $(JOBS) * 2 )))
PREFIX ?= /usr/local

.PHONY: all deps build demo demo-kafka test test-asan tsan lint bench install format readme clean

all: build

deps:
	@sh tools/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=$(PREFIX)
	cmake --build $(BUILD) -j$(JOBS)

demo: build
	$(BUILD)/examples/order_saga/order_saga

# The same story with the services as processes of their own, over a dev Kafka broker.
demo-kafka: build
	sh tools/demo-kafka.sh $(BUILD)

# The lint checks, the whole suite, then the unit and conformance tests again under
# ASan+UBSan, then the TSan set under ThreadSanitizer.
test: build
	sh tools/lint.sh $(BUILD)
	ctest --test-dir $(BUILD) --output-on-failure -j$(TEST_JOBS)
	$(MAKE) --no-print-directory test-asan
	$(MAKE) --no-print-directory tsan

test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DESKIT_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	ctest --test-dir $(ASAN_BUILD) --output-on-failure -j$(TEST_JOBS) -L 'unit|conformance'

# The TSan set (ctest label tsan: the tests that run threads of ours, tests/CMakeLists.txt says
# which and why) under ThreadSanitizer; only its executables and what they run are built. A
# report, of a test or of a process it spawns, fails tsan.no_reports. Suppressions, for
# librdkafka only, are in tests/tsan.supp.
tsan: deps
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DESKIT_TSAN=ON
	cmake --build $(TSAN_BUILD) -j$(JOBS) --target tsan_set
	ctest --test-dir $(TSAN_BUILD) --output-on-failure -j$(JOBS) -L tsan

# clang-format, clang-tidy (.clang-tidy) and cppcheck (tools/cppcheck.supp) over our sources.
lint: build
	sh tools/lint.sh $(BUILD)

bench: build
	$(BUILD)/tools/bench/eskit-bench

install: build
	cmake --install $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

# The README's code blocks marked <!-- include: PATH --> rewritten from those files.
readme:
	sh tools/readme-sync

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD)
