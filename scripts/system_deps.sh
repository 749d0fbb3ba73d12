#!/usr/bin/env bash
# System packages for tests/test_real_window.py: an X server (Xvfb), the libraries Qt's xcb platform
# plugin loads, and ImageMagick's `import` to capture the X screen; and for tests/test_conformance.py
# dicom3tools (dciodvfy, dcentvfy: the standard's IOD checks); for the PACS tests a real Orthanc with its
# DICOMweb plugin, and DCMTK (getscu/storescu: the DIMSE benchmark's baseline). Debian/Ubuntu (apt) only.
#
# Idempotent and fast when everything is present (one dpkg-query, no apt-get update). Otherwise runs
# `apt-get update` once and installs only what is missing, as root or through sudo.
# Exit 0 when everything is installed; 1 with a message saying what to install when it cannot be.
set -euo pipefail

# One entry per need; "a|b" = either name (the first one apt knows is installed).
# The libraries are those libqxcb.so / libQt6XcbQpa.so.6 (PySide6 6.6-6.11) link against (ldd);
# libxcb-xinerama0 is no longer among them.
PACKAGES=(
    xvfb xauth                      # the X server (xauth for xvfb-run users)
    imagemagick                     # `import -window root`: the test's capture of the X screen
    dicom3tools                     # dciodvfy / dcentvfy: every DICOM object we write is checked
    orthanc orthanc-dicomweb        # a real PACS the remote tests start on 127.0.0.1 (tests/orthanc_server.py)
    dcmtk                           # getscu / storescu: what the C-GET benchmark compares against
    libxcb1 libx11-6 libx11-xcb1 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
    libxcb-randr0 libxcb-render0 libxcb-render-util0 libxcb-shape0 libxcb-shm0 libxcb-sync1
    libxcb-util1 libxcb-xfixes0 libxcb-xkb1 libxkbcommon0 libxkbcommon-x11-0
    libegl1 libgl1 libfontconfig1 libfreetype6 libdbus-1-3
    "libglib2.0-0t64|libglib2.0-0"  # renamed in the 64-bit time_t transition (Debian 13, Ubuntu 24.04)
)
COMMANDS=(Xvfb import dciodvfy dcentvfy Orthanc getscu)  # what a system without dpkg must already have

say() { echo "system_deps: $*"; }

if ! command -v dpkg-query >/dev/null 2>&1; then
    missing_cmds=()
    for c in "${COMMANDS[@]}"; do command -v "$c" >/dev/null 2>&1 || missing_cmds+=("$c"); done
    if [ ${#missing_cmds[@]} -eq 0 ]; then
        say "not a Debian-based system; found ${COMMANDS[*]}, assuming Qt's xcb libraries are installed too"
        exit 0
    fi
    say "not a Debian-based system (no dpkg/apt): install by hand Xvfb, ImageMagick (import), dicom3tools" \
        "(dciodvfy, dcentvfy), Orthanc with its DICOMweb plugin, DCMTK and the" \
        "xcb libraries Qt needs (xcb-cursor, xcb-icccm, xcb-image, xcb-keysyms, xcb-render-util," \
        "xkbcommon-x11, EGL, GL, fontconfig, dbus); missing: ${missing_cmds[*]}" >&2
    exit 1
fi

# Installed package names, one dpkg-query for all of them.
names=()
for entry in "${PACKAGES[@]}"; do IFS='|' read -r -a alts <<<"$entry"; names+=("${alts[@]}"); done
# (dpkg-query exits 1 when some name is unknown, e.g. the alternative name of another release.)
installed=" $( { dpkg-query -W -f='${Package}:${db:Status-Status}\n' "${names[@]}" 2>/dev/null || true; } \
              | sed -n 's/:installed$//p' | tr '\n' ' ') "

missing=()
for entry in "${PACKAGES[@]}"; do
    IFS='|' read -r -a alts <<<"$entry"
    have=0
    for a in "${alts[@]}"; do [[ "$installed" == *" $a "* ]] && have=1 && break; done
    [ $have -eq 1 ] || missing+=("$entry")
done

if [ ${#missing[@]} -eq 0 ]; then
    say "all ${#PACKAGES[@]} system packages present"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    say "missing ${missing[*]//|/ or } and not root, no sudo: install them as root with" \
        "apt-get install --no-install-recommends" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    say "missing ${missing[*]//|/ or } but apt-get is not available; install them with your package manager" >&2
    exit 1
fi

say "installing ${missing[*]}"
"${SUDO[@]}" apt-get update -qq
to_install=()
for entry in "${missing[@]}"; do
    IFS='|' read -r -a alts <<<"$entry"
    pick="${alts[-1]}"
    for a in "${alts[@]}"; do
        if apt-cache policy "$a" 2>/dev/null | grep -q 'Candidate: [^(]'; then pick="$a"; break; fi
    done
    to_install+=("$pick")
done
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${to_install[@]}"
say "installed ${to_install[*]}"
