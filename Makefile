# Gatehouse build. `make run` starts the daemon on its embedded default;
# `make test` builds and runs every test (unit, integration, sanitizers, fuzz smoke).

VERSION := $(shell sed -n '1s/.*(\(.*\)).*/\1/p' debian/changelog 2>/dev/null || echo 0.0.0)
BUILD   ?= build
CC      ?= cc
SAN     ?=
PKGS    := openssl jansson sqlite3 libpq libcurl liburing
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
           -DGH_VERSION='"$(VERSION)"' -Isrc -I$(BUILD) $(shell pkg-config --cflags $(PKGS))
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
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
MANDIR  ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
COMPDIR ?= $(PREFIX)/share/bash-completion/completions
DIST    := $(BUILD)/gatehouse.8 $(BUILD)/gatehouse-cli.1 $(BUILD)/gatehouse-cli.bash
UNIT    := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))

all: $(BUILD)/gatehouse $(BUILD)/gatehouse-cli

$(BUILD)/gatehouse: $(BUILD)/src/main.o $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/gatehouse-cli: $(CLI_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The version comes from debian/changelog; what prints it is rebuilt when it changes.
$(BUILD)/src/main.o $(BUILD)/src/cli/main.o $(BUILD)/src/cli/http.o: debian/changelog

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

# What `make install` adds to the binaries: man pages (scdoc) and bash completion
# generated from the daemon's own object schema; the unit gets SBINDIR at install.
dist: $(DIST)

$(BUILD)/%.8: man/%.8.scd
	@mkdir -p $(BUILD)
	scdoc < $< > $@

$(BUILD)/%.1: man/%.1.scd
	@mkdir -p $(BUILD)
	scdoc < $< > $@

$(BUILD)/gatehouse-cli.bash: $(BUILD)/gatehouse scripts/gen-completion.py
	$(BUILD)/gatehouse schema | python3 scripts/gen-completion.py > $@

install: all dist
	install -D -m 0755 $(BUILD)/gatehouse $(DESTDIR)$(SBINDIR)/gatehouse
	install -D -m 0755 $(BUILD)/gatehouse-cli $(DESTDIR)$(BINDIR)/gatehouse-cli
	install -D -m 0644 $(BUILD)/gatehouse.8 $(DESTDIR)$(MANDIR)/man8/gatehouse.8
	install -D -m 0644 $(BUILD)/gatehouse-cli.1 $(DESTDIR)$(MANDIR)/man1/gatehouse-cli.1
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|@SBINDIR@|$(SBINDIR)|g' dist/gatehouse.service.in > $(DESTDIR)$(UNITDIR)/gatehouse.service
	install -D -m 0644 $(BUILD)/gatehouse-cli.bash $(DESTDIR)$(COMPDIR)/gatehouse-cli

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/gatehouse $(DESTDIR)$(BINDIR)/gatehouse-cli \
	  $(DESTDIR)$(MANDIR)/man8/gatehouse.8 $(DESTDIR)$(MANDIR)/man1/gatehouse-cli.1 \
	  $(DESTDIR)$(UNITDIR)/gatehouse.service $(DESTDIR)$(COMPDIR)/gatehouse-cli

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

.PHONY: all dist install uninstall deps run unit test fuzz fuzz-campaign soak format clean
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
