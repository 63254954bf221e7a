# Gatehouse build. `make run` starts the daemon on its embedded default;
# `make test` builds and runs every test (unit, integration, sanitizers, fuzz smoke).

BUILD   ?= build
CC      ?= cc
SAN     ?=
PKGS    := openssl jansson sqlite3 libpq libcurl
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
           -Isrc -I$(BUILD) $(shell pkg-config --cflags $(PKGS))
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -lhttp_parser -lpthread
ifneq ($(SAN),)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# Every layer's folder under src/ is part of the daemon, except the client's.
LIB_SRC := $(filter-out src/cli/%,$(wildcard src/*/*.c))
CLI_SRC := $(wildcard src/cli/*.c)
WEB     := $(sort $(wildcard web/*))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o) $(BUILD)/web_assets.o
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o) $(BUILD)/src/core/err.o
UNIT    := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))

all: $(BUILD)/gatehouse $(BUILD)/gatehouse-cli

$(BUILD)/gatehouse: $(BUILD)/src/main.o $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/gatehouse-cli: $(CLI_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/embed: scripts/embed.c
	@mkdir -p $(BUILD)
	$(CC) -O1 -o $@ $<

$(BUILD)/web_assets.c: $(BUILD)/embed $(WEB)
	$(BUILD)/embed $(WEB) > $@

$(BUILD)/web_assets.o: $(BUILD)/web_assets.c
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

deps:
	@scripts/deps.sh

run: deps all
	$(BUILD)/gatehouse serve

unit: $(UNIT)
	@scripts/run-unit.sh $(UNIT)

test: 
	@scripts/test.sh

fuzz:
	@scripts/fuzz.sh

# Long runs, outside CI: every fuzz target for FUZZ_SECONDS (default 1800) merged into the
# kept corpus, and mixed traffic against one daemon for SOAK_SECONDS (default 600).
fuzz-campaign:
	@scripts/fuzz-campaign.sh

SOAK_SECONDS ?= 600
soak: all
	@/usr/bin/python3 tests/soak/soak.py --gatehouse $(BUILD)/gatehouse --seconds $(SOAK_SECONDS)

format:
	clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'tests/unit/*.c' 'fuzz/*.c')

clean:
	rm -rf build build-*

.PHONY: all deps run unit test fuzz fuzz-campaign soak format clean
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
