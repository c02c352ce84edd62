# swift-kerberos: build, test and try it against a throwaway MIT realm.
SHELL := /bin/bash
PREFIX ?= /usr/local
DESTDIR ?=
PAM_DIR := .build/pam
PAM_MODULE_DIR ?= /lib/$(shell gcc -print-multiarch)/security
REALM_DIR ?= $(CURDIR)/.realm
SWIFT ?= swift
SWIFT_FLAGS ?=
APT_PACKAGES := libkrb5-dev libssl-dev krb5-kdc krb5-admin-server krb5-pkinit krb5-otp krb5-user krb5-kpropd \
	freeradius freeradius-utils softhsm2 opensc sasl2-bin pamtester openssl libpam-modules libpam-runtime procps faketime valgrind curl python3-pexpect gcc libp11-kit-dev strace time \
	openssh-server openssh-client python3-paramiko debootstrap iproute2 util-linux \
	libpam0g-dev libjson-c-dev libpam-wrapper libnss-wrapper python3-pypamtest \
	nginx caddy chromium apache2 libapache2-mod-authnz-external wrk python3-websocket

.PHONY: release-static all deps build release install docs docs-coverage test ad-up ad-down test-docker test-unit demo bench bench-micro fuzz soak valgrind asan tsan kdc-up kdc-down error-names clean pam pam-fuzz

all: build

## deps: install the Debian packages the build and the test realm need (as root), or print the command.
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "deps: all Debian packages present"; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "deps: installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "deps: missing packages; run: sudo apt-get install -y $$missing" >&2; exit 1; fi

## build: debug build of the library, krb5-verifyd and krb5-login.
build: deps
	$(SWIFT) build $(SWIFT_FLAGS)

release: deps
	$(SWIFT) build -c release $(SWIFT_FLAGS)

## release-static: krb5-login with the Swift runtime and FoundationEssentials linked in (-static-stdlib), in
## .build-static/release; it starts faster, which is what a pam_exec helper pays per login (docs/benchmarks.md).
release-static: deps
	$(SWIFT) build -c release --product krb5-login --static-swift-stdlib --scratch-path .build-static $(SWIFT_FLAGS)

## install: the binaries, man pages and the systemd unit under $(DESTDIR)$(PREFIX), and pam_krb5verify.so in
## the system's PAM module directory ($(DESTDIR)$(PAM_MODULE_DIR)).
install: release $(PAM_DIR)/pam_krb5verify.so
	install -D -m 0644 $(PAM_DIR)/pam_krb5verify.so $(DESTDIR)$(PAM_MODULE_DIR)/pam_krb5verify.so
	bin=$$($(SWIFT) build -c release --show-bin-path); \
	install -D -m 0755 $$bin/krb5-verifyd $(DESTDIR)$(PREFIX)/sbin/krb5-verifyd; \
	install -D -m 0755 $$bin/krb5-login $(DESTDIR)$(PREFIX)/bin/krb5-login
	install -D -m 0644 docs/man/krb5-verifyd.8 $(DESTDIR)$(PREFIX)/share/man/man8/krb5-verifyd.8
	install -D -m 0644 docs/man/krb5-login.1 $(DESTDIR)$(PREFIX)/share/man/man1/krb5-login.1
	install -D -m 0644 docs/man/pam_krb5verify.8 $(DESTDIR)$(PREFIX)/share/man/man8/pam_krb5verify.8
	install -D -m 0644 Docker/systemd/krb5-verifyd.service $(DESTDIR)$(PREFIX)/lib/systemd/system/krb5-verifyd.service

## pam: pam_krb5verify.so (C over libpam, json-c and libkrb5; docs/pam.md) in .build/pam/, an AddressSanitizer
## build of it in .build/pam/asan/ (the PAM suites load that one), the reply parser's fuzz target, and the
## test-only preload that lets sshd's preauth child run under valgrind (pam/sshd_sandbox_off.c; PAMSSHDTests).
PAM_SOURCES := pam/pam_krb5verify.c pam/krb5verify_wire.c
PAM_HEADERS := pam/krb5verify_wire.h pam/pam_krb5verify.map
PAM_CFLAGS := -std=gnu11 -g -Wall -Wextra -Werror -fPIC -fstack-protector-strong -Wl,-z,relro,-z,now -Wl,--version-script=pam/pam_krb5verify.map
PAM_LIBS := -lpam -ljson-c -lkrb5
CLANG ?= clang
pam: $(PAM_DIR)/pam_krb5verify.so $(PAM_DIR)/asan/pam_krb5verify.so $(PAM_DIR)/fuzz-reply $(PAM_DIR)/sshd-sandbox-off.so

$(PAM_DIR)/pam_krb5verify.so: $(PAM_SOURCES) $(PAM_HEADERS)
	@mkdir -p $(@D)
	gcc -shared -O2 -D_FORTIFY_SOURCE=2 $(PAM_CFLAGS) -o $@ $(PAM_SOURCES) $(PAM_LIBS)

$(PAM_DIR)/asan/pam_krb5verify.so: $(PAM_SOURCES) $(PAM_HEADERS)
	@mkdir -p $(@D)
	gcc -shared -O1 -fsanitize=address,undefined -fno-omit-frame-pointer $(PAM_CFLAGS) -o $@ $(PAM_SOURCES) $(PAM_LIBS)

$(PAM_DIR)/sshd-sandbox-off.so: pam/sshd_sandbox_off.c
	@mkdir -p $(@D)
	gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o $@ $< -ldl

$(PAM_DIR)/fuzz-reply: pam/fuzz_reply.c pam/krb5verify_wire.c pam/krb5verify_wire.h
	@mkdir -p $(@D)
	$(CLANG) -fuse-ld=lld -g -O1 -fsanitize=fuzzer,address,undefined -o $@ pam/fuzz_reply.c pam/krb5verify_wire.c -ljson-c

## pam-fuzz: the module's reply parser under libFuzzer for PAM_FUZZ_SECONDS (default 60), seeds in Tests/Fuzz/pam-replies.
PAM_FUZZ_SECONDS ?= 60
pam-fuzz: $(PAM_DIR)/fuzz-reply
	@mkdir -p $(PAM_DIR)/fuzz-corpus
	$(PAM_DIR)/fuzz-reply -max_total_time=$(PAM_FUZZ_SECONDS) -max_len=4096 $(PAM_DIR)/fuzz-corpus Tests/Fuzz/pam-replies

## docs: the DocC catalog of the Kerberos library, as a static site in .build/docs (after docs-coverage).
docs: docs-coverage
	$(SWIFT) package --allow-writing-to-directory .build/docs generate-documentation --target Kerberos --target KerberosEngine --enable-experimental-combined-documentation \
		--disable-indexing --transform-for-static-hosting --output-path .build/docs

## docs-coverage: fails, listing each one, when a public symbol of KerberosSecrets, Kerberos, LoginProtocol, VerifyDaemon, LoginHelper or TOTP has no doc comment.
docs-coverage:
	SWIFT=$(SWIFT) scripts/doc-coverage.sh

## kdc-up / kdc-down: a throwaway realm in $(REALM_DIR) (real krb5kdc, kadmind, FreeRADIUS, SoftHSM on 127.0.0.1).
kdc-up: deps
	@if [ -f $(REALM_DIR)/realm.env ]; then echo "kdc-up: realm already in $(REALM_DIR)"; else Docker/kdc/realm.sh up $(REALM_DIR); fi

kdc-down:
	@if [ -d $(REALM_DIR) ]; then Docker/kdc/realm.sh down $(REALM_DIR); rm -rf $(REALM_DIR); fi

## test: everything, against fresh throwaway realms that are stopped afterwards: the MIT realm, a Samba AD DC
## and a Heimdal KDC (these two run from a cached Debian root, Docker/ad/kdc-root.sh, built once while the
## tests compile; they need root: a chroot and the address 127.0.0.2). Examples/WebLogin is built too, for ExampleAppTests.
test: deps
	@rm -rf $(REALM_DIR).test $(REALM_DIR).ad $(REALM_DIR).heimdal; \
	Docker/ad/ad-realm.sh root >$(REALM_DIR).root.log 2>&1 & root=$$!; \
	$(SWIFT) build --build-tests $(SWIFT_FLAGS) || { wait $$root; exit 1; }; \
	$(SWIFT) build --package-path Examples/WebLogin $(SWIFT_FLAGS) || { wait $$root; exit 1; }; \
	wait $$root || { cat $(REALM_DIR).root.log >&2; exit 1; }; cat $(REALM_DIR).root.log; \
	down() { Docker/kdc/realm.sh down $(REALM_DIR).test; Docker/ad/ad-realm.sh down $(REALM_DIR).ad; \
		Docker/ad/heimdal-realm.sh down $(REALM_DIR).heimdal; rm -rf $(REALM_DIR).test $(REALM_DIR).ad $(REALM_DIR).heimdal; }; \
	started=$$SECONDS; \
	Docker/kdc/realm.sh up $(REALM_DIR).test && Docker/ad/ad-realm.sh up $(REALM_DIR).ad \
		&& Docker/ad/heimdal-realm.sh up $(REALM_DIR).heimdal || { down; exit 1; }; \
	echo "test: realms up in $$((SECONDS - started)) s"; \
	KRB5_TEST_REALM=$(REALM_DIR).test KRB5_TEST_AD=$(REALM_DIR).ad KRB5_TEST_HEIMDAL=$(REALM_DIR).heimdal \
		$(SWIFT) test --skip-build $(SWIFT_FLAGS); status=$$?; \
	down; exit $$status

## ad-up / ad-down: the Samba AD DC and the Heimdal KDC of the tests in $(REALM_DIR).ad and $(REALM_DIR).heimdal
## (as root); the suites use them with KRB5_TEST_AD=$(REALM_DIR).ad KRB5_TEST_HEIMDAL=$(REALM_DIR).heimdal.
ad-up:
	Docker/ad/ad-realm.sh up $(REALM_DIR).ad
	Docker/ad/heimdal-realm.sh up $(REALM_DIR).heimdal

ad-down:
	-Docker/ad/ad-realm.sh down $(REALM_DIR).ad
	-Docker/ad/heimdal-realm.sh down $(REALM_DIR).heimdal
	rm -rf $(REALM_DIR).ad $(REALM_DIR).heimdal

## test-docker: the integration suites against the realm running in the Docker/kdc image (podman).
test-docker: deps
	@command -v podman >/dev/null || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null; }
	$(SWIFT) build --build-tests $(SWIFT_FLAGS)
	scripts/test-docker.sh

## test-unit: the tests that need no KDC.
test-unit:
	$(SWIFT) test $(SWIFT_FLAGS) --filter 'KerberosSecretsTests|KerberosErrorTests|PrincipalTests|BindingUnitTests|TerminalTests|KDCMessageTests|DNSMessageTests|KerberosExecutorTests|TOTPTests|LoginProtocolTests|LoginServiceTests|ThrottleTests'

## demo: build, start a throwaway realm, log a user in through the library with verification.
demo: build
	@rm -rf $(REALM_DIR).demo; Docker/kdc/realm.sh up $(REALM_DIR).demo >/dev/null; \
	scripts/demo.sh $(REALM_DIR).demo; status=$$?; \
	Docker/kdc/realm.sh down $(REALM_DIR).demo; rm -rf $(REALM_DIR).demo; exit $$status

## bench: library vs C, krb5-verifyd vs saslauthd, krb5-login vs kinit, in one run; writes docs/benchmarks.md; then bench-micro.
bench: release release-static
	scripts/bench.py
	$(MAKE) bench-micro

## bench-micro: microbenchmarks of the hot paths that need no KDC (Benchmarks/, a separate package over
## ordo-one/benchmark); writes docs/microbenchmarks.md. KRB5_TEST_REALM=DIR adds one verified login against that realm.
bench-micro: deps
	SWIFT=$(SWIFT) scripts/bench-micro.py

## fuzz: libFuzzer on every parser of network and client bytes (docs/fuzzing.md): krb5-fuzz built for libFuzzer
## with AddressSanitizer in .build-fuzz, each target run FUZZ_SECONDS (default 60) from Tests/Fuzz/corpus/TARGET.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= dns frames der kpasswd json saslauthd toml
fuzz: deps
	SWIFT=$(SWIFT) SWIFT_FLAGS="$(SWIFT_FLAGS)" scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

## soak: 100,000 mixed logins through the release krb5-verifyd at concurrency 16 (SOAK_COUNT to change).
SOAK_COUNT ?= 100000
soak: release
	scripts/soak.sh $(SOAK_COUNT)

## valgrind: 1,000 logins with every outcome through LoginService under valgrind, and password changes that
## kadmind refuses (the kpasswd exchange, nothing changed); fails on definite leaks.
## (The binary is run without its DWARF, which Debian 12's valgrind 3.19 cannot read for BoringSSL's objects;
## leak stacks still name the functions.)
valgrind: build
	@rm -rf $(REALM_DIR).vg; Docker/kdc/realm.sh up $(REALM_DIR).vg >/dev/null; \
	objcopy --strip-debug $$(swift build --show-bin-path)/krb5-bench $(REALM_DIR).vg/krb5-bench; \
	Docker/kdc/realm.sh kadmin $(REALM_DIR).vg addpol -minlength 12 vgpolicy >/dev/null; \
	Docker/kdc/realm.sh kadmin $(REALM_DIR).vg addprinc -pw Expired-Passw0rd +requires_preauth +needchange -policy vgpolicy vgexpired >/dev/null; \
	valgrind --vgdb=no --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1 --num-callers=30 --suppressions=scripts/valgrind.supp \
		$(REALM_DIR).vg/krb5-bench leakcheck --realm-env $(REALM_DIR).vg/realm.env --count 1000 \
		--refused-change vgexpired:Expired-Passw0rd; status=$$?; \
	Docker/kdc/realm.sh down $(REALM_DIR).vg; rm -rf $(REALM_DIR).vg; exit $$status

## asan / tsan: the library, daemon and helper suites under AddressSanitizer / ThreadSanitizer (leaks: make valgrind), one
## suite at a time: sanitized code runs several times slower, and fifty suites at once on two cores then miss the
## deadlines that the tests about deadlines assert. krb5-login's clock-skew test is left to make test: it runs the
## helper under libfaketime, whose start-up (dlsym, then malloc) deadlocked in ThreadSanitizer's allocator. The
## memory budget of 1,000 parked conversations is make test's too: in a sanitized krb5-verifyd it would measure the
## sanitizer's shadow memory and quarantine, not the daemon.
asan tsan: deps
	@rm -rf $(REALM_DIR).$@; Docker/kdc/realm.sh up $(REALM_DIR).$@ >/dev/null; \
	KRB5_TEST_REALM=$(REALM_DIR).$@ ASAN_OPTIONS=detect_leaks=0:suppressions=$(CURDIR)/scripts/asan.supp $(SWIFT) test --scratch-path .build-$@ --sanitize=$(if $(filter asan,$@),address,thread) --no-parallel \
		--filter 'KerberosSecretsTests|KerberosTests|KerberosEngineTests|LoginProtocolTests|LoginServiceTests|VerifyDaemonTests|LoginHelperTests' \
		--skip 'LoginHelperTests/clockSkew|ConversationListenerTests/parkedConversationsMemory'; status=$$?; \
	Docker/kdc/realm.sh down $(REALM_DIR).$@; rm -rf $(REALM_DIR).$@; exit $$status

error-names:
	scripts/gen-error-names.sh

clean:
	rm -rf .build .build-fuzz $(REALM_DIR) $(REALM_DIR).test $(REALM_DIR).demo $(REALM_DIR).ad $(REALM_DIR).heimdal $(REALM_DIR).root.log
