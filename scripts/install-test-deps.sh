#!/usr/bin/env bash
# Debian packages the tests use as real peers: Postfix (a real MTA, plus smtp-source and
# smtp-sink), Dovecot LMTP (a real final delivery agent), swaks (with Net::SSLeay for
# STARTTLS: a "recommends", which --no-install-recommends skips) and msmtp (real clients).
# Idempotent and quick when they are installed. Without root or
# apt-get it only says what is missing; the tests that need them skip themselves.
set -euo pipefail
PACKAGES=(postfix swaks libnet-ssleay-perl dovecot-lmtpd dovecot-imapd msmtp)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: missing ${missing[*]} (needs root and apt-get); those tests will skip" >&2
    exit 0
fi

echo "install-test-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Postfix must install unconfigured and stay stopped: tests run private instances of it.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
# Daemons must not start at install time (tests run private instances): policy-rc.d says no.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt_install() { apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
# A stale or empty package list fails the first try; refresh it once and retry.
apt_install || { apt-get update -qq && apt_install; }
